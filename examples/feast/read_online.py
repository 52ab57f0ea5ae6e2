"""Read the latest features of both markets of examples/features/binance-futures-features.yaml from the online store.

Run from this directory after `feast apply` and `feast materialize`: python read_online.py
"""

from feast import FeatureStore

store = FeatureStore(repo_path=".")
view = store.get_feature_view("futures_features")
response = store.get_online_features(
    features=[f"{view.name}:{f.name}" for f in view.features],
    entity_rows=[
        {"exchange": "BINANCE_FUTURES", "symbol": "SUSHI-USDT-PERP"},
        {"exchange": "BINANCE_FUTURES", "symbol": "AKRO-USDT-PERP"},
    ],
)
values = response.to_dict()
for name in ["exchange", "symbol", *(f.name for f in view.features)]:
    print(f"{name:12} {values[name]}")
