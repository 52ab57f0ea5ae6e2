"""The temporary files of local block writes killed before their rename, and their removal.

A local block is written beside its final name and renamed (layout.temporary_prefix); a write
killed in between leaves the temporary file, which no reader counts. One in a closed partition
(its date is before `--before`) that has not changed for `--min-age` belongs to a dead write. Every
partition directory is visited, including compacted ones and ones that hold nothing else, so none
is left behind. An S3 object appears whole or not at all, so a remote lake has none.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from svoe.lake.layout import STATE_DIR, is_temporary, split_relpath


@dataclass(frozen=True)
class Temporary:
    relpath: str  # from the lake root
    channel: str
    exchange: str
    symbol: str
    date: str
    mtime: float


def parse_temporary(relpath: str, mtime: float) -> Temporary | None:
    """A temporary file's place in the layout, or None for anything else."""
    split = split_relpath(relpath)
    if split is None or not is_temporary(split[-1]):
        return None
    return Temporary(relpath, *split[:4], mtime)


@dataclass(frozen=True)
class Sweep:
    """Which temporary files `svoe lake compact` removes: those of closed partitions among the ones
    its filters select, unchanged for `min_age` seconds at `now`."""

    before: str
    min_age: float
    now: float
    channels: list[str] | None = None
    exchange: str | None = None
    symbols: list[str] | None = None

    def dead(self, files: list[Temporary]) -> list[Temporary]:
        return [
            t
            for t in files
            if t.date < self.before
            and self.now - t.mtime >= self.min_age
            and (self.channels is None or t.channel in self.channels)
            and (self.exchange is None or t.exchange == self.exchange)
            and (self.symbols is None or t.symbol in self.symbols)
        ]


def list_local(root: str | Path) -> Iterator[Temporary]:
    """Every temporary file in a local lake (the state directory beside the data is not lake)."""
    root = Path(root)
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d != STATE_DIR]
        for name in names:
            if not is_temporary(name):
                continue
            path = Path(directory) / name
            with contextlib.suppress(FileNotFoundError):  # renamed by a live write meanwhile
                found = parse_temporary(path.relative_to(root).as_posix(), path.stat().st_mtime)
                if found is not None:
                    yield found


def remove(root: str | Path, files: list[Temporary]) -> int:
    removed = 0
    for t in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(root) / t.relpath)
            removed += 1
    return removed


def sweep_lake(url: str, sweep: Sweep) -> int:
    """Remove the dead temporary files of a local lake; how many went."""
    from svoe.lake.scan import LakeScanner

    location = LakeScanner(url).location
    if location.is_s3:
        return 0
    return remove(location.root, sweep.dead(list(list_local(location.root))))
