"""Feast definitions for the features of examples/features/binance-futures-features.yaml.

The source is the Parquet file that `svoe features offline` writes: `timestamp` (timestamp[ns, tz=UTC], one
row per tick), `exchange`, `symbol`, then one nullable float64 column per feature. Its path is
$SVOE_FEATURES_PARQUET, read when `feast apply` runs; a relative path is taken from this directory.

An entity is a market, (exchange, symbol). A Feast Entity takes a single join key, so the view names two
entities, one per column; the pair is its key, and the Parquet file needs no extra column.
"""

import os
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, String

exchange = Entity(
    name="exchange", join_keys=["exchange"], value_type=ValueType.STRING, description="e.g. BINANCE_FUTURES"
)
symbol = Entity(name="symbol", join_keys=["symbol"], value_type=ValueType.STRING, description="e.g. SUSHI-USDT-PERP")

offline_features = FileSource(
    name="futures_features_offline",
    path=os.environ.get("SVOE_FEATURES_PARQUET", "data/features.parquet"),
    timestamp_field="timestamp",
)

futures_features = FeatureView(
    name="futures_features",
    entities=[exchange, symbol],
    # A feature older than a minute is not a value at a 1 s tick (point-in-time joins look back this far).
    ttl=timedelta(minutes=1),
    schema=[
        Field(name="exchange", dtype=String),
        Field(name="symbol", dtype=String),
        Field(name="mid", dtype=Float64),
        Field(name="spread", dtype=Float64),
        Field(name="micro", dtype=Float64),
        Field(name="imbalance_5", dtype=Float64),
        Field(name="rv_10s", dtype=Float64),
        Field(name="vwap_10s", dtype=Float64),
        Field(name="volume_10s", dtype=Float64),
        Field(name="flow_10s", dtype=Float64),
        Field(name="bar_open", dtype=Float64),
        Field(name="bar_high", dtype=Float64),
        Field(name="bar_low", dtype=Float64),
        Field(name="bar_close", dtype=Float64),
        Field(name="bar_volume", dtype=Float64),
    ],
    online=True,
    source=offline_features,
)
