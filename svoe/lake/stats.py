"""Event counts per exchange/channel/symbol: exactly-once events by default, stored rows with `raw`.

Stored rows come from the Parquet footers (no data pages are read). Exactly-once counts apply the
view's rule (svoe/lake/view.py) without materialising the view.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from svoe.api.channels import CHANNELS
from svoe.lake.scan import LakeScanner
from svoe.lake.view import exactly_once_counts_sql

Counts = dict[str, dict[str, dict[str, int]]]


def _freeze(counts: defaultdict[str, defaultdict[str, defaultdict[str, int]]]) -> Counts:
    return {
        ex: {ch: dict(sorted(syms.items())) for ch, syms in sorted(chs.items())} for ex, chs in sorted(counts.items())
    }


def lake_counts(url: str, raw: bool = False) -> Counts:
    """{exchange: {channel: {symbol: n}}}. Raises LakeError for a missing lake or a foreign file."""
    scanner = LakeScanner(url)
    counts: defaultdict[str, defaultdict[str, defaultdict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int))
    )
    for channel in scanner.channels():
        if not CHANNELS[channel].market_data:  # the feed's own events: see `svoe lake gaps`
            continue
        blocks = scanner.blocks([channel])
        if not blocks:
            continue
        if raw:
            for b in blocks:
                counts[b.key.exchange][channel][b.key.symbol] += scanner.row_count(b)
            continue
        from svoe.lake.reader import duckdb_connection

        con = duckdb_connection()
        con.register("stored", scanner.dataset(channel, blocks))
        for exchange, symbol, n in con.sql(exactly_once_counts_sql(channel, "stored")).fetchall():
            counts[exchange][channel][symbol] += int(n)
    return _freeze(counts)


def totals_by_channel(counts: Counts) -> dict[str, dict[str, int]]:
    return {ex: {ch: sum(syms.values()) for ch, syms in chs.items()} for ex, chs in counts.items()}


def render_table(counts: Counts, unit: str = "events") -> str:
    rows: list[tuple[Any, ...]] = []
    for ex, chs in counts.items():
        for ch, syms in chs.items():
            for sym, n in syms.items():
                rows.append((ex, ch, sym, n))
    if not rows:
        return "the lake holds no events\n"
    widths = [max(len(str(r[i])) for r in [("exchange", "channel", "symbol", unit), *rows]) for i in range(4)]
    lines = []
    header = ("exchange", "channel", "symbol", unit)
    lines.append("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        lines.append(
            "  ".join([*(str(c).ljust(w) for c, w in zip(r[:3], widths, strict=False)), f"{r[3]:>{widths[3]}}"])
        )
    for ex, totals in totals_by_channel(counts).items():
        lines.append(f"{ex} totals: " + ", ".join(f"{ch}={n}" for ch, n in totals.items()))
    return "\n".join(lines) + "\n"
