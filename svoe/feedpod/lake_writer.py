"""Writers of Parquet blocks into the lake: a local directory, or S3 with the Glue catalog.

Object names come from svoe/lake/layout.py: the block's first stream id and its writer. A block
re-read after a crash starts at the same stream id, so its retry overwrites the object instead of
adding a second copy (see aggregator.py for why the start id is stable).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from svoe.api.datafeed import StorageOptions
from svoe.lake.layout import PARTITIONS, TEMPORARY_SUFFIX, BlockKey, resolve, temporary_prefix

LOG = logging.getLogger(__name__)


def parquet_bytes(table: pa.Table, compression: str, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        row_group_size=row_group_size,
        compression=None if compression == "none" else compression,
        compression_level=3 if compression == "zstd" else None,
        use_dictionary=True,
        write_statistics=True,
    )
    return buf.getvalue()


class LakeWriter(Protocol):
    def write_block(self, key: BlockKey, table: pa.Table) -> int:
        """Durably write one block; return its size in bytes. Raises on failure (caller retries)."""
        ...


class LocalLakeWriter:
    def __init__(self, root: str | Path, compression: str = "zstd") -> None:
        self.root = resolve(str(root)).local_root
        self.compression = compression

    def write_block(self, key: BlockKey, table: pa.Table, row_group_size: int | None = None) -> int:
        path = self.root / key.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        data = parquet_bytes(table, self.compression, row_group_size)
        # Write-then-rename so a crash never leaves a torn block under the final name; fsync
        # both the file and its directory so the ack that follows is backed by durable bytes.
        # A write killed before its rename (kill -9 of the aggregator, whose writer dies with it)
        # leaves its temporary file behind, whole or torn, while the retry stores the block under
        # its name (layout.temporary_prefix says how it is named; `svoe lake compact` removes it).
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name), suffix=TEMPORARY_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return len(data)


def _athena_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"array<{_athena_type(t.value_type)}>"
    athena = {
        pa.float64(): "double",
        pa.int64(): "bigint",
        pa.int32(): "int",
        pa.string(): "string",
        pa.bool_(): "boolean",
    }
    return athena[t]


class S3LakeWriter:
    """awswrangler writes each block to its exact key and registers table and partition in Glue.

    awswrangler's `dataset=True` mode appends a random uuid to every object name, which would turn
    each retry into a duplicate; so blocks are uploaded to exact keys and the catalog side of a
    dataset (one table per channel, partitions exchange/symbol/date) is kept through wr.catalog.
    Reading back with `wr.s3.read_parquet(path, dataset=True)` or Athena sees one dataset.
    """

    def __init__(self, storage: StorageOptions) -> None:
        import awswrangler as wr

        self.wr = wr
        self.lake = resolve(storage.lake)
        self.compression = storage.compression
        self.database = storage.glue_database
        self._tables: set[str] = set()
        self._partitions: set[tuple[str, str, str, str]] = set()
        self._database_ready = False

    def _ensure_table(self, channel: str, schema: pa.Schema) -> None:
        if not self.database or channel in self._tables:
            return
        if not self._database_ready:
            # Here, not at start: an S3/Glue outage at start-up is retried like any failed flush.
            try:
                self.wr.catalog.create_database(self.database, exist_ok=True)
            except Exception as err:  # another pod's aggregator created it between check and create
                if "AlreadyExists" not in f"{type(err).__name__} {err}":
                    raise
            self._database_ready = True
        self.wr.catalog.create_parquet_table(
            database=self.database,
            table=channel,
            path=self.lake.uri(f"{channel}/"),
            columns_types={f.name: _athena_type(f.type) for f in schema},
            partitions_types={p: "string" for p in PARTITIONS},
            compression=self.compression if self.compression != "none" else None,
            mode="append",  # "overwrite" deletes every partition other pods registered
        )
        self._tables.add(channel)

    def _ensure_partition(self, key: BlockKey) -> None:
        part = (key.channel, key.exchange, key.symbol, key.date)
        if not self.database or part in self._partitions:
            return
        self.wr.catalog.add_parquet_partitions(
            database=self.database,
            table=key.channel,
            partitions_values={self.lake.uri(key.partition_dir + "/"): [key.exchange, key.symbol, key.date]},
            compression=self.compression if self.compression != "none" else None,
        )
        self._partitions.add(part)

    def write_block(self, key: BlockKey, table: pa.Table) -> int:
        self._ensure_table(key.channel, table.schema)
        data = parquet_bytes(table, self.compression)
        # The same Parquet bytes as the local lake; S3 PUT is atomic, so no torn objects.
        self.wr.s3.upload(local_file=io.BytesIO(data), path=self.lake.uri(key.relpath))
        self._ensure_partition(key)
        return len(data)


def make_writer(storage: StorageOptions) -> LakeWriter:
    if storage.is_s3:
        return S3LakeWriter(storage)
    return LocalLakeWriter(storage.lake, storage.compression)
