"""Event counts per exchange/channel/symbol, counted from what is stored in the lake.

Counts come from the Parquet footers (row counts), so no data pages are read. Layout:
`{lake}/{channel}/exchange=E/symbol=S/date=D/{first-stream-id}.parquet` (docs/lake-schema.md).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

Counts = dict[str, dict[str, dict[str, int]]]


def _parse_key(rel: str) -> tuple[str, str, str] | None:
    parts = rel.strip("/").split("/")
    if len(parts) != 5 or not parts[4].endswith(".parquet"):
        return None
    channel, ex, sym, date = parts[0], parts[1], parts[2], parts[3]
    if not (ex.startswith("exchange=") and sym.startswith("symbol=") and date.startswith("date=")):
        return None
    return ex.removeprefix("exchange="), channel, sym.removeprefix("symbol=")


def _add(counts: defaultdict[str, defaultdict[str, defaultdict[str, int]]], key: tuple[str, str, str], n: int) -> None:
    ex, ch, sym = key
    counts[ex][ch][sym] += n


def _freeze(counts: defaultdict[str, defaultdict[str, defaultdict[str, int]]]) -> Counts:
    return {
        ex: {ch: dict(sorted(syms.items())) for ch, syms in sorted(chs.items())} for ex, chs in sorted(counts.items())
    }


def local_counts(root: str | Path) -> Counts:
    base = Path(str(root).removeprefix("file://"))
    if not base.is_dir():
        raise FileNotFoundError(f"no lake at {base}: pass the directory a run wrote to")
    counts: defaultdict[str, defaultdict[str, defaultdict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for path in base.rglob("*.parquet"):
        rel = path.relative_to(base).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        key = _parse_key(rel)
        if key is not None:
            _add(counts, key, pq.read_metadata(path).num_rows)
    return _freeze(counts)


def s3_counts(url: str) -> Counts:
    import awswrangler as wr

    url = url.rstrip("/")
    counts: defaultdict[str, defaultdict[str, defaultdict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    objects = wr.s3.list_objects(f"{url}/", suffix=".parquet")
    for obj in objects:
        key = _parse_key(obj[len(url) :])
        if key is None:
            continue
        meta = _s3_footer_rows(obj)
        _add(counts, key, meta)
    return _freeze(counts)


def _s3_footer_rows(path: str) -> int:
    import awswrangler as wr

    df = wr.s3.read_parquet(path, columns=["svoe_id"])
    return len(df)


def lake_counts(url: str) -> Counts:
    return s3_counts(url) if url.startswith("s3://") else local_counts(url)


def totals_by_channel(counts: Counts) -> dict[str, dict[str, int]]:
    return {ex: {ch: sum(syms.values()) for ch, syms in chs.items()} for ex, chs in counts.items()}


def render_table(counts: Counts) -> str:
    rows: list[tuple[Any, ...]] = []
    for ex, chs in counts.items():
        for ch, syms in chs.items():
            for sym, n in syms.items():
                rows.append((ex, ch, sym, n))
    if not rows:
        return "the lake holds no events\n"
    widths = [max(len(str(r[i])) for r in [("exchange", "channel", "symbol", "events"), *rows]) for i in range(4)]
    lines = []
    header = ("exchange", "channel", "symbol", "events")
    lines.append("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        lines.append("  ".join([*(str(c).ljust(w) for c, w in zip(r[:3], widths, strict=False)), f"{r[3]:>{widths[3]}}"]))
    for ex, totals in totals_by_channel(counts).items():
        lines.append(f"{ex} totals: " + ", ".join(f"{ch}={n}" for ch, n in totals.items()))
    return "\n".join(lines) + "\n"
