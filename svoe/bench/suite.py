"""`svoe bench all`: every benchmark of `make bench`, run one after another, as one JSON object.

Each part runs in this process or its own children one at a time, so no two of them share the
machine; progress goes to stderr and only the JSON goes to stdout.
"""

from __future__ import annotations

import sys
from typing import Any


def run_all(capture_dir: str, exchange: str, repeat: int, seconds: float, soak: float,
            operator_count: int) -> dict[str, Any]:  # fmt: skip
    from svoe.bench import features, lake, lake_compact, operator, pipeline

    out: dict[str, Any] = {}
    print("== pipeline", file=sys.stderr, flush=True)
    out["pipeline"] = pipeline.bench_pipeline(capture_dir, exchange, repeat, seconds, soak)
    print(f"== operator ({operator_count} DataFeeds)", file=sys.stderr, flush=True)
    out["operator"] = operator.run(count=operator_count)
    print("== lake: book snapshots", file=sys.stderr, flush=True)
    out["lake_snapshots"] = lake.bench_lake()
    print("== lake: compaction", file=sys.stderr, flush=True)
    out["lake_compact"] = lake_compact.bench_compact()
    print("== features", file=sys.stderr, flush=True)
    out["features"] = features.run()
    return out
