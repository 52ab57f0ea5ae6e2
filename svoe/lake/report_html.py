"""The page of `svoe lake report`: one self-contained HTML file (inline CSS and SVG, no script, no
fetch of any kind), drawn from the numbers of svoe/lake/report.py.

Every number a test or a reader may compare is in the visible text; gap rows also carry their
exact epoch seconds in `data-start` / `data-end`, as `svoe lake gaps --json` prints them.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence

from svoe.lake.report import MINUTE, ChannelReport, ExchangeReport, SymbolReport

COLOURS = {
    "trades": "#1f77b4",
    "l2_book": "#2ca02c",
    "ticker": "#ff7f0e",
    "candles": "#9467bd",
    "funding": "#8c564b",
    "open_interest": "#e377c2",
    "liquidations": "#7f7f7f",
    "l3_book": "#17becf",
}
GAP = "#d62728"
COVERED = "#9fd89f"
WIDTH, LANE, PAD = 900, 18, 110

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 4px}h2{margin:32px 0 8px;border-bottom:2px solid #ddd}h3{margin:20px 0 6px}
.meta{color:#666}.summary{display:flex;gap:24px;margin:16px 0;flex-wrap:wrap}
.summary div{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px}
.summary b{display:block;font-size:20px}article{overflow-x:auto;background:#fff;border:1px solid #ddd;border-radius:6px;
padding:4px 16px 12px;margin:12px 0}table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{white-space:nowrap;padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}
td.detail{text-align:left;color:#555}.ok{color:#2a7a2a}.bad{color:#b00}.swatch{display:inline-block;width:10px;
height:10px;margin-right:6px;border-radius:2px}svg text{font:11px system-ui,sans-serif;fill:#444}figure{margin:8px 0}
figcaption{color:#666;font-size:12px}
"""


def _esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def _iso(t: float | None) -> str:
    if t is None:
        return "open"
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _x(t: float, lo: float, hi: float) -> float:
    return PAD + (t - lo) / (hi - lo) * (WIDTH - PAD - 10)


def timeline_svg(rep: SymbolReport) -> str:
    """One lane per channel: its span in green, every gap in red on top."""
    lo = min(c.span[0] for c in rep.channels)
    hi = max(c.span[1] for c in rep.channels)
    hi = hi if hi > lo else lo + 1.0
    height = LANE * len(rep.channels) + 26
    parts = [f'<svg class="timeline" width="{WIDTH}" height="{height}" role="img" aria-label="gap timeline">']
    for i, c in enumerate(rep.channels):
        y = 4 + i * LANE
        a, b = _x(c.span[0], lo, hi), _x(c.span[1], lo, hi)
        parts.append(f'<text x="0" y="{y + 12}">{_esc(c.channel)}</text>')
        parts.append(f'<rect x="{a:.1f}" y="{y}" width="{max(2.0, b - a):.1f}" height="{LANE - 4}" fill="{COVERED}">'
                     f"<title>{_esc(c.channel)}: {_pct(c.coverage)} covered</title></rect>")  # fmt: skip
        for g in c.gaps:
            ga, gb = (_x(t, lo, hi) for t in c.gap_bounds(g))
            width = max(3.0, gb - ga)  # a gap of milliseconds still shows
            title = f"{_esc(g.kind)} {_iso(g.start)} to {_iso(g.end)}"
            parts.append(f'<rect class="gap" x="{ga:.1f}" y="{y}" width="{width:.1f}" height="{LANE - 4}" '
                         f'fill="{GAP}"><title>{title}</title></rect>')  # fmt: skip
    y = height - 6
    parts.append(f'<text x="{PAD}" y="{y}">{_iso(lo)}</text>')
    parts.append(f'<text x="{WIDTH - 10}" y="{y}" text-anchor="end">{_iso(hi)}</text></svg>')
    return "".join(parts)


def rate_svg(channels: Sequence[ChannelReport]) -> str:
    """Events per minute, stacked by channel, one bar per minute."""
    minutes = sorted({m for c in channels for m, _ in c.per_minute})
    if not minutes:
        return ""
    counts = {c.channel: dict(c.per_minute) for c in channels}
    totals = [sum(counts[c.channel].get(m, 0) for c in channels) for m in minutes]
    top = max(totals) or 1
    h, plot = 160, 130
    lo, hi = minutes[0], minutes[-1] + MINUTE
    bar = max(3.0, (WIDTH - PAD - 10) * MINUTE / (hi - lo) - 1)  # one minute wide
    parts = [f'<svg class="rate" width="{WIDTH}" height="{h + 20}" role="img" aria-label="events per minute">']
    parts.append(f'<text x="0" y="14">{top:,}/min</text><text x="0" y="{plot + 4}">0</text>')
    parts.append(f'<line x1="{PAD}" y1="{plot + 4}" x2="{WIDTH - 10}" y2="{plot + 4}" stroke="#bbb"/>')
    for m in minutes:
        x = _x(m, lo, hi)
        base = plot + 4.0
        for c in channels:
            n = counts[c.channel].get(m, 0)
            if not n:
                continue
            bh = n / top * plot
            base -= bh
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{bh:.1f}" '
                         f'fill="{COLOURS.get(c.channel, "#555")}"><title>{_esc(c.channel)} {_iso(m)}: {n:,}'
                         "</title></rect>")  # fmt: skip
    parts.append(f'<text x="{PAD}" y="{h + 14}">{_iso(lo)}</text>')
    parts.append(f'<text x="{WIDTH - 10}" y="{h + 14}" text-anchor="end">{_iso(hi)}</text></svg>')
    return "".join(parts)


def _channel_rows(rep: SymbolReport) -> str:
    rows = []
    for c in rep.channels:
        colour = COLOURS.get(c.channel, "#555")
        cls = "ok" if not c.gaps else "bad"
        rows.append(
            f'<tr data-channel="{_esc(c.channel)}"><td><span class="swatch" style="background:{colour}"></span>'
            f'{_esc(c.channel)}</td><td class="events">{c.events:,}</td><td class="stored">{c.stored:,}</td>'
            f'<td class="duplicates">{_pct(c.duplicate_rate)}</td><td class="coverage {cls}">{_pct(c.coverage)}</td>'
            f'<td class="gap-count">{len(c.gaps)}</td><td>{_iso(c.first)}</td><td>{_iso(c.last)}</td></tr>'
        )
    head = ("channel", "events", "stored rows", "duplicates", "coverage", "gaps", "first", "last")
    return (
        '<table class="channels"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>"
    )  # fmt: skip


def _gap_rows(rep: SymbolReport) -> str:
    gaps = sorted(rep.gaps, key=lambda g: (g.start, g.channel))
    if not gaps:
        return '<p class="no-gaps ok">No gaps: every channel was covered from start to stop.</p>'
    rows = []
    for g in gaps:
        end = "" if g.end is None else repr(g.end)
        took = "open" if g.end is None else f"{g.end - g.start:.3f} s"
        rows.append(
            f'<tr class="gap" data-channel="{_esc(g.channel)}" data-kind="{_esc(g.kind)}" data-start="{g.start!r}" '
            f'data-end="{end}"><td>{_esc(g.channel)}</td><td>{_esc(g.kind)}</td><td>{_iso(g.start)}</td>'
            f'<td>{_iso(g.end)}</td><td>{took}</td><td class="detail">{_esc(g.detail)}</td></tr>'
        )
    head = ("channel", "kind", "start", "end", "duration", "detail")
    return (
        '<table class="gaps"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>"
    )  # fmt: skip


def render(url: str, date: str | None, symbols: Sequence[SymbolReport], exchanges: Sequence[ExchangeReport]) -> str:
    events = sum(c.events for s in symbols for c in s.channels)
    stored = sum(c.stored for s in symbols for c in s.channels)
    gaps = sum(len(s.gaps) for s in symbols)
    dup = 0.0 if not stored else 1 - events / stored
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>svoe lake report: {_esc(url)}</title><style>{CSS}</style></head><body>",
        f'<h1>svoe lake report</h1><p class="meta">{_esc(url)}' + (f" · {_esc(date)}" if date else "")
        + f" · generated {now}</p>",
        '<div class="summary">'
        f'<div>exchanges<b id="total-exchanges">{len(exchanges)}</b></div>'
        f'<div>symbols<b id="total-symbols">{len(symbols)}</b></div>'
        f'<div>events (exactly once)<b id="total-events">{events:,}</b></div>'
        f'<div>stored rows<b id="total-stored">{stored:,}</b></div>'
        f'<div>duplicates<b id="total-duplicates">{_pct(dup)}</b></div>'
        f'<div>gaps<b id="total-gaps" class="{"ok" if not gaps else "bad"}">{gaps}</b></div></div>',
    ]  # fmt: skip
    for ex in exchanges:
        out.append(
            f'<section class="exchange" data-exchange="{_esc(ex.exchange)}"><h2>{_esc(ex.exchange)}</h2>'
            f'<p class="meta">collectors <b class="collectors">{ex.collectors}</b> · disconnects '
            f'<b class="disconnects">{ex.disconnects}</b> · malformed messages '
            f'<b class="malformed">{ex.malformed}</b></p>'
        )
        for rep in (s for s in symbols if s.exchange == ex.exchange):
            out.append(
                f'<article class="symbol" data-exchange="{_esc(rep.exchange)}" data-symbol="{_esc(rep.symbol)}">'
                f"<h3>{_esc(rep.symbol)}</h3>{_channel_rows(rep)}"
                f'<p class="meta">book resyncs <b class="resyncs">{rep.resyncs}</b> · sequence gaps reported by the '
                f'collector <b class="book-gaps">{rep.book_gaps}</b></p>'
                f"<figure>{timeline_svg(rep)}<figcaption>Coverage per channel: green where it was collected, red "
                "where a gap was recorded.</figcaption></figure>"
                f"<figure>{rate_svg(rep.channels)}<figcaption>Exactly-once events per minute of receipt time, by "
                "channel.</figcaption></figure>"
                f"{_gap_rows(rep)}</article>"
            )
        out.append("</section>")
    out.append("</body></html>\n")
    return "".join(out)
