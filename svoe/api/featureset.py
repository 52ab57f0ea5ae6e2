"""The FeatureSet resource: features computed from a DataFeed's books and trades at a fixed
interval, live over ZMQ and offline from the lake, by one implementation (svoe/features/).

The feature kinds are declared here as data (FEATURE_KINDS): the channel each reads, the
parameters it takes and the output columns it gives. svoe/features/kinds.py holds one compute
function per kind; the CRD, the CLI's validation and the docs come from this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from svoe.api.contract import FEATURES_LIVE_PORT
from svoe.api.datafeed import (
    NAME_PATTERN,
    SYMBOL_PATTERN,
    LiveOptions,
    Resource,
    _Model,
    known_exchange,
    unique_symbols,
)
from svoe.api.durations import DURATION_PATTERN, parse_duration

KIND = "FeatureSet"
PLURAL = "featuresets"
FEATURE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


@dataclass(frozen=True)
class FeatureKind:
    """What one kind of feature reads and gives."""

    channel: Literal["l2_book", "trades"]
    doc: str
    params: tuple[str, ...] = ()  # of "depth", "window"
    required: tuple[str, ...] = ()
    # Output columns are `{name}` for a single value, else `{name}_{part}` per part.
    parts: tuple[str, ...] = ()


FEATURE_KINDS: dict[str, FeatureKind] = {
    "mid_price": FeatureKind("l2_book", "(best bid + best ask) / 2"),
    "spread": FeatureKind("l2_book", "best ask - best bid"),
    "microprice": FeatureKind(
        "l2_book", "(best bid x best ask size + best ask x best bid size) / (best bid size + best ask size)"
    ),
    "book_imbalance": FeatureKind(
        "l2_book",
        "(bid size - ask size) / (bid size + ask size), summed over the top `depth` levels of each side",
        params=("depth",),
        required=("depth",),
    ),
    "realized_volatility": FeatureKind(
        "l2_book",
        "sqrt of the sum of squared log returns of the mid price between consecutive ticks within `window`",
        params=("window",),
        required=("window",),
    ),
    "vwap": FeatureKind(
        "trades", "sum(price x amount) / sum(amount) of the trades within `window`", ("window",), ("window",)
    ),
    "volume": FeatureKind("trades", "sum(amount) of the trades within `window`", ("window",), ("window",)),
    "trade_imbalance": FeatureKind(
        "trades", "(buy amount - sell amount) / (buy + sell amount) within `window`", ("window",), ("window",)
    ),
    "ohlcv": FeatureKind(
        "trades",
        "first, highest, lowest and last trade price and the amount within `window` (default: the interval)",
        params=("window",),
        parts=("open", "high", "low", "close", "volume"),
    ),
}
FeatureKindName = Literal[
    "mid_price",
    "spread",
    "microprice",
    "book_imbalance",
    "realized_volatility",
    "vwap",
    "volume",
    "trade_imbalance",
    "ohlcv",
]
assert set(FeatureKindName.__args__) == set(FEATURE_KINDS)  # type: ignore[attr-defined]


class Feature(_Model):
    """One feature: a name (its output column, or column prefix) and a kind with its parameters."""

    name: Annotated[str, Field(pattern=FEATURE_NAME_PATTERN, description="Output column name, e.g. mid or vwap_10s.")]
    kind: Annotated[FeatureKindName, Field(description="What to compute: " + ", ".join(FEATURE_KINDS) + ".")]
    depth: Annotated[int | None, Field(ge=1, le=1000, description="Levels per side (book_imbalance).")] = None
    window: Annotated[
        str | None,
        Field(
            pattern=DURATION_PATTERN,
            description="Look-back, a whole number of intervals, e.g. 10s (vwap, volume, trade_imbalance, "
            "realized_volatility, ohlcv).",
        ),
    ] = None

    @model_validator(mode="after")
    def _params_of_kind(self) -> Feature:
        spec = FEATURE_KINDS[self.kind]
        for param in ("depth", "window"):
            given = getattr(self, param) is not None
            if given and param not in spec.params:
                takes = f"takes only {', '.join(spec.params)}" if spec.params else "takes no parameters"
                raise ValueError(f"{param}: {self.kind} has no {param} ({self.kind} {takes}); remove it")
            if not given and param in spec.required:
                example = "5" if param == "depth" else "10s"
                raise ValueError(f"{param}: {self.kind} needs a {param}, e.g. {param}: {example}")
        return self

    def columns(self) -> list[str]:
        parts = FEATURE_KINDS[self.kind].parts
        return [f"{self.name}_{p}" for p in parts] if parts else [self.name]


class FeatureLiveOptions(LiveOptions):
    """The featurizer's own ZMQ PUB socket, publishing `FEATURESET.feature.SYMBOL`."""

    port: Annotated[int, Field(ge=1, le=65535, description="TCP port of the features' ZMQ PUB socket.")] = (
        FEATURES_LIVE_PORT
    )


class FeatureSetSpec(_Model):
    exchange: Annotated[str, Field(description="The source DataFeed's exchange, e.g. BINANCE.")]
    symbols: Annotated[
        list[Annotated[str, Field(pattern=SYMBOL_PATTERN)]],
        Field(min_length=1, description="Symbols to compute features for; each must be in the source DataFeed."),
    ]
    source: Annotated[
        str,
        Field(
            min_length=1,
            description="The DataFeed: its name in the same namespace (in a cluster), or the path of its manifest "
            "(locally; relative to this file).",
        ),
    ]
    interval: Annotated[str, Field(pattern=DURATION_PATTERN, description="Sampling step, e.g. 1s or 100ms.")] = "1s"
    lateness: Annotated[
        str,
        Field(
            pattern=DURATION_PATTERN,
            description="Live only: a tick closes once every stream of the source has sent an event received "
            "after it, or has been silent this long (wall clock): how long a quiet stream can hold the features.",
        ),
    ] = "1s"
    stale_after_seconds: Annotated[
        float, Field(gt=0, description="Report the source stale after this long without an event.")
    ] = 30.0
    features: Annotated[list[Feature], Field(min_length=1, description="The features, one or more columns each.")]
    live: FeatureLiveOptions = FeatureLiveOptions()

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, v: str) -> str:
        return known_exchange(v)

    @field_validator("source")
    @classmethod
    def _source_form(cls, v: str) -> str:
        if not is_manifest_path(v) and not re.match(NAME_PATTERN, v):
            raise ValueError(
                f"{v!r} is neither a DataFeed name (lower case, e.g. binance-demo) nor a manifest path (*.yaml)"
            )
        return v

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, v: list[str]) -> list[str]:
        return unique_symbols(v)

    @model_validator(mode="after")
    def _windows_and_names(self) -> FeatureSetSpec:
        interval = parse_duration(self.interval)
        parse_duration(self.lateness)
        seen: dict[str, int] = {}
        for i, f in enumerate(self.features):
            for col in f.columns():
                if col in seen or col in ("timestamp", "exchange", "symbol"):
                    other = f"features[{seen[col]}]" if col in seen else "a fixed column"
                    raise ValueError(f"features[{i}].name: column {col!r} is also {other}; give it another name")
                seen[col] = i
            if f.window is not None:
                w = parse_duration(f.window)
                if w < interval:
                    raise ValueError(
                        f"features[{i}].window: {f.window} is shorter than the interval {self.interval}; "
                        f"use at least {self.interval}"
                    )
                if (w / interval).denominator != 1:
                    raise ValueError(
                        f"features[{i}].window: {f.window} is not a whole number of intervals of {self.interval}"
                    )
        return self

    def interval_seconds(self) -> Fraction:
        return parse_duration(self.interval)

    def window_ticks(self, feature: Feature) -> int:
        """How many ticks a feature's window spans (1 when it has none)."""
        if feature.window is None:
            return 1
        return int(parse_duration(feature.window) / parse_duration(self.interval))

    def channels(self) -> list[str]:
        """The source channels the features read, in a stable order."""
        used = {FEATURE_KINDS[f.kind].channel for f in self.features}
        return [c for c in ("l2_book", "trades") if c in used]

    def book_depth(self) -> int:
        """Levels per side the book features need (0 when none reads the book)."""
        depths = [f.depth or 1 for f in self.features if FEATURE_KINDS[f.kind].channel == "l2_book"]
        return max(depths, default=0)

    def columns(self) -> list[str]:
        return [c for f in self.features for c in f.columns()]


def is_manifest_path(source: str) -> bool:
    return source.endswith((".yaml", ".yml")) or "/" in source


class FeatureSet(Resource):
    """A whole FeatureSet manifest (apiVersion, kind, metadata, spec)."""

    kind: Literal["FeatureSet"]
    spec: FeatureSetSpec


def check_against_source(spec: FeatureSetSpec, source_exchange: str, source_channels: list[str],
                         source_symbols: list[str], source_name: str) -> list[str]:  # fmt: skip
    """What makes `spec` unusable with its source DataFeed, as `field: message` lines (empty: fine)."""
    problems: list[str] = []
    if spec.exchange != source_exchange:
        problems.append(f"exchange: {spec.exchange} but the source DataFeed {source_name} collects {source_exchange}")
    missing = [s for s in spec.symbols if s not in source_symbols]
    if missing:
        problems.append(
            f"symbols: {', '.join(missing)} not in the source DataFeed {source_name} "
            f"(it collects {', '.join(source_symbols)})"
        )
    for ch in spec.channels():
        if ch not in source_channels:
            kinds = sorted({f.kind for f in spec.features if FEATURE_KINDS[f.kind].channel == ch})
            problems.append(
                f"features: {', '.join(kinds)} read {ch}, which the source DataFeed {source_name} does not collect "
                f"(add {ch} to its channels)"
            )
    return problems


def describe_kinds() -> dict[str, Any]:
    """The kinds table as plain data (for `--help` and the docs)."""
    return {k: {"reads": v.channel, "params": list(v.params), "doc": v.doc} for k, v in FEATURE_KINDS.items()}
