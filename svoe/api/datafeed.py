"""The DataFeed resource as pydantic models: the one schema shared by the CLI, the feed pod,
the operator and the generated CRD (crds/datafeed.yaml).

Field names are camelCase on the wire (Kubernetes style) and snake_case in Python.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from svoe.api.channels import Channel
from svoe.api.contract import LIVE_PORT
from svoe.api.exchanges import exchange_channels

API_GROUP = "svoe.io"
API_VERSION = "v1alpha1"
KIND = "DataFeed"
PLURAL = "datafeeds"

# cryptofeed's normalized symbols: BTC-USDT, BTC-USD-PERP, BTC-USD-21Z31, options BTC-8000-21U24-put.
SYMBOL_PATTERN = r"^[A-Z0-9]{1,24}(-[A-Z0-9.]{1,24}){1,4}(-(call|put))?$"
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
# Kubernetes object names (RFC 1123 subdomain, kept short because pod names derive from it).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$"


def known_exchange(v: str) -> str:
    """`v` if cryptofeed 3.0.1 has the exchange; else the error lists the ones it has."""
    known = exchange_channels()
    if v not in known:
        raise ValueError(f"unknown exchange {v!r}; allowed: {', '.join(known)}")
    return v


def unique_symbols(v: list[str]) -> list[str]:
    dupes = sorted({s for s in v if v.count(s) > 1})
    if dupes:
        raise ValueError(f"duplicate symbols {dupes}: list each symbol once")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class BookOptions(_Model):
    """Order book options."""

    depth: Annotated[int, Field(ge=0, le=5000, description="Levels kept per side; 0 keeps the full book.")] = 0
    snapshot_interval: Annotated[
        int,
        Field(
            ge=0,
            description=(
                "Store a full book snapshot every N updates per symbol, besides the exchange's own "
                "snapshots; 0 stores only deltas and the exchange's snapshots."
            ),
        ),
    ] = 0


class StorageOptions(_Model):
    """Where and how the aggregator writes Parquet blocks."""

    lake: Annotated[
        str,
        Field(min_length=1, description="Lake URL: a local directory or s3://bucket/prefix."),
    ] = "./lake"
    glue_database: Annotated[
        str | None,
        Field(pattern=r"^[a-z0-9_]{1,255}$", description="Glue database for s3:// lakes (one table per channel)."),
    ] = None
    flush_interval_seconds: Annotated[
        float, Field(gt=0, le=3600, description="Flush a stream's buffered events at least this often.")
    ] = 30.0
    flush_max_rows: Annotated[
        int, Field(ge=1, le=10_000_000, description="Flush a stream once this many events are buffered.")
    ] = 50_000
    compression: Annotated[
        Literal["zstd", "snappy", "gzip", "none"], Field(description="Parquet compression codec.")
    ] = "zstd"

    @field_validator("lake")
    @classmethod
    def _lake_scheme(cls, v: str) -> str:
        if "://" in v and not v.startswith(("s3://", "file://")):
            raise ValueError(f"unsupported lake URL {v!r}: use a local path or s3://bucket/prefix")
        if v.startswith("s3://") and len(v) <= len("s3://"):
            raise ValueError("s3:// lake needs a bucket: s3://bucket/prefix")
        return v

    @property
    def is_s3(self) -> bool:
        return self.lake.startswith("s3://")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


class LiveOptions(_Model):
    """Live stream of normalized events over ZMQ PUB."""

    enabled: bool = True
    port: Annotated[int, Field(ge=1, le=65535, description="TCP port of the ZMQ PUB socket.")] = LIVE_PORT
    bind: Annotated[
        str | None,
        Field(
            description="Address the PUB socket binds to. Default: 0.0.0.0 in a feed pod, so that other pods "
            "subscribe through the shard's Service; 127.0.0.1 under `svoe run`. A loopback address keeps the "
            "stream inside the pod (the Service then exposes no live port)."
        ),
    ] = None

    def bind_address(self, in_pod: bool) -> str:
        return self.bind or ("0.0.0.0" if in_pod else "127.0.0.1")

    def served_to_other_pods(self) -> bool:
        return self.enabled and self.bind_address(in_pod=True) not in LOOPBACK


class EndpointOverrides(_Model):
    """Base-URL overrides for testnets, mirrors and the replay exchange. Paths are kept."""

    websocket: Annotated[
        str | None, Field(pattern=r"^wss://", description="Replaces scheme, host and port of every websocket endpoint.")
    ] = None
    rest: Annotated[
        str | None, Field(pattern=r"^https?://", description="Replaces scheme, host and port of every REST endpoint.")
    ] = None
    ca_file: Annotated[str | None, Field(description="PEM bundle trusted for TLS to the overridden endpoints.")] = None


class ShardingOptions(_Model):
    max_symbols_per_pod: Annotated[
        int, Field(ge=1, le=1000, description="The operator splits the symbols into shards of at most this many.")
    ] = 10


LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"


class PlacementOptions(_Model):
    """Where the feed pods may run, besides the operator's own feed node role."""

    node_selector: Annotated[
        dict[str, str],
        Field(description="Node labels every feed pod requires, e.g. topology.kubernetes.io/zone: eu-west-1a."),
    ] = {}

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not re.match(LABEL_KEY_PATTERN, k)]
        if bad:
            raise ValueError(f"not a label key: {bad}; use e.g. kubernetes.io/arch or node-pool")
        return v


class BufferOptions(_Model):
    """The Redis stream buffer between collector and aggregator."""

    max_backlog: Annotated[
        int,
        Field(
            ge=1,
            description=(
                "Unflushed events per stream above which the pod reports unready and the backlog "
                "metric alerts. Events are never dropped."
            ),
        ),
    ] = 1_000_000


class DataFeedSpec(_Model):
    exchange: Annotated[str, Field(description="A cryptofeed 3.0.1 exchange id, e.g. BINANCE.")]
    channels: Annotated[list[Channel], Field(min_length=1, description="Channels to collect.")]
    symbols: Annotated[
        list[Annotated[str, Field(pattern=SYMBOL_PATTERN)]],
        Field(min_length=1, description="Symbols in cryptofeed's normalized form: BTC-USDT, BTC-USD-PERP."),
    ]
    replicas: Annotated[
        int,
        Field(
            ge=1,
            le=5,
            description=(
                "Pods per shard, each collecting every symbol of the shard under its own writer identity, "
                "on different nodes where the cluster has them. The lake's exactly-once view merges them."
            ),
        ),
    ] = 1
    placement: PlacementOptions = PlacementOptions()
    book: BookOptions = BookOptions()
    storage: StorageOptions = StorageOptions()
    live: LiveOptions = LiveOptions()
    endpoints: EndpointOverrides = EndpointOverrides()
    sharding: ShardingOptions = ShardingOptions()
    buffer: BufferOptions = BufferOptions()
    candle_interval: Annotated[str, Field(pattern=r"^[0-9]+[smhdwM]$", description="Candle interval, e.g. 1m.")] = "1m"
    candle_closed_only: Annotated[
        bool,
        Field(description="Store only closed candles. Off by default: every update is stored, with `closed` set."),
    ] = False

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, v: str) -> str:
        return known_exchange(v)

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols_normalized(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        if not v:
            raise ValueError("no symbols: list at least one symbol, e.g. BTC-USDT")
        for s in v:
            if not isinstance(s, str) or not _SYMBOL_RE.match(s):
                raise ValueError(
                    f"malformed symbol {s!r}: use cryptofeed's normalized form, upper case with '-' "
                    "separators, e.g. BTC-USDT or BTC-USD-PERP"
                )
        return unique_symbols(v)

    @model_validator(mode="after")
    def _channels_supported(self) -> DataFeedSpec:
        offered = exchange_channels()[self.exchange]
        missing = [c for c in self.channels if c not in offered]
        if missing:
            raise ValueError(f"channels: {self.exchange} does not offer {missing}; allowed: {', '.join(offered)}")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels: list each channel once")
        return self


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    namespace: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Resource(BaseModel):
    """What every svoe manifest has: apiVersion, kind and metadata (each kind adds its spec)."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    api_version: Annotated[Literal["svoe.io/v1alpha1"], Field(alias="apiVersion")]
    kind: str
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name


class DataFeed(Resource):
    """A whole DataFeed manifest (apiVersion, kind, metadata, spec)."""

    kind: Literal["DataFeed"]
    spec: DataFeedSpec

    def streams(self) -> list[tuple[str, str]]:
        """Every (channel, symbol) pair this feed writes, in a stable order."""
        return [(c, s) for c in self.spec.channels for s in self.spec.symbols]
