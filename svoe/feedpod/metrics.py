"""The feed pod's Prometheus metrics (names in docs/contracts.md).

Collector and aggregator are separate processes; with PROMETHEUS_MULTIPROC_DIR set (the pod and
`svoe run` set it) prometheus-client keeps each process's values in mmap files and `registry()`
merges them, so one /metrics endpoint shows the whole pod.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _mp

_LAT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

EVENTS = Counter("svoe_events", "Events received from cryptofeed", ["exchange", "channel", "symbol"])
CALLBACK_TO_REDIS = Histogram(
    "svoe_callback_to_redis_seconds",
    "Time from a cryptofeed callback to its event being acknowledged by Redis",
    ["exchange", "channel"],
    buckets=_LAT_BUCKETS,
)
REDIS_ERRORS = Counter("svoe_redis_errors", "Failed Redis operations (retried)", ["component", "op"])
STREAM_BACKLOG = Gauge(
    "svoe_stream_backlog",
    "Events in the Redis stream not yet flushed to the lake",
    ["exchange", "channel", "symbol"],
    multiprocess_mode="mostrecent",
)
FLUSH_DURATION = Histogram(
    "svoe_flush_duration_seconds",
    "Duration of one Parquet block write",
    ["exchange", "channel"],
    buckets=_FLUSH_BUCKETS,
)
FLUSH_ROWS = Counter("svoe_flush_rows", "Rows written to the lake", ["exchange", "channel"])
FLUSH_BYTES = Counter("svoe_flush_bytes", "Parquet bytes written to the lake", ["exchange", "channel"])
FLUSH_ERRORS = Counter("svoe_flush_errors", "Failed block writes (retried with backoff)", ["exchange", "channel"])
LAST_EVENT = Gauge(
    "svoe_last_event_timestamp_seconds",
    "Receipt time of the last event per symbol (age = time() - value)",
    ["exchange", "channel", "symbol"],
    multiprocess_mode="max",
)
SEQUENCE_GAPS = Counter("svoe_sequence_gaps", "Sequence gaps cryptofeed detected", ["exchange", "symbol"])
BOOK_RESYNCS = Counter("svoe_book_resyncs", "Book snapshots after the first one (resyncs)", ["exchange", "symbol"])
MALFORMED = Counter("svoe_malformed_messages", "Exchange messages that failed to parse and were skipped", ["exchange"])
UNSUBSCRIBED = Counter(
    "svoe_unsubscribed_events", "Events of symbols or channels the feed did not ask for (skipped)", ["exchange"]
)
FEED_CONNECTED = Gauge(
    "svoe_feed_connected", "1 while the feed has an open exchange connection", ["exchange"], multiprocess_mode="max"
)
REDIS_USED_MEMORY = Gauge("svoe_redis_used_memory_bytes", "Redis used_memory", multiprocess_mode="mostrecent")
REDIS_MAXMEMORY = Gauge("svoe_redis_maxmemory_bytes", "Redis maxmemory (0 = unlimited)", multiprocess_mode="mostrecent")
LIVE_PUBLISHED = Counter("svoe_live_published", "Events published on the ZMQ live stream", ["exchange", "channel"])


def init_series(exchange: str, streams: list[tuple[str, str]], component: str) -> None:
    """Create every labelled series at zero, so rates and alerts see a 0 rather than no data."""
    symbols = sorted({s for _, s in streams})
    for channel, symbol in streams:
        if component == "collector":
            EVENTS.labels(exchange, channel, symbol)
        else:
            STREAM_BACKLOG.labels(exchange, channel, symbol).set(0)
    for channel in sorted({c for c, _ in streams}):
        if component == "aggregator":
            FLUSH_ROWS.labels(exchange, channel)
            FLUSH_BYTES.labels(exchange, channel)
            FLUSH_ERRORS.labels(exchange, channel)
            LIVE_PUBLISHED.labels(exchange, channel)
    if component == "collector":
        for symbol in symbols:
            SEQUENCE_GAPS.labels(exchange, symbol)
            BOOK_RESYNCS.labels(exchange, symbol)
        MALFORMED.labels(exchange)
        UNSUBSCRIBED.labels(exchange)
        FEED_CONNECTED.labels(exchange).set(0)
        for op in ("xadd", "xinfo"):
            REDIS_ERRORS.labels("collector", op)
    else:
        for op in ("connect", "read", "xack", "drain"):
            REDIS_ERRORS.labels("aggregator", op)


def registry() -> CollectorRegistry | None:
    """The registry to expose: merged across processes in multiprocess mode, else the default."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        reg = CollectorRegistry()
        _mp.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
        return reg
    return None


def exposition() -> bytes:
    from prometheus_client import REGISTRY

    return generate_latest(registry() or REGISTRY)


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
