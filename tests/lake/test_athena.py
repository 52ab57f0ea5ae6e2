"""`svoe lake sql --athena`: the views spelled for Athena give what DuckDB's views give, and the
query goes through the Athena API (moto: it accepts and records queries; their rows are seeded,
since moto runs no SQL)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import boto3
import orjson

from svoe.feedpod.block_decode import to_table
from svoe.feedpod.lake_writer import LocalLakeWriter
from svoe.lake import Lake
from svoe.lake.athena import with_views
from svoe.lake.layout import BlockKey
from svoe.lake.reader import duckdb_connection
from svoe.lake.scan import LakeScanner
from tests.pipeline_support import svoe

T0 = 1634000000.0


def _lake(root: Path) -> None:
    for writer, skip in (("pod-a", 0), ("pod-b", 2)):
        n = 6 - skip
        ids = [f"{int(T0 * 1000) + skip + i}-0" for i in range(n)]
        rows = [
            orjson.dumps([T0 + skip + i, T0 + skip + i + 0.01, "sell", "1", "2", str(skip + i), None]) for i in range(n)
        ]
        key = BlockKey("trades", "BINANCE", "BTC-USDT", "2021-10-12", ids[0], writer)
        LocalLakeWriter(root).write_block(key, to_table("trades", ids, rows, writer))


def test_athena_views_match_duckdb_views(tmp_path: Path) -> None:
    _lake(tmp_path)
    con = duckdb_connection()
    scanner = LakeScanner(str(tmp_path))
    con.register("stored", scanner.dataset("trades", scanner.blocks(["trades"])))
    con.execute('CREATE SCHEMA "svoe_db"')
    con.execute('CREATE TABLE "svoe_db"."trades" AS SELECT * FROM stored')  # what Glue's table holds
    for query in (
        "SELECT id, svoe_writer FROM trades ORDER BY id",
        "SELECT count(*) AS n FROM raw_trades",
        "WITH x AS (SELECT symbol FROM trades) SELECT symbol, count(*) AS n FROM x GROUP BY symbol",
    ):
        athena = con.sql(with_views(query, "svoe_db")).fetchall()
        duck = [tuple(r.values()) for r in Lake(str(tmp_path)).sql(query).to_pylist()]
        assert athena and athena == duck, query
    assert con.sql(with_views("SELECT count(*) FROM trades", "svoe_db")).fetchall() == [(6,)]


def test_athena_query_through_the_api(moto: tuple[int, dict[str, str]]) -> None:
    port, env = moto
    endpoint = f"http://127.0.0.1:{port}"
    seeded = {
        "account_id": "123456789012",
        "region": "us-east-1",
        "results": [
            {
                "rows": [{"Data": [{"VarCharValue": "symbol"}, {"VarCharValue": "n"}]},
                         {"Data": [{"VarCharValue": "BTC-USDT"}, {"VarCharValue": "6"}]}],
                "column_info": [
                    {"CatalogName": "c", "SchemaName": "s", "TableName": "t", "Name": "symbol", "Label": "symbol",
                     "Type": "varchar", "Precision": 0, "Scale": 0, "Nullable": "NULLABLE", "CaseSensitive": True},
                    {"CatalogName": "c", "SchemaName": "s", "TableName": "t", "Name": "n", "Label": "n",
                     "Type": "bigint", "Precision": 19, "Scale": 0, "Nullable": "NULLABLE", "CaseSensitive": False},
                ],
            }
        ],
    }  # fmt: skip
    req = urllib.request.Request(
        f"{endpoint}/moto-api/static/athena/query-results", data=json.dumps(seeded).encode(), method="POST"
    )
    urllib.request.urlopen(req, timeout=10).close()
    env = {**env, "WR_ATHENA_ENDPOINT_URL": endpoint}
    query = "SELECT symbol, count(*) AS n FROM trades GROUP BY symbol"
    res = svoe("lake", "sql", "s3://svoe-lake/x", query, "--athena", "primary", "--database", "svoe_db",
               "--json", env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == [{"symbol": "BTC-USDT", "n": 6}]
    athena = boto3.client("athena", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    ran = [athena.get_query_execution(QueryExecutionId=q)["QueryExecution"]["Query"]
           for q in athena.list_query_executions()["QueryExecutionIds"]]  # fmt: skip
    assert any(q.startswith('WITH "trades" AS (SELECT') and q.endswith(query) for q in ran), ran
    missing = svoe("lake", "sql", "s3://svoe-lake/x", query, "--athena", "primary", env=env)
    assert missing.returncode == 2 and "--database" in missing.stderr
