"""The featurizer's rows: `timestamp` (the tick, timestamp[ns, UTC], exactly k x interval),
`exchange`, `symbol`, then one float64 column per feature column (None: nothing to compute from).
Rows are in tick order, and within a tick in the FeatureSet's symbol order, live and offline.
The live ZMQ payload is the same row as a JSON object with `timestamp` in nanoseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from svoe.api.featureset import FeatureSetSpec
from svoe.features.kinds import Value

Row = tuple[int, str, list[Value]]  # (timestamp ns, symbol, values)
FIXED_COLUMNS = ("timestamp", "exchange", "symbol")


def schema(spec: FeatureSetSpec) -> pa.Schema:
    return pa.schema(
        [
            ("timestamp", pa.timestamp("ns", tz="UTC")),
            ("exchange", pa.string()),
            ("symbol", pa.string()),
            *((c, pa.float64()) for c in spec.columns()),
        ]
    )


def to_table(spec: FeatureSetSpec, rows: Sequence[Row]) -> pa.Table:
    columns = spec.columns()
    arrays: list[pa.Array] = [
        pa.array([r[0] for r in rows], pa.timestamp("ns", tz="UTC")),
        pa.array([spec.exchange] * len(rows), pa.string()),
        pa.array([r[1] for r in rows], pa.string()),
    ]
    arrays += [pa.array([r[2][i] for r in rows], pa.float64()) for i in range(len(columns))]
    return pa.Table.from_arrays(arrays, schema=schema(spec))


def payload(spec: FeatureSetSpec, row: Row) -> bytes:
    doc: dict[str, object] = {"timestamp": row[0], "exchange": spec.exchange, "symbol": row[1]}
    doc.update(zip(spec.columns(), row[2], strict=True))
    return orjson.dumps(doc)


class ParquetRecorder:
    """Rows appended as they come, written out in row groups: a long live run keeps little in memory."""

    def __init__(self, spec: FeatureSetSpec, path: str | Path, group_rows: int = 10_000) -> None:
        self.spec = spec
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(str(self.path), schema(spec), compression="zstd")
        self._rows: list[Row] = []
        self._group_rows = group_rows
        self.written = 0

    def add(self, row: Row) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._group_rows:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self._writer.write_table(to_table(self.spec, self._rows))
            self.written += len(self._rows)
            self._rows = []

    def close(self) -> None:
        self.flush()
        self._writer.close()


def write_table(table: pa.Table, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path), compression="zstd")
