"""The contract between the operator, the feed pod's containers, the CLI and the local runner.

The operator renders pods whose containers run `svoe collector`, `svoe aggregator`, `redis-server`
and `svoe features live`; the CLI parses those command lines; `svoe run` starts the same
processes on a laptop; the operator reads the pods' `/stats` back. Each side must agree on the
ports, the paths inside the pod and the Redis names, so every one of them is decided here and
only here: the others import it (docs/contracts.md describes the same contract for people).

This module imports nothing of svoe, so any layer (api, operator, feedpod, cli, lake, bench)
can depend on it.
"""

from __future__ import annotations

# ---- ports --------------------------------------------------------------------------------------
# The collector's HTTP port serves the pod's /metrics (prometheus multiprocess) and /stats, so it
# is the port the Service and the PodMonitor name `metrics`.
COLLECTOR_PORT = 8080
AGGREGATOR_PORT = 8081
# The featurizer's in a pod (its Service port `metrics`) and under `svoe features live` on a
# laptop, where the `svoe run` it reads from (or starts, with --replay) holds COLLECTOR_PORT.
FEATURIZER_PORT = 8080
FEATURIZER_LOCAL_PORT = 8090
# Defaults of spec.live.port of a DataFeed and of a FeatureSet; distinct, because
# `svoe features live --replay` binds both on one machine.
LIVE_PORT = 5555
FEATURES_LIVE_PORT = 5556
# In a pod the kubelet probes the pod IP, so the health endpoints bind every interface.
HEALTH_HOST = "0.0.0.0"

# ---- HTTP paths of the health server ------------------------------------------------------------
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
METRICS_PATH = "/metrics"
STATS_PATH = "/stats"

# ---- paths inside a pod -------------------------------------------------------------------------
CONFIG_DIR = "/etc/svoe"  # the shard's ConfigMap
MANIFEST_FILE = "datafeed.yaml"
MANIFEST_PATH = f"{CONFIG_DIR}/{MANIFEST_FILE}"
REDIS_CONF_FILE = "redis.conf"
REDIS_CONF_PATH = f"{CONFIG_DIR}/{REDIS_CONF_FILE}"
FEATURESET_FILE = "featureset.yaml"  # the featurizer's ConfigMap, mounted at CONFIG_DIR too
FEATURESET_PATH = f"{CONFIG_DIR}/{FEATURESET_FILE}"
CA_DIR = f"{CONFIG_DIR}/ca"
CA_FILE = "bundle.pem"
FEED_CA_FILE = f"{CA_DIR}/{CA_FILE}"  # the operator's CA ConfigMap (OperatorConfig.feed_ca_configmap)
RUN_DIR = "/var/run/svoe"  # shared by redis, collector and aggregator
REDIS_SOCKET = f"{RUN_DIR}/redis.sock"
REDIS_URL = f"unix://{REDIS_SOCKET}"
METRICS_DIR = f"{RUN_DIR}/metrics"  # PROMETHEUS_MULTIPROC_DIR of every process of the pod
DATA_DIR = "/data"  # redis' AOF
WORK_DIR = "/var/lib/svoe"  # working directory: a relative local lake lands below it
TMP_DIR = "/tmp"
CACHE_DIR = f"{TMP_DIR}/cache"  # XDG_CACHE_HOME (cryptofeed's cache); the root filesystem is read-only
COLLECTOR_LOG_FILE = f"{TMP_DIR}/feedhandler.log"  # cryptofeed's log

# ---- Redis: the buffer between collector and aggregator -----------------------------------------
GROUP = "svoe-aggregator"
CONSUMER = "aggregator"
PAYLOAD_FIELD = b"d"
KEY_PREFIX = "svoe"


def stream_key(exchange: str, channel: str, symbol: str) -> str:
    return f"{KEY_PREFIX}:{exchange}:{channel}:{symbol}"


def parse_stream_key(key: str) -> tuple[str, str, str]:
    _, exchange, channel, symbol = key.split(":", 3)
    return exchange, channel, symbol


def stats_key(exchange: str) -> str:
    """Hash of running totals (collected, flushed) that `svoe run` shows as progress, and each
    stream's backlog in events (backlog_field)."""
    return f"{KEY_PREFIX}:{exchange}:stats"


BACKLOG_FIELD_PREFIX = "backlog:"


def backlog_field(key: str) -> str:
    """Field of the stats hash counting a stream's events written and not yet flushed: entries hold
    many events, so the consumer group's entry counts are not event counts."""
    return f"{BACKLOG_FIELD_PREFIX}{key}"


def heartbeat_key(exchange: str) -> str:
    """Hash the aggregator refreshes every second: beat, flush_ok, backlog (read by /readyz)."""
    return f"{KEY_PREFIX}:{exchange}:aggregator"


def collector_key(exchange: str) -> str:
    """Hash with the collector's state (running/stopped): the aggregator drains until stopped."""
    return f"{KEY_PREFIX}:{exchange}:collector"


def writer_key(exchange: str) -> str:
    """String with `svoe run`'s writer identity, kept while its entries wait to be flushed."""
    return f"{KEY_PREFIX}:{exchange}:writer"
