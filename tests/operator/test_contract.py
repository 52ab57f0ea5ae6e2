"""svoe/api/contract.py holds the pods, the CLI, docs/contracts.md and the Redis names together.

The pod specs must say every port and path themselves: a containerPort the probes reach is the
`--health-port` the container's process is started with, not a CLI default that happens to match.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from svoe.api import contract
from svoe.api.datafeed import LiveOptions
from svoe.api.featureset import FeatureLiveOptions
from svoe.cli import build_parser
from svoe.operator.config import OperatorConfig
from svoe.operator.featureset_render import render_featurizer
from svoe.operator.render import render_shard
from tests.operator.test_featureset_plan import featureset
from tests.operator.test_render import UID, containers, feed
from tests.ship.test_dockerfile import contract_commands

CONFIG = OperatorConfig(feed_image="svoe-feedpod:test")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} must be passed once in {args}"
    return args[args.index(name) + 1]


def assert_ports_are_flags(c: dict[str, Any], live_port: int | None) -> int:
    """The container's HTTP port is its --health-port and every probe's; `live` is the manifest's."""
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    live = ports.pop("live", None)
    assert live == live_port, c["name"]
    (http,) = ports.values()
    assert int(flag(c["args"], "--health-port")) == http, c["name"]
    for probe in PROBES:
        assert c[probe]["httpGet"]["port"] == http, (c["name"], probe)
    return int(http)


@pytest.mark.parametrize("live", [{}, {"port": 6001}, {"enabled": False}], ids=["default", "moved", "off"])
def test_every_container_port_of_a_feed_pod_is_on_its_command_line_and_probed(live: dict[str, Any]) -> None:
    shard = render_shard(feed(live=live), UID, 0, ["BTC-USDT"], CONFIG)
    c = containers(shard.pod)
    manifest = yaml.safe_load(shard.configmap["data"][contract.MANIFEST_FILE])
    live_port = manifest["spec"]["live"]["port"] if live != {"enabled": False} else None
    assert assert_ports_are_flags(c["collector"], None) == contract.COLLECTOR_PORT
    assert assert_ports_are_flags(c["aggregator"], live_port) == contract.AGGREGATOR_PORT
    # Redis waits for the aggregator's health port before it stops: the same port again.
    pre_stop = " ".join(c["redis"]["lifecycle"]["preStop"]["exec"]["command"])
    assert f"127.0.0.1:{contract.AGGREGATOR_PORT}{contract.HEALTHZ_PATH}" in pre_stop
    service_ports = {p["name"]: p["port"] for p in shard.service["spec"]["ports"]}
    assert service_ports["metrics"] == contract.COLLECTOR_PORT


def test_the_featurizers_port_is_on_its_command_line_and_probed() -> None:
    objs = render_featurizer(featureset(), "u1", ["tcp://feed-0.ns.svc:5555"], CONFIG)
    (c,) = objs.deployment["spec"]["template"]["spec"]["containers"]
    assert assert_ports_are_flags(c, contract.FEATURES_LIVE_PORT) == contract.FEATURIZER_PORT
    assert c["args"][0] == contract.FEATURESET_PATH
    assert objs.service["spec"]["ports"][0]["port"] == contract.FEATURIZER_PORT


def test_the_feed_containers_run_the_commands_of_docs_contracts() -> None:
    c = containers(render_shard(feed(), UID, 0, ["BTC-USDT"], CONFIG).pod)
    documented = contract_commands()
    for name in ("collector", "aggregator", "redis"):
        assert [*c[name]["command"], *c[name].get("args", [])] == documented[name], name


def test_the_pods_command_lines_mean_what_the_contract_says_to_the_cli() -> None:
    c = containers(render_shard(feed(), UID, 0, ["BTC-USDT"], CONFIG).pod)
    for name, port in (("collector", contract.COLLECTOR_PORT), ("aggregator", contract.AGGREGATOR_PORT)):
        a = build_parser().parse_args([*c[name]["command"][1:], *c[name]["args"]])
        assert (a.manifest, a.redis, a.health_host, a.health_port) == (
            contract.MANIFEST_PATH,
            contract.REDIS_URL,
            contract.HEALTH_HOST,
            port,
        )
    assert flag(c["collector"]["args"], "--log-file").startswith(contract.TMP_DIR + "/")
    mounts = {m["mountPath"] for m in c["collector"]["volumeMounts"]}
    assert contract.TMP_DIR in mounts, "the log file must land on a writable volume"


def test_the_cli_defaults_are_the_contract() -> None:
    p = build_parser()
    col = p.parse_args(["collector", "--manifest", "m", "--redis", "r"])
    agg = p.parse_args(["aggregator", "--manifest", "m", "--redis", "r"])
    assert (col.health_host, col.health_port, col.log_file) == (
        contract.HEALTH_HOST,
        contract.COLLECTOR_PORT,
        contract.COLLECTOR_LOG_FILE,
    )
    assert (agg.health_host, agg.health_port) == (contract.HEALTH_HOST, contract.AGGREGATOR_PORT)
    assert LiveOptions().port == contract.LIVE_PORT
    assert FeatureLiveOptions().port == contract.FEATURES_LIVE_PORT


def test_redis_conf_opens_the_socket_the_containers_are_given() -> None:
    shard = render_shard(feed(), UID, 0, ["BTC-USDT"], CONFIG)
    conf = shard.configmap["data"][contract.REDIS_CONF_FILE].splitlines()
    assert f"unixsocket {contract.REDIS_SOCKET}" in conf and f"dir {contract.DATA_DIR}" in conf
    assert f"unix://{contract.REDIS_SOCKET}" == contract.REDIS_URL
    redis_mounts = {m["mountPath"] for m in containers(shard.pod)["redis"]["volumeMounts"]}
    assert {contract.RUN_DIR, contract.DATA_DIR, contract.CONFIG_DIR} <= redis_mounts


def test_redis_names_are_stable() -> None:
    # A pod's AOF outlives a restarted container and a new image: the names must not drift.
    assert contract.stream_key("BINANCE", "trades", "BTC-USDT") == "svoe:BINANCE:trades:BTC-USDT"
    assert contract.parse_stream_key("svoe:BINANCE:l2_book:BTC-USDT") == ("BINANCE", "l2_book", "BTC-USDT")
    assert contract.parse_stream_key(contract.stream_key("X", "feed_events", "_feed")) == ("X", "feed_events", "_feed")
    keys = [f("BINANCE") for f in (contract.stats_key, contract.heartbeat_key, contract.collector_key)]
    assert keys == ["svoe:BINANCE:stats", "svoe:BINANCE:aggregator", "svoe:BINANCE:collector"]
    assert contract.writer_key("BINANCE") == "svoe:BINANCE:writer"
    assert (contract.GROUP, contract.CONSUMER, contract.PAYLOAD_FIELD) == ("svoe-aggregator", "aggregator", b"d")
