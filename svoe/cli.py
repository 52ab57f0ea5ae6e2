"""`svoe`: run a DataFeed locally, run the feed pod's containers, replay captures, inspect the lake,
benchmark the pipeline, and run the operator.

Exit codes: 0 success, 1 runtime failure, 2 bad input (the message names the field and the fix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from svoe.api import ManifestError, load_manifest
from svoe.api.contract import AGGREGATOR_PORT, COLLECTOR_LOG_FILE, COLLECTOR_PORT, HEALTH_HOST, REDIS_URL

EXIT_BAD_INPUT = 2


def _capture_problem(capture_dir: str, exchange: str) -> str | None:
    """What is wrong with a capture to replay, checked before anything starts: a run must not
    leave its state in the lake, nor a bench fail minutes in."""
    from svoe.replay import CaptureError, load_capture

    try:
        load_capture(capture_dir, exchange)  # cached: the replay in this process reuses it
    except CaptureError as err:
        return f"--replay {capture_dir}: {err}"
    return None


def _bench_problem(command: str, a: argparse.Namespace) -> int | None:
    """Checks a pipeline bench's capture and machine; prints what is wrong and returns the exit code."""
    problem = _capture_problem(a.replay, a.exchange)
    if problem is not None:
        print(f"svoe bench {command}: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from svoe.bench.rig import problem as rig_problem

    found = rig_problem(a.replay, a.exchange)
    if found is not None:
        print(f"svoe bench {command}: {found[0]}", file=sys.stderr)
        return found[1]
    return None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---- commands -----------------------------------------------------------------------------------
def cmd_run(a: argparse.Namespace) -> int:
    from svoe.feedpod.local_run import RunError, run_local
    from svoe.lake.stats import lake_counts, totals_by_channel
    from svoe.replay.faults import Faults

    feed = load_manifest(a.manifest, a.lake)
    try:
        faults = Faults.parse(a.replay_drop, a.replay_close_after)
    except ValueError as err:
        print(f"svoe run: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (a.replay_drop or a.replay_close_after) and not a.replay:
        print("svoe run: --replay-drop and --replay-close-after need --replay CAPTURE_DIR", file=sys.stderr)
        return EXIT_BAD_INPUT
    problem = _capture_problem(a.replay, feed.spec.exchange) if a.replay else None
    if problem is not None:
        print(f"svoe run {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        res = asyncio.run(
            run_local(feed, a.replay, a.redis, metrics_port=a.metrics_port, replay_speed=a.replay_speed, faults=faults)
        )
    except RunError as err:
        print(f"svoe run: {err}", file=sys.stderr)
        return 1
    lake = feed.spec.storage.lake
    print(
        f"run finished in {res.seconds:.1f}s: {res.collected:,} events collected, {res.flushed:,} rows flushed "
        f"to {lake}" + (f" (exit code {res.exit_code})" if res.exit_code else "")
    )
    try:
        totals = totals_by_channel(lake_counts(lake)).get(feed.spec.exchange, {})
        print("lake now holds: " + (", ".join(f"{ch}={n}" for ch, n in totals.items()) or "nothing"))
        from svoe.lake import Lake
        from svoe.lake.gaps import lake_gaps, summary

        gaps, _ = lake_gaps(Lake(lake), feed.spec.exchange, start=res.started_at)
        print(summary(gaps))
    except Exception as err:  # the summary is a courtesy; the run itself succeeded or failed above
        print(f"(could not read lake stats: {err})", file=sys.stderr)
    return res.exit_code


def cmd_collector(a: argparse.Namespace) -> int:
    from svoe.feedpod.entrypoints import collector_process

    return asyncio.run(collector_process(load_manifest(a.manifest), a.redis, a.health_host, a.health_port, a.log_file))


def cmd_aggregator(a: argparse.Namespace) -> int:
    from svoe.feedpod.entrypoints import aggregator_process

    return asyncio.run(aggregator_process(load_manifest(a.manifest), a.redis, a.health_host, a.health_port))


def cmd_replay_serve(a: argparse.Namespace) -> int:
    from svoe.replay.cli import serve_main
    from svoe.replay.faults import Faults

    try:
        faults = Faults.parse(a.drop, a.close_after)
    except ValueError as err:
        print(f"svoe replay serve: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return serve_main(
        a.capture_dir,
        a.exchange,
        a.host,
        a.port,
        a.speed,
        a.loop,
        faults=faults,
        clients=a.clients,
        cert_file=a.cert,
        key_file=a.key,
    )


def cmd_bench_pipeline(a: argparse.Namespace) -> int:
    from svoe.bench.pipeline import bench_main

    code = _bench_problem("pipeline", a)
    if code is not None:
        return code
    return bench_main(a.replay, a.exchange, a.repeat, a.json, a.seconds, a.soak)


def cmd_bench_all(a: argparse.Namespace) -> int:
    from svoe.bench.suite import run_all

    code = _bench_problem("all", a)
    if code is not None:
        return code
    print(json.dumps(run_all(a.replay, a.exchange, a.repeat, a.seconds, a.soak, a.operator_count)))
    return 0


def cmd_bench_features(a: argparse.Namespace) -> int:
    from svoe.bench.features import run

    print(json.dumps(run(a.events, a.repeat)))
    return 0


def cmd_bench_lake(a: argparse.Namespace) -> int:
    if a.compact or a.seek:
        from svoe.bench import lake_compact, lake_seek

        run, show = (
            (lake_compact.bench_compact, lake_compact.print_compact)
            if a.compact
            else (lake_seek.bench_seek, lake_seek.print_seek)
        )
        result = run(rows=a.rows, repeat=a.repeat)
        if a.json:
            print(json.dumps(result))
        else:
            show(result)
        return 0
    from svoe.bench.lake import bench_main as lake_bench_main

    return lake_bench_main(a.json, a.rows, a.repeat, a.depth, a.interval)


def cmd_operator(a: argparse.Namespace) -> int:
    from svoe.operator.config import ConfigError
    from svoe.operator.main import run_operator

    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        run_operator(
            namespace=a.namespace,
            all_namespaces=a.all_namespaces,
            peering=a.peering,
            priority=a.priority,
            liveness=a.liveness,
        )
    except ConfigError as err:
        print(f"svoe operator: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


# ---- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="svoe",
        description="Collect crypto market data from a DataFeed manifest into a data lake, locally or on Kubernetes.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "run",
        help="run a DataFeed locally: collector, Redis and aggregator",
        description=(
            "Run the DataFeed on this machine: a collector (cryptofeed), a private redis-server as the durable "
            "buffer, and an aggregator writing Parquet to the lake and publishing live over ZMQ. With --replay it "
            "replays a recorded exchange and exits 0 once the capture is exhausted and everything is flushed; "
            "otherwise it runs until Ctrl-C, then drains."
        ),
    )
    r.add_argument("manifest", help="DataFeed YAML (apiVersion svoe.io/v1alpha1, kind DataFeed)")
    r.add_argument("--lake", help="override spec.storage.lake: a directory or s3://bucket/prefix")
    r.add_argument("--replay", metavar="CAPTURE_DIR", help="replay this capture directory instead of the live exchange")
    r.add_argument(
        "--replay-speed", type=float, default=None, help="replay at real time x SPEED (default: as fast as possible)"
    )
    r.add_argument(
        "--replay-drop",
        metavar="MATCH:N[@SKIP]",
        help="fault: the replay drops N messages containing MATCH (after SKIP of them; default: mid-capture)",
    )
    r.add_argument("--replay-close-after", type=int, metavar="N", help="fault: the replay closes a connection after N")
    r.add_argument(
        "--redis", metavar="URL", help="use this Redis (redis://, unix://) instead of a private redis-server"
    )
    r.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"port of /metrics, /healthz, /readyz (default {COLLECTOR_PORT}, or a free port when it is taken; "
        "0: a free port)",
    )
    r.set_defaults(func=cmd_run)

    for name, func, port, help_ in (
        (
            "collector",
            cmd_collector,
            COLLECTOR_PORT,
            "feed pod container: cryptofeed -> Redis streams (serves /metrics)",
        ),
        ("aggregator", cmd_aggregator, AGGREGATOR_PORT, "feed pod container: Redis streams -> lake + ZMQ live"),
    ):
        c = sub.add_parser(name, help=help_, description=help_)
        c.add_argument("--manifest", required=True, help="the shard's DataFeed YAML")
        c.add_argument("--redis", required=True, metavar="URL", help=f"Redis URL, e.g. {REDIS_URL}")
        c.add_argument(
            "--health-host", default=HEALTH_HOST, help=f"address of the health endpoints (default {HEALTH_HOST})"
        )
        c.add_argument("--health-port", type=int, default=port, help=f"port of the health endpoints (default {port})")
        if name == "collector":
            c.add_argument(
                "--log-file", default=COLLECTOR_LOG_FILE, help=f"cryptofeed's log file (default {COLLECTOR_LOG_FILE})"
            )
        c.set_defaults(func=func)

    rp = sub.add_parser("replay", help="the local replay exchange").add_subparsers(dest="replay_cmd", required=True)
    s = rp.add_parser(
        "serve",
        help="serve a recorded exchange over HTTPS and WSS",
        description="Replay recorded traffic to an unmodified cryptofeed client (REST + websocket over TLS).",
    )
    s.add_argument("capture_dir", help="directory with EX.0, EX.http.N.0, EX.ws.N.0 files")
    s.add_argument("exchange", help="exchange id, e.g. BINANCE")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0, help="port (default: a free one, printed at start)")
    s.add_argument("--speed", type=float, default=None, help="real time x SPEED (default: as fast as possible)")
    s.add_argument("--loop", action="store_true", help="replay forever, rewriting sequence numbers")
    s.add_argument(
        "--drop", metavar="MATCH:N[@SKIP]", help="fault: drop N messages containing MATCH (default: mid-way)"
    )
    s.add_argument("--close-after", type=int, metavar="N", help="fault: close the connection sending message N")
    s.add_argument(
        "--clients", type=int, default=1, metavar="N", help="start streaming once N connections were accepted"
    )
    s.add_argument("--cert", help="PEM certificate to serve (default: a throw-away one, its CA file printed)")
    s.add_argument("--key", help="PEM private key of --cert")
    s.set_defaults(func=cmd_replay_serve)

    from svoe.lake.cli import add_lake_commands

    add_lake_commands(sub)

    from svoe.features.cli import add_features_commands

    add_features_commands(sub)

    bn = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_cmd", required=True)
    bp = bn.add_parser(
        "pipeline",
        help="bare cryptofeed vs cryptofeed's Redis backend vs the svoe pipeline",
        description="Run the same looped capture through bare cryptofeed, cryptofeed's Redis backend and svoe; report "
        "events/s, the whole pod's CPU seconds per million events against bare cryptofeed's, the aggregator's drain "
        "rate from a backlog, and live p50/p99 at ~2k/5k/10k events/s beside cryptofeed's own ZMQ backend.",
    )
    bp.add_argument("--replay", required=True, metavar="DIR", help="capture directory")
    bp.add_argument("--exchange", default="BINANCE")
    bp.add_argument("--repeat", type=int, default=1, help="runs per configuration (the median is reported)")
    bp.add_argument("--seconds", type=float, default=20.0, help="duration of each run")
    bp.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                    help="also run svoe at full speed this long and report its RSS and largest backlog")  # fmt: skip
    bp.add_argument("--json", action="store_true", help="print one JSON object")
    bp.set_defaults(func=cmd_bench_pipeline)
    ba = bn.add_parser(
        "all",
        help="every benchmark of `make bench`, one after another, printed as one JSON object",
        description="Run the pipeline, operator, lake and features benchmarks one after another and print one JSON "
        "object with a key per benchmark (progress goes to stderr). The figures go in docs/performance.md.",
    )
    ba.add_argument("--replay", required=True, metavar="DIR", help="capture directory")
    ba.add_argument("--exchange", default="BINANCE")
    ba.add_argument("--repeat", type=int, default=3, help="pipeline runs per configuration (median reported)")
    ba.add_argument("--seconds", type=float, default=20.0, help="duration of each pipeline run")
    ba.add_argument("--soak", type=float, default=0, metavar="SECONDS", help="length of the full-speed soak run "
                    "that reports RSS and the largest backlog (0: none)")  # fmt: skip
    ba.add_argument("--operator-count", type=int, default=500, help="DataFeeds the operator bench creates")
    ba.set_defaults(func=cmd_bench_all)
    bl = bn.add_parser(
        "lake",
        help="book snapshot derivation, Parquet to Parquet, against a plain-Python rebuild",
        description="Derive fixed-interval book snapshots from a synthetic l2_book Parquet file with svoe and with "
        "a plain-Python dict rebuild, in one run, and report level updates per second. --seek instead times "
        "`svoe lake book --at` against the distance from the nearest checkpoint; --compact times reads of one "
        "partition before and after `svoe lake compact`.",
    )
    bl.add_argument("--rows", type=int, default=200_000, help="l2_book rows to synthesise (default 200000)")
    bl.add_argument("--repeat", type=int, default=3, help="runs per measurement (best or median is reported)")
    bl.add_argument("--depth", type=int, default=10, help="snapshot depth (default 10)")
    bl.add_argument("--interval", default="1s", help="snapshot interval (default 1s)")
    bl.add_argument("--seek", action="store_true", help="time book --at against the distance from a checkpoint")
    bl.add_argument("--compact", action="store_true", help="file count and read times of a day of 30 s flushes, "
                    "before and after svoe lake compact")  # fmt: skip
    bl.add_argument("--json", action="store_true", help="print one JSON object")
    bl.set_defaults(func=cmd_bench_lake)
    bf = bn.add_parser(
        "features",
        help="the live featurizer alone: events per second through every feature kind",
        description="Feed synthetic live-stream messages (1,000-level books, deltas, one trade in five) through the "
        "featurizer's state machine with every feature kind at a 100 ms interval; print one JSON object.",
    )
    bf.add_argument("--events", type=int, default=100_000, help="messages after the two snapshots (default 100000)")
    bf.add_argument("--repeat", type=int, default=3, help="runs (the median is reported)")
    bf.set_defaults(func=cmd_bench_features)
    from svoe.bench.operator import add_operator_command

    add_operator_command(bn)

    op = sub.add_parser(
        "operator",
        help="run the kopf operator against the current kubeconfig",
        description="Reconcile DataFeeds into sharded feed pods, using KUBECONFIG or the in-cluster account.",
    )
    g = op.add_mutually_exclusive_group()
    g.add_argument("--namespace", "-n", help="watch one namespace")
    g.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    op.add_argument("--peering", default=None, help="kopf peering name for HA (two replicas)")
    op.add_argument("--priority", type=int, default=None, help="peering priority (default: from POD_NAME or random)")
    op.add_argument(
        "--liveness", default=None, metavar="URL", help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    op.set_defaults(func=cmd_operator)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        code: int = args.func(args)
    except ManifestError as err:
        print(f"svoe: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code


if __name__ == "__main__":
    sys.exit(main())
