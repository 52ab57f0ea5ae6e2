"""`svoe lake ...`: counts, SQL, books and snapshots, read through the exactly-once view.

Exit codes: 0 success, 2 bad input (the message says what was wrong and what the lake holds).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from typing import Any

EXIT_BAD_INPUT = 2


def _fail(command: str, err: Exception) -> int:
    print(f"svoe lake {command}: {err}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def cmd_stats(a: argparse.Namespace) -> int:
    from svoe.lake.scan import LakeError
    from svoe.lake.stats import lake_counts, render_table

    try:
        counts = lake_counts(a.lake_url, raw=a.raw)
    except LakeError as err:
        return _fail("stats", err)
    if a.json:
        print(json.dumps(counts, indent=None, sort_keys=True))
    else:
        sys.stdout.write(render_table(counts, "rows" if a.raw else "events"))
    return 0


def cmd_sql(a: argparse.Namespace) -> int:
    from svoe.lake.scan import LakeError

    try:
        if a.athena:
            from svoe.lake.athena import athena_query

            table = athena_query(a.query, workgroup=a.athena, database=a.database)
        else:
            from svoe.lake import Lake

            table = Lake(a.lake_url).sql(a.query)
    except LakeError as err:
        return _fail("sql", err)
    rows = table.to_pylist()
    if a.json:
        print(json.dumps([_json_value(r) for r in rows]))
    elif a.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(table.column_names)
        for r in rows:
            w.writerow([json.dumps(_json_value(v)) if isinstance(v, list | dict) else v for v in r.values()])
    else:
        sys.stdout.write(table.to_pandas().to_string(index=False) + "\n")
    return 0


def cmd_book(a: argparse.Namespace) -> int:
    from svoe.lake import Lake
    from svoe.lake.scan import LakeError

    try:
        book = Lake(a.lake_url).book(a.exchange, a.symbol, a.at, a.depth)
    except (LakeError, ValueError) as err:
        return _fail("book", err)
    if a.json:
        print(json.dumps(_json_value(book)))
    else:
        print(f"{book['exchange']} {book['symbol']} at {book['at']}")
        for side in ("asks", "bids"):
            levels = book[side] if side == "bids" else list(reversed(book[side]))
            for price, size in levels:
                print(f"  {side[:-1]:>3}  {price:>18.10g}  {size:>18.10g}")
    return 0


def cmd_snapshots(a: argparse.Namespace) -> int:
    import os

    from svoe.lake.jobs import JobError, run_tasks
    from svoe.lake.reader import parse_time
    from svoe.lake.scan import LakeError
    from svoe.lake.snapshot_job import snapshot_part, snapshot_tasks, write_parts

    try:
        if a.depth < 1:
            raise LakeError(f"--depth must be at least 1, got {a.depth}")
        from svoe.api.durations import parse_interval

        parse_interval(a.interval)
        start = None if a.start is None else parse_time(a.start, "--start")
        end = None if a.end is None else parse_time(a.end, "--end")
        if start is not None and end is not None and end < start:
            raise LakeError("--end is before --start")
        tasks = snapshot_tasks(a.lake_url, a.exchange, a.symbol, a.depth, a.interval, start, end)
        symbols = sorted({t.symbol for t in tasks})
        one_file = len(symbols) == 1 and not os.path.isdir(a.out) and not a.out.endswith("/")
        parts = run_tasks(snapshot_part, tasks, label="snapshots", scheduler=a.scheduler, workers=a.workers)
        written = write_parts(parts, a.out, one_file)
    except (LakeError, ValueError, JobError) as err:
        return _fail("snapshots", err)
    where = a.out if one_file else os.path.join(a.out, "SYMBOL.parquet")
    total = sum(written.values())
    named = ", ".join(symbols) if len(symbols) <= 5 else f"{len(symbols)} symbols"
    print(f"wrote {total:,} snapshots of {a.exchange} {named} "
          f"(depth {a.depth}, every {a.interval}, {len(tasks)} symbol-days) to {where}")  # fmt: skip
    return 0


def cmd_gaps(a: argparse.Namespace) -> int:
    from svoe.lake import Lake
    from svoe.lake.gaps import lake_gaps, render_table
    from svoe.lake.reader import parse_time
    from svoe.lake.scan import LakeError

    try:
        start = None if a.start is None else parse_time(a.start, "--start")
        end = None if a.end is None else parse_time(a.end, "--end")
        gaps, silent = lake_gaps(Lake(a.lake_url), a.exchange, a.symbol, start, end)
    except LakeError as err:
        return _fail("gaps", err)
    for ex in silent:
        print(f"svoe lake gaps: {ex} has no feed events (written by an older svoe): its gaps cannot be told",
              file=sys.stderr)  # fmt: skip
    if a.json:
        print(json.dumps([g.as_json() for g in gaps]))
    else:
        sys.stdout.write(render_table(gaps))
    return 0


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS", help="run the per-partition tasks on this Dask scheduler "
                   "(tcp://host:8786) instead of local processes")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, help="local processes (default: one per CPU; 1 runs "
                   "everything in this process)")  # fmt: skip


def cmd_compact(a: argparse.Namespace) -> int:
    import time

    from svoe.lake.compact import CompactTask, Skipped, compact_partition, default_before, parse_size, plan_lake
    from svoe.lake.jobs import JobError, run_tasks
    from svoe.lake.scan import LakeError, check_channel
    from svoe.lake.temporaries import Sweep, sweep_lake

    try:
        target = parse_size(a.target_size)
        before = None if a.before is None else _date_arg(a.before, "--before")
        if a.channel:
            check_channel(a.channel)
        if a.symbol and not a.exchange:
            raise LakeError("--symbol needs --exchange: symbols are named per exchange")
        channels = [a.channel] if a.channel else None
        closed_before = before or default_before()
        swept = sweep_lake(a.lake_url, Sweep(closed_before, a.min_age, time.time(), channels, a.exchange, a.symbol))
        tasks, skipped = plan_lake(a.lake_url, closed_before, a.min_age, channels, a.exchange, a.symbol)
        tasks = [CompactTask(t.url, t.partition, target) for t in tasks]
        done = run_tasks(compact_partition, tasks, label="compacting", scheduler=a.scheduler, workers=a.workers)
    except (LakeError, JobError) as err:
        return _fail("compact", err)
    except OSError as err:  # the store failed mid-way; what was done is consistent, run again
        print(f"svoe lake compact: {err}", file=sys.stderr)
        return 1
    skipped += [Skipped(r.partition, r.left_alone) for r in done if r.left_alone]
    results = [r for r in done if not r.left_alone]
    reasons: dict[str, int] = {}
    for s in skipped:
        if a.verbose:
            print(f"skipped {s.partition}: {s.reason}")
        key = s.reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    if reasons and not a.verbose:
        print("left alone: " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) + " (-v lists them)")
    files_before = sum(r.files_before for r in results)
    files_after = sum(r.files_after for r in results)
    events = sum(r.events for r in results)
    rows = sum(r.rows for r in results)
    print(f"compacted {len(results)} partitions: {files_before:,} files -> {files_after:,}, "
          f"{rows:,} stored rows -> {events:,} exactly-once events")  # fmt: skip
    if swept:
        files = "file" if swept == 1 else "files"
        print(f"removed {swept:,} temporary {files} left by block writes killed before their rename")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    import os

    from svoe.lake.jobs import JobError, run_tasks
    from svoe.lake.report import exchange_reports, report_tasks, symbol_report
    from svoe.lake.report_html import render
    from svoe.lake.scan import LakeError

    try:
        date = None if a.date is None else _date_arg(a.date, "--date")
        parent = os.path.dirname(os.path.abspath(a.out))
        if not os.path.isdir(parent):
            raise LakeError(f"--out {a.out}: the directory {parent} does not exist")
        tasks = report_tasks(a.lake_url, date)
        symbols = run_tasks(symbol_report, tasks, label="reporting", scheduler=a.scheduler, workers=a.workers)
        exchanges = exchange_reports(a.lake_url, sorted({t.exchange for t in tasks}), date)
        page = render(a.lake_url, date, symbols, exchanges)
    except (LakeError, JobError) as err:
        return _fail("report", err)
    try:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as err:
        return _fail("report", ValueError(f"cannot write --out {a.out}: {err.strerror or err}"))
    gaps = sum(len(s.gaps) for s in symbols)
    print(f"wrote {a.out}: {len(symbols)} symbols of {len(exchanges)} exchanges, {gaps} gaps")
    return 0


def _date_arg(text: str, flag: str) -> str:
    import datetime as dt

    from svoe.lake.scan import LakeError

    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise LakeError(f"{flag} {text!r} is not a date: use YYYY-MM-DD") from None


def add_lake_commands(sub: Any) -> None:
    lk = sub.add_parser(
        "lake",
        help="read the lake: counts, SQL, books",
        description="Read a lake (a directory or s3://bucket/prefix). Every read goes through the exactly-once view "
        "unless --raw or raw_<channel> asks for the stored rows (docs/lake-schema.md).",
    ).add_subparsers(dest="lake_cmd", required=True, metavar="COMMAND")

    st = lk.add_parser(
        "stats",
        help="events per exchange/channel/symbol",
        description="Count exactly-once events per exchange, channel and symbol; --raw counts stored rows "
        "(from Parquet footers), which is higher when redundant collectors or re-runs stored the same events.",
    )
    st.add_argument("lake_url", help="a lake directory or s3://bucket/prefix")
    st.add_argument("--raw", action="store_true", help="count stored rows instead of exactly-once events")
    st.add_argument("--json", action="store_true", help='print {"EXCHANGE": {"channel": {"SYMBOL": n}}}')
    st.set_defaults(func=cmd_stats)

    q = lk.add_parser(
        "sql",
        help="run SQL over the lake (DuckDB; Athena with --athena)",
        description="Run a DuckDB query over the lake. Each channel is a view that is exactly-once (trades, l2_book, "
        "ticker, ...) with a raw_<channel> view of the stored rows; the partition columns exchange, symbol and date "
        "are included. S3 lakes are scanned through pyarrow: no DuckDB extension is needed. With --athena WORKGROUP "
        "the query runs in Athena on the Glue database instead.",
    )
    q.add_argument("lake_url", help="a lake directory or s3://bucket/prefix (ignored with --athena)")
    q.add_argument("query", help='e.g. "SELECT symbol, count(*) AS n FROM trades GROUP BY symbol"')
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON array of row objects")
    fmt.add_argument("--csv", action="store_true", help="print CSV with a header row")
    q.add_argument("--athena", metavar="WORKGROUP", help="run in Athena through awswrangler, in this workgroup")
    q.add_argument("--database", help="Glue database for --athena (spec.storage.glueDatabase)")
    q.set_defaults(func=cmd_sql)

    g = lk.add_parser(
        "gaps",
        help="intervals in which a stream's data may be missing or wrong",
        description="List every interval in which a stream's data may be missing or wrong, from the feed events the "
        "collectors recorded: sequence gaps on books (until the book is valid again), disconnects (until the "
        "stream's next event) and stretches with no collector running. Over redundant collectors a window is a gap "
        "only if every one of them missed it. Times are epoch seconds; end is null while a gap is still open.",
    )
    g.add_argument("lake_url", help="a lake directory or s3://bucket/prefix")
    g.add_argument("--exchange", help="only this exchange")
    g.add_argument("--symbol", help="only this symbol")
    g.add_argument("--start", help="only gaps that end after this time (epoch seconds or ISO-8601)")
    g.add_argument("--end", help="only gaps that start before this time")
    g.add_argument("--json", action="store_true", help="print a JSON list of {exchange, channel, symbol, kind, start, "
                   "end, detail}")  # fmt: skip
    g.set_defaults(func=cmd_gaps)

    c = lk.add_parser(
        "compact",
        help="rewrite closed partitions into a few large exactly-once files",
        description="Rewrite each closed partition (channel, exchange, symbol, date) into a few large files of its "
        "exactly-once events, in view order. Safe to kill at any point and to run again: the view never changes. "
        "A partition is closed when its date is before --before and no file in it changed within --min-age. "
        "Temporary files of block writes killed before their rename are removed from the closed partitions.",
    )
    c.add_argument("lake_url", help="a lake directory or s3://bucket/prefix")
    c.add_argument("--before", metavar="DATE", help="only partitions of dates before this (default: today, UTC)")
    c.add_argument("--target-size", default="128MB", help="size of the files to write (default: 128MB)")
    c.add_argument("--min-age", type=float, default=900.0, metavar="SECONDS",
                   help="leave partitions with a file changed this recently (default: 900)")  # fmt: skip
    c.add_argument("--channel", help="only this channel")
    c.add_argument("--exchange", help="only this exchange")
    c.add_argument("--symbol", action="append", help="only this symbol (repeat for more; needs --exchange)")
    c.add_argument("-v", "--verbose", action="store_true", help="list every partition left alone, and why")
    _job_options(c)
    c.set_defaults(func=cmd_compact)

    r = lk.add_parser(
        "report",
        help="one self-contained HTML page: coverage, gaps, events per minute, duplicates",
        description="Write one HTML page (no network fetches when opened) with, per exchange and symbol: coverage "
        "per channel, a timeline of gaps, exactly-once events per minute, the duplicate rate (stored rows against "
        "exactly-once events), book resyncs and malformed messages. Its numbers are those of `svoe lake stats`, "
        "`svoe lake stats --raw` and `svoe lake gaps`.",
    )
    r.add_argument("lake_url", help="a lake directory or s3://bucket/prefix")
    r.add_argument("--date", help="only this UTC date (YYYY-MM-DD): its partitions and the gaps that touch it")
    r.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html")
    _job_options(r)
    r.set_defaults(func=cmd_report)

    b = lk.add_parser(
        "book",
        help="the L2 book of a symbol at an instant",
        description="The book after every l2_book event of the symbol received at or before --at: bids descending, "
        "asks ascending. It is rebuilt from the latest snapshot row at or before --at, not from the start of the day.",
    )
    b.add_argument("lake_url")
    b.add_argument("--exchange", required=True)
    b.add_argument("--symbol", required=True)
    b.add_argument("--at", required=True, help="epoch seconds or ISO-8601 (UTC unless an offset is given)")
    b.add_argument("--depth", type=int, default=None, help="levels per side (default: all)")
    b.add_argument("--json", action="store_true", help='print {"exchange", "symbol", "at", "bids", "asks"}')
    b.set_defaults(func=cmd_book)

    sn = lk.add_parser(
        "snapshots",
        help="book snapshots every interval, to Parquet",
        description="Write one row per tick: timestamp, bid_price_0..N-1, bid_size_0..N-1, ask_price_0..N-1, "
        "ask_size_0..N-1 (NaN where a side is shorter): the layout known as book_snapshot_N_interval.",
    )
    sn.add_argument("lake_url")
    sn.add_argument("--exchange", required=True)
    sn.add_argument("--symbol", action="append", help="a symbol (repeat for more; default: every l2_book symbol of "
                    "the exchange)")  # fmt: skip
    sn.add_argument("--depth", type=int, required=True, help="levels per side")
    sn.add_argument("--interval", required=True, help="tick step: 100ms, 1s, 5m, ...")
    sn.add_argument("--start", default=None, help="first tick at or after this time (default: the first book)")
    sn.add_argument("--end", default=None, help="last tick at or before this time (default: the last event)")
    sn.add_argument("--out", required=True, help="output Parquet file for one symbol; a directory (one SYMBOL.parquet "
                    "each) for several")  # fmt: skip
    _job_options(sn)
    sn.set_defaults(func=cmd_snapshots)
