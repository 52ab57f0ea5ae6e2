"""Finding a lake's blocks and opening them as Arrow datasets, pruned by partition.

Only the partition directories a read asks for are listed, and pyarrow's scanner skips row groups
whose statistics fall outside a filter, so reading one symbol-hour never reads the whole lake.
Local directories and S3 go through the same pyarrow filesystem interface (no DuckDB extension,
nothing fetched at run time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from svoe.lake.layout import PARTITIONS, BlockKey, LakeLocation, parse_relpath, partition_dir, resolve
from svoe.lake.schema import CHANNEL_SCHEMAS, SVOE_COLUMNS

PARTITION_SCHEMA = pa.schema([(p, pa.string()) for p in PARTITIONS])


class LakeError(ValueError):
    """Bad input to a lake read: the message names what was wrong and what exists."""


@dataclass(frozen=True)
class Block:
    key: BlockKey
    path: str  # filesystem path, as `fs` takes it
    # From the listing, so planning a compaction of thousands of S3 objects asks for no HEAD each.
    mtime: float = field(default=0.0, compare=False)


def dataset_schema(channel: str) -> pa.Schema:
    return pa.unify_schemas([CHANNEL_SCHEMAS[channel], PARTITION_SCHEMA])


def check_channel(channel: str) -> None:
    if channel not in CHANNEL_SCHEMAS:
        raise LakeError(f"unknown channel {channel!r}: use one of {', '.join(CHANNEL_SCHEMAS)}")


class LakeScanner:
    def __init__(self, url: str) -> None:
        try:
            self.location: LakeLocation = resolve(url)
        except ValueError as err:
            raise LakeError(str(err)) from None
        self.fs: Any = self.location.filesystem()
        self.root = self.location.root
        if not self.location.is_s3:
            info = self.fs.get_file_info(self.root)
            if info.type != pafs.FileType.Directory:
                raise LakeError(f"no lake at {self.root}: pass the directory a run wrote to")

    def _list(self, base: str) -> list[pafs.FileInfo]:
        try:
            infos: list[pafs.FileInfo] = self.fs.get_file_info(
                pafs.FileSelector(base, allow_not_found=True, recursive=True)
            )
        except OSError as err:
            raise LakeError(
                f"cannot list {self.location.uri(base.removeprefix(self.root).lstrip('/'))}: {err}"
            ) from None
        return infos

    def channels(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(
            i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name in CHANNEL_SCHEMAS
        )

    def blocks(
        self,
        channels: Iterable[str] | None = None,
        exchange: str | None = None,
        symbols: Sequence[str] | None = None,
        dates: set[str] | None = None,
    ) -> list[Block]:
        """The blocks under the asked-for partitions; anything that is not a block is skipped
        (temporary files of a write in progress, `.svoe-state/`, files of other tools)."""
        out: list[Block] = []
        for channel in channels if channels is not None else self.channels():
            if exchange is not None and symbols:
                bases = [f"{self.root}/{partition_dir(channel, exchange, s, 'x').rsplit('/', 1)[0]}" for s in symbols]
            elif exchange is not None:
                bases = [f"{self.root}/{channel}/exchange={exchange}"]
            else:
                bases = [f"{self.root}/{channel}"]
            for base in bases:
                for info in self._list(base):
                    if info.type != pafs.FileType.File:
                        continue
                    key = parse_relpath(info.path[len(self.root) + 1 :])
                    if key is None or key.channel != channel:
                        continue
                    if dates is not None and key.date not in dates:
                        continue
                    out.append(Block(key, info.path, info.mtime.timestamp() if info.mtime else 0.0))
        return out

    def row_count(self, block: Block) -> int:
        return int(self._metadata(block).num_rows)

    def _metadata(self, block: Block) -> Any:
        try:
            with self.fs.open_input_file(block.path) as f:
                return pq.ParquetFile(f).metadata
        except (OSError, pa.ArrowInvalid) as err:
            raise LakeError(f"unreadable Parquet file {self.location.uri(block.key.relpath)}: {err}") from None

    def check(self, block: Block) -> None:
        """A block whose columns are not the channel's is a foreign file: name it."""
        schema = self._metadata(block).schema.to_arrow_schema()
        expected = CHANNEL_SCHEMAS[block.key.channel]
        where = self.location.uri(block.key.relpath)
        for f in schema:
            if f.name not in expected.names:
                raise LakeError(f"{where} is not a svoe {block.key.channel} block: unexpected column {f.name!r}")
            want = expected.field(f.name).type
            if f.type != want:
                raise LakeError(f"{where} is not a svoe {block.key.channel} block: {f.name} is {f.type}, not {want}")
        missing = [n for n in expected.names if n not in schema.names and n not in SVOE_COLUMNS[1:]]
        if missing:
            raise LakeError(f"{where} is not a svoe {block.key.channel} block: it has no {', '.join(missing)}")

    def dataset(self, channel: str, blocks: Sequence[Block], check: bool = True) -> ds.Dataset:
        """One dataset over blocks of one channel, in the channel's schema plus the partition
        columns; files of older layouts lack some svoe columns, which then read as null."""
        if check:
            for b in blocks:
                self.check(b)
        return ds.dataset(
            [b.path for b in blocks],
            schema=dataset_schema(channel),
            format="parquet",
            filesystem=self.fs,
            partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
            partition_base_dir=f"{self.root}/{channel}",
        )
