"""The lake on S3 with the Glue catalog, against a moto server (real HTTP, awswrangler endpoints),
and an S3 outage in the middle of a run."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from svoe.net import free_port
from svoe.replay import reference_counts
from tests.conftest import BUCKET, RedisProc
from tests.pipeline_support import FeedPodProcesses, capture_manifest, http_get, svoe, write_manifest


class OutageProxy:
    """A TCP proxy in front of moto that can be switched off: while down, every connection is
    cut at once, so the aggregator sees S3 unreachable exactly as in a network outage."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.down = False
        self._srv = socket.create_server(("127.0.0.1", self.port))
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            with self._lock:
                for s in self._open:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                self._open.clear()

    def close(self) -> None:
        self._srv.close()


def _samples(body: str, prefix: str) -> list[float]:
    return [float(x.rsplit(" ", 1)[1]) for x in body.splitlines() if x.startswith(prefix)]


def _sum(body: str, prefix: str) -> float:
    return sum(_samples(body, prefix))


def _max(body: str, prefix: str) -> float:
    return max(_samples(body, prefix), default=0.0)


def _read_back(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, database: str, prefix: str) -> dict[str, int]:
    """Counts per channel as awswrangler reads the Glue tables' data back."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import awswrangler as wr

    wr.config.s3_endpoint_url = env["WR_S3_ENDPOINT_URL"]
    wr.config.glue_endpoint_url = env["WR_GLUE_ENDPOINT_URL"]
    out: dict[str, int] = {}
    for table in wr.catalog.get_tables(database=database):
        name = table["Name"]
        partitions = wr.catalog.get_partitions(database=database, table=name)
        assert partitions, f"table {name} has no registered partitions"
        df = wr.s3.read_parquet(
            f"s3://{BUCKET}/{prefix}/{name}/", dataset=True, columns=["svoe_id", "receipt_timestamp"]
        )
        assert not df.duplicated(["exchange", "symbol", "svoe_id"]).any(), f"duplicate events in {name}"
        out[name] = len(df)
        assert set(df.columns) >= {"exchange", "symbol", "date"}  # partitions surface as columns
    return out


def test_s3_glue_lake_counts(captures: Path, tmp_path: Path, moto: tuple[int, dict[str, str]],
                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _, env = moto
    exchange = "BINANCE_FUTURES"
    lake = f"s3://{BUCKET}/glue-lake"
    doc = capture_manifest(captures, exchange, lake, storage={"glueDatabase": "svoe_glue"})
    manifest = write_manifest(tmp_path / "feed.yaml", doc)
    res = svoe("run", str(manifest), "--replay", str(captures), "--metrics-port", "0", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    expected = {ch: n for ch, n in reference_counts(str(captures))[exchange].items() if n}
    stored = _read_back(env, monkeypatch, "svoe_glue", "glue-lake")
    assert stored.pop("feed_events") >= 3  # the feed's own events: start, connect, stop, in their Glue table
    assert stored == expected
    stats = svoe("lake", "stats", lake, "--json", env=env)
    assert stats.returncode == 0, stats.stderr
    import json

    got = {ch: sum(s.values()) for ch, s in json.loads(stats.stdout)[exchange].items()}
    assert got == expected
    # Read back with DuckDB through pyarrow's S3 filesystem: no DuckDB extension is fetched.
    query = "SELECT count(*) AS n, count(DISTINCT symbol) AS symbols FROM trades WHERE exchange = 'BINANCE_FUTURES'"
    sql = svoe("lake", "sql", lake, query, "--json", env={**env, "HOME": str(tmp_path / "home")})
    assert sql.returncode == 0, sql.stderr
    symbols = len({s for s in json.loads(stats.stdout)[exchange]["trades"]})
    assert json.loads(sql.stdout) == [{"n": expected["trades"], "symbols": symbols}]
    assert not (tmp_path / "home" / ".duckdb").exists()  # nothing installed or downloaded
    raw = svoe("lake", "stats", lake, "--raw", "--json", env=env)
    assert {ch: sum(s.values()) for ch, s in json.loads(raw.stdout)[exchange].items()} == expected
    # Compaction on S3: the same partitions, so the Glue catalog stays valid and reads the same.
    import awswrangler as wr

    objects = wr.s3.list_objects(f"{lake}/")
    compact = svoe("lake", "compact", lake, "--before", "2100-01-01", "--min-age", "0", env=env)
    assert compact.returncode == 0, compact.stderr
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["WR_S3_ENDPOINT_URL"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="glue-lake/")["Contents"]]
    assert all(k.endswith(".parquet") for k in keys), keys  # no empty directory markers left behind
    after = wr.s3.list_objects(f"{lake}/")
    assert len(after) <= len(objects) and all("._compacted-" in o for o in after), after
    for table in ("trades", "l2_book", "feed_events"):
        for location in wr.catalog.get_partitions(database="svoe_glue", table=table):
            assert wr.s3.list_objects(location), f"Glue partition {location} has no files after compaction"
    again = _read_back(env, monkeypatch, "svoe_glue", "glue-lake")
    assert again.pop("feed_events") >= 3 and again == expected
    stats_after = svoe("lake", "stats", lake, "--json", env=env)
    assert stats_after.stdout == stats.stdout


def test_s3_outage_keeps_backlog_in_redis_and_recovers(
    captures: Path, tmp_path: Path, moto: tuple[int, dict[str, str]], redis_proc: RedisProc,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    moto_port, env = moto
    proxy = OutageProxy(moto_port)
    via_proxy = {**env, **{k: f"http://127.0.0.1:{proxy.port}" for k in env if "ENDPOINT" in k}}
    exchange = "KRAKEN_FUTURES"
    pod = FeedPodProcesses(
        tmp_path, captures, exchange, redis_proc.url, f"s3://{BUCKET}/outage-lake", 3.0, env=via_proxy,
        storage={"glueDatabase": "svoe_outage", "flushIntervalSeconds": 0.3, "flushMaxRows": 500},
    )  # fmt: skip
    try:
        pod.start_aggregator()
        pod.start_collector()
        time.sleep(3.0)
        proxy.set_down(True)
        # S3 stays down until the failures show (retries take longer on a loaded machine).
        deadline = time.monotonic() + 40
        during, status, ready = "", 0, ""
        while time.monotonic() < deadline:
            time.sleep(1.0)
            _, during = http_get(f"http://127.0.0.1:{pod.collector_port}/metrics")
            status, ready = http_get(f"http://127.0.0.1:{pod.collector_port}/readyz")
            if (
                status == 503
                and _sum(during, "svoe_flush_errors_total{") > 0
                and _max(during, "svoe_stream_backlog{") > 0
            ):
                break
        proxy.set_down(False)
        pod.wait_exhausted()
        pod.stop_all(settle=3.0)
    finally:
        pod.kill_all()
        proxy.close()
    errors = _sum(during, "svoe_flush_errors_total{")
    backlog = _max(during, "svoe_stream_backlog{")
    assert errors > 0, "the outage did not show in svoe_flush_errors_total"
    assert backlog > 0, "the backlog did not grow in Redis during the outage"
    assert status == 503 and "lake writes are failing" in ready, ready
    expected = {ch: n for ch, n in reference_counts(str(captures))[exchange].items() if n}
    stored = _read_back(env, monkeypatch, "svoe_outage", "outage-lake")
    assert stored.pop("feed_events") >= 3
    assert stored == expected
