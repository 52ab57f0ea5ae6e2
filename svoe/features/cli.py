"""`svoe features live|offline`: the same FeatureSet computed from the live streams or the lake.

Exit codes: 0 success, 1 runtime failure, 2 bad input (the message names the field and the fix).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from svoe.api.contract import FEATURIZER_LOCAL_PORT
from svoe.api.featureset import FEATURE_KINDS

EXIT_BAD_INPUT = 2

KINDS_HELP = "Feature kinds: " + "; ".join(
    f"{k} ({', '.join(v.params) or 'no parameters'}): {v.doc}" for k, v in FEATURE_KINDS.items()
)


def cmd_live(a: argparse.Namespace) -> int:
    from svoe.feedpod.local_run import RunError, choose_port

    try:
        health_port, note = choose_port(
            a.health_port, FEATURIZER_LOCAL_PORT, "the featurizer's /metrics", "--health-port"
        )
        return _live(a, health_port, note)
    except RunError as err:  # a busy port that was asked for, or a run that cannot start
        print(f"svoe features live: {err}", file=sys.stderr)
        return 1


def _live(a: argparse.Namespace, health_port: int, note: str) -> int:
    from svoe.api.load import load_featureset, load_featureset_and_source, load_manifest
    from svoe.features.live_run import run_live, run_with_replay

    if note:
        print(f"({note})", file=sys.stderr)
    if a.connect:
        if a.replay:
            print("svoe features live: give --replay or --connect, not both", file=sys.stderr)
            return EXIT_BAD_INPUT
        featureset = load_featureset(a.featureset)
        res = asyncio.run(run_live(featureset, a.connect, a.out, health_port))
    else:
        featureset, feed, source = load_featureset_and_source(a.featureset)
        if a.lake:
            feed = load_manifest(source, a.lake)
        if a.replay:
            res = asyncio.run(run_with_replay(featureset, feed, a.replay, a.out, health_port, a.replay_speed))
        else:
            if not feed.spec.live.enabled:
                print(
                    f"svoe features live: spec.live.enabled is false in the source {source}; enable it", file=sys.stderr
                )
                return EXIT_BAD_INPUT
            endpoint = f"tcp://127.0.0.1:{feed.spec.live.port}"
            res = asyncio.run(run_live(featureset, [endpoint], a.out, health_port))
    c = res.counters
    print(
        f"features {featureset.name}: {res.rows:,} rows from {sum(c.events.values()):,} events"
        f" ({', '.join(f'{k}={v}' for k, v in c.events.items())}); late {c.late}, duplicates {c.duplicates},"
        f" malformed {c.malformed}" + (f"; written to {a.out}" if a.out else "")
    )
    return res.exit_code


def cmd_offline(a: argparse.Namespace) -> int:
    from svoe.api.load import load_featureset
    from svoe.features.offline import compute_offline
    from svoe.features.output import write_table
    from svoe.lake import Lake, LakeError
    from svoe.lake.reader import parse_time

    featureset = load_featureset(a.featureset)
    try:
        start = None if a.start is None else parse_time(a.start, "--start")
        end = None if a.end is None else parse_time(a.end, "--end")
        if start is not None and end is not None and end < start:
            raise LakeError(f"--end {a.end} is before --start {a.start}")
        began = time.monotonic()
        table = compute_offline(Lake(a.lake), featureset.spec, start, end, progress=_progress())
    except LakeError as err:
        print(f"svoe features offline: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    write_table(table, a.out)
    symbols = len(set(table["symbol"].to_pylist()))
    print(
        f"features {featureset.name}: {table.num_rows:,} rows for {symbols} symbol(s) in "
        f"{time.monotonic() - began:.1f} s; written to {a.out}"
    )
    return 0


def _progress() -> Any:
    if not sys.stderr.isatty():
        return None
    return lambda text: print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)


def add_features_commands(sub: Any) -> None:
    fp = sub.add_parser(
        "features",
        help="features from books and trades, live or offline, by one implementation",
        description="Compute a FeatureSet's features at every interval tick: live from the source DataFeed's ZMQ "
        "streams, or offline from the lake. Both give the same rows, bit for bit (docs/features.md).",
    ).add_subparsers(dest="features_cmd", required=True, metavar="COMMAND")
    lv = fp.add_parser(
        "live",
        help="subscribe to the source's live streams, publish features over ZMQ",
        description="Subscribe to every shard of the source DataFeed's live stream, compute the features at each "
        "tick of receipt time and publish them on tcp://BIND:spec.live.port as FEATURESET.feature.SYMBOL (a JSON "
        "row). With --replay, run the source DataFeed locally on a recorded exchange (as `svoe run --replay`) and "
        "exit when the replay is done. " + KINDS_HELP,
    )
    lv.add_argument("featureset", help="FeatureSet YAML (apiVersion svoe.io/v1alpha1, kind FeatureSet)")
    lv.add_argument("--replay", metavar="CAPTURE_DIR", help="run the source DataFeed on this capture, then exit")
    lv.add_argument("--replay-speed", type=float, default=None, help="replay at real time x SPEED (default: fastest)")
    lv.add_argument("--lake", help="with --replay: override the source's spec.storage.lake")
    lv.add_argument("--out", metavar="FILE.parquet", help="also record the rows to this Parquet file")
    lv.add_argument(
        "--connect",
        action="append",
        metavar="tcp://HOST:PORT",
        help="a live endpoint of the source (repeat per shard); default: the source manifest's spec.live.port "
        "on 127.0.0.1 (a `svoe run` on this machine)",
    )
    lv.add_argument(
        "--health-port",
        type=int,
        default=None,
        help=f"port of /metrics, /healthz, /readyz, /stats (default {FEATURIZER_LOCAL_PORT}, or a free one when taken; "
        "0: a free one)",
    )
    lv.set_defaults(func=cmd_live)
    of = fp.add_parser(
        "offline",
        help="compute the features from the lake into a Parquet file",
        description="Compute the FeatureSet's features from the lake's exactly-once view and its books, into one "
        "Parquet file: timestamp, exchange, symbol, then one column per feature. " + KINDS_HELP,
    )
    of.add_argument("featureset", help="FeatureSet YAML")
    of.add_argument("lake", help="the lake: a directory or s3://bucket/prefix")
    of.add_argument("--out", required=True, metavar="FILE.parquet", help="where to write the rows")
    of.add_argument("--start", help="first tick (epoch seconds or ISO-8601); windows read data from before it")
    of.add_argument("--end", help="last tick (epoch seconds or ISO-8601)")
    of.set_defaults(func=cmd_offline)
