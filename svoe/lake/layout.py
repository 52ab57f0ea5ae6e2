"""The lake's layout: where a block lives, what its object name says, and how a lake URL resolves.

The one home of these decisions: the aggregator's writers build names here and every reader parses
them here (docs/lake-schema.md).

    {lake}/{channel}/exchange={EXCHANGE}/symbol={SYMBOL}/date={YYYY-MM-DD}/{first-id}.{writer}.parquet

- `first-id` is the Redis stream id of the block's first event. A writer that retries a block after
  a crash starts it at the same id, so the retry replaces its own object.
- `writer` names the collector that produced the block (a pod, or one `svoe run`), so two writers
  of the same stream never replace each other's blocks, even when their first ids coincide.
- Older lakes named blocks `{first-id}.parquet`; they still parse, with no writer.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARTITIONS = ("exchange", "symbol", "date")
STATE_DIR = ".svoe-state"  # beside a local lake: `svoe run`'s Redis AOF and caches, not data

_NAME = re.compile(r"^(?P<ms>\d+)-(?P<seq>\d+)(?:\.(?P<writer>[A-Za-z0-9_.-]+))?\.parquet$")
_WRITER_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class BlockKey:
    """Everything an object name and its path say about a block."""

    channel: str
    exchange: str
    symbol: str
    date: str
    first_id: str
    writer: str | None = None

    @property
    def partition_dir(self) -> str:
        return partition_dir(self.channel, self.exchange, self.symbol, self.date)

    @property
    def relpath(self) -> str:
        name = f"{self.first_id}.{self.writer}.parquet" if self.writer else f"{self.first_id}.parquet"
        return f"{self.partition_dir}/{name}"


def partition_dir(channel: str, exchange: str, symbol: str, date: str) -> str:
    return f"{channel}/exchange={exchange}/symbol={symbol}/date={date}"


# A local block is written to a temporary file beside it and renamed. A write killed before its
# rename leaves that file behind; its name must never look like Parquet to anything that globs
# `*.parquet` (it would count the block twice), hence `.{block name}.{random}.tmp`.
TEMPORARY_SUFFIX = ".tmp"


def temporary_prefix(block_name: str) -> str:
    return f".{block_name}."


def is_temporary(name: str) -> bool:
    """Whether a file name in a partition is a block write's temporary file."""
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


def split_relpath(rel: str) -> tuple[str, str, str, str, str] | None:
    """A file's (channel, exchange, symbol, date, name) from its path relative to the lake root,
    or None when the path is not inside a partition."""
    parts = rel.strip("/").split("/")
    if len(parts) != 2 + len(PARTITIONS):
        return None
    values = []
    for part, key in zip(parts[1:-1], PARTITIONS, strict=True):
        if not part.startswith(f"{key}="):
            return None
        values.append(part.removeprefix(f"{key}="))
    exchange, symbol, date = values
    return parts[0], exchange, symbol, date, parts[-1]


def parse_relpath(rel: str) -> BlockKey | None:
    """A block's path relative to the lake root, or None for anything that is not a block."""
    split = split_relpath(rel)
    if split is None:
        return None
    channel, exchange, symbol, date, name = split
    m = _NAME.match(name)
    if m is None:
        return None
    return BlockKey(channel, exchange, symbol, date, f"{m['ms']}-{m['seq']}", m["writer"])


def split_id(stream_id: str) -> tuple[int, int]:
    """`ms-seq` -> (ms, seq): the integer ordering key of an event within its writer's stream."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


# ---- writer identity ------------------------------------------------------------------------------
def sanitize_writer(name: str) -> str:
    cleaned = _WRITER_CHARS.sub("_", name).strip("._")
    if not cleaned:
        raise ValueError(f"writer identity {name!r} has no usable characters (allowed: A-Z a-z 0-9 _ . -)")
    return cleaned


def writer_identity(env: Mapping[str, str] | None = None) -> str:
    """Who writes this pod's blocks: one identity per pod instance, `{POD_NAME}-{POD_UID[:8]}`.

    A feed pod's Redis is an emptyDir that lives and dies with the pod instance, so the identity
    must be exactly as durable as the entries a retry re-reads. The name alone is not: a failed
    pod replaced under the same name starts with an empty Redis and would number its copies
    alongside the old instance's under one writer, so the exactly-once view could count an event
    twice. The UID (downward API, metadata.uid) tells the instances apart; without it the pod name
    alone is used. `svoe run` sets SVOE_WRITER."""
    env = os.environ if env is None else env
    if env.get("SVOE_WRITER"):
        return sanitize_writer(env["SVOE_WRITER"])
    if env.get("POD_NAME"):
        uid = env.get("POD_UID", "")[:8]
        return sanitize_writer(f"{env['POD_NAME']}-{uid}" if uid else env["POD_NAME"])
    if env.get("SVOE_DATAFEED"):
        return sanitize_writer(f"{env['SVOE_DATAFEED']}-{env.get('SVOE_SHARD', '0')}")
    return sanitize_writer(socket.gethostname())


# ---- lake URLs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LakeLocation:
    """A lake URL resolved: a local directory, or a bucket and prefix on S3."""

    url: str
    is_s3: bool
    root: str  # local: an absolute directory; S3: "bucket/prefix" without a trailing slash

    @property
    def local_root(self) -> Path:
        if self.is_s3:
            raise ValueError(f"{self.url} is on S3, not a local directory")
        return Path(self.root)

    def uri(self, rel: str) -> str:
        """The URL of a path inside the lake (awswrangler takes s3:// URLs, local writers paths)."""
        return f"s3://{self.root}/{rel}" if self.is_s3 else f"{self.root}/{rel}"

    def filesystem(self) -> Any:
        """A pyarrow filesystem whose paths are `root/...`. On S3 it honours the standard AWS
        variables, and AWS_ENDPOINT_URL(_S3) for S3-compatible stores and test servers."""
        import pyarrow.fs as pafs

        if not self.is_s3:
            return pafs.LocalFileSystem()
        endpoint = (
            os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get("WR_S3_ENDPOINT_URL")
        )
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        kwargs: dict[str, Any] = {"region": region}
        if endpoint:
            kwargs["endpoint_override"] = endpoint
            kwargs["scheme"] = "https" if endpoint.startswith("https") else "http"
        return pafs.S3FileSystem(**kwargs)


def resolve(url: str) -> LakeLocation:
    if url.startswith("s3://"):
        root = url.removeprefix("s3://").strip("/")
        if not root:
            raise ValueError(f"lake URL {url!r} names no bucket: use s3://bucket/prefix")
        return LakeLocation(url, True, root)
    return LakeLocation(url, False, str(Path(url.removeprefix("file://")).resolve()))
