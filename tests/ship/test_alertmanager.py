"""The Alertmanager config of helmfile.d/values/alertmanager.yaml.gotmpl, run in the real alertmanager.

The config is rendered per environment exactly as helmfile renders it. The copy the test runs
differs from it only where the test environment forces it:
- timings: group_wait/group_interval shortened, so a test takes seconds, not minutes;
- `templates:` points at the rendered template files in a temporary directory instead of the
  kube-prometheus-stack mount /etc/alertmanager/config;
- telegram `api_url` points at a local fake Telegram API;
- `bot_token_file` becomes `bot_token` with the content of a token file the test writes: Debian's
  alertmanager is 0.25, and bot_token_file arrived in 0.26 (kube-prometheus-stack 69 ships 0.28).
Routing, grouping, inhibition, receivers, chats and message templates are the production ones.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from svoe.net import free_port
from tests.ship.conftest import tool
from tests.ship.helmfile_state import ClusterState, cluster_states

AM_VALUES = "alertmanager.yaml.gotmpl"
TOKEN = "123456:TEST-token_for-the-fake-api"


def kps_alertmanager(state: ClusterState) -> dict[str, Any]:
    kps = state.release("kube-prometheus-stack")
    (f,) = [f for f in kps.values_files if f.name == AM_VALUES]
    return dict(state.render_values(f)["alertmanager"])


def receivers(config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {r["name"]: r.get("telegram_configs", []) for r in config["receivers"]}


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_rendered_config_is_what_production_needs(env: str) -> None:
    for state in cluster_states(env):
        am = kps_alertmanager(state)
        config = am["config"]
        secret = state.values["alerting"]["telegram"]["botTokenSecret"]
        assert am["alertmanagerSpec"]["secrets"] == [secret]
        chats = state.values["alerting"]["telegram"]["chatIds"]
        recv = receivers(config)
        for severity in ("critical", "warning"):
            (tg,) = recv[f"telegram-{severity}"]
            assert tg["chat_id"] == chats[severity] and isinstance(tg["chat_id"], int)
            # The token is a file of the mounted Secret, never a literal in the config.
            assert "bot_token" not in tg
            assert (
                tg["bot_token_file"]
                == f"/etc/alertmanager/secrets/{secret}/{state.values['alerting']['telegram']['botTokenKey']}"
            )
            assert tg["message"] == '{{ template "svoe.telegram.message" . }}'
        assert config["templates"] == ["/etc/alertmanager/config/*.tmpl"]
        assert set(am["templateFiles"]) == {"svoe-telegram.tmpl", "svoe-runbook-base.tmpl"}
        assert (
            am["templateFiles"]["svoe-telegram.tmpl"]
            == (Path(__file__).resolve().parents[2] / "monitoring" / "alertmanager" / "telegram.tmpl").read_text()
        )
    prod = {s.cluster["name"]: s for s in cluster_states("prod")}
    chats = prod["prod-eu-1"].values["alerting"]["telegram"]["chatIds"]
    assert chats["critical"] != chats["warning"], "prod needs a chat per severity"


def runnable_config(state: ClusterState, workdir: Path, api_url: str) -> Path:
    """Write the runnable copy of the rendered config (see the module docstring for the overrides)."""
    am = kps_alertmanager(state)
    config = copy.deepcopy(am["config"])

    def shorten(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "2s"), ("repeat_interval", "1h")):
            if key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    tmpl_dir = workdir / "templates"
    tmpl_dir.mkdir()
    for name, text in am["templateFiles"].items():
        (tmpl_dir / name).write_text(text)
    config["templates"] = [str(tmpl_dir / "*.tmpl")]
    token_file = workdir / "bot-token"  # stands in for the mounted Secret
    token_file.write_text(TOKEN)
    for r in config["receivers"]:
        for tg in r.get("telegram_configs", []):
            tg["api_url"] = api_url
            del tg["bot_token_file"]
            tg["bot_token"] = token_file.read_text()
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class FakeTelegram:
    """Records POST /bot<TOKEN>/sendMessage like api.telegram.org and answers like it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.bad: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("application/json"):
                    payload = json.loads(body)
                else:
                    payload = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
                m = re.fullmatch(r"/bot(?P<token>[^/]+)/(?P<method>\w+)", self.path)
                if not m or m["token"] != TOKEN:
                    fake.bad.append(self.path)
                    self._answer(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                    return
                if m["method"] == "getMe":
                    self._answer(
                        200,
                        {"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "svoe", "username": "svoe_bot"}},
                    )
                    return
                if m["method"] != "sendMessage":
                    fake.bad.append(self.path)
                    self._answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                    return
                fake.messages.append(payload)
                chat = int(payload["chat_id"])
                self._answer(
                    200,
                    {
                        "ok": True,
                        "result": {
                            "message_id": len(fake.messages),
                            "date": int(time.time()),
                            "chat": {"id": chat, "type": "supergroup", "title": "svoe"},
                            "text": payload.get("text", ""),
                        },
                    },
                )

            def _answer(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeTelegram:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as t:
        yield t


def start_alertmanager(config: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (workdir / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"alertmanager exited: {(workdir / 'alertmanager.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("alertmanager did not become ready")


def alert(alertname: str, severity: str, summary: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": alertname, "severity": severity, "system": "svoe", **labels},
        "annotations": {
            "summary": summary,
            "description": f"{alertname} test description <&>",
            "runbook_url": f"docs/runbooks.md#{alertname.lower()}",
        },
        "startsAt": datetime.now(UTC).isoformat(),
        "generatorURL": "http://prometheus.test/graph",
    }


def post(url: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(
        url + "/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def test_amtool_accepts_the_runnable_configs(tmp_path: Path) -> None:
    for env in ("dev", "prod"):
        for state in cluster_states(env):
            work = tmp_path / f"{env}-{state.cluster['name']}"
            work.mkdir()
            cfg = runnable_config(state, work, "http://127.0.0.1:9")
            proc = subprocess.run(
                [tool("amtool"), "check-config", str(cfg)], capture_output=True, text=True, check=False
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "1 inhibit rules" in proc.stdout and "1 templates" in proc.stdout and "3 receivers" in proc.stdout


def test_telegram_routing_grouping_inhibition_and_text(tmp_path: Path, telegram: FakeTelegram) -> None:
    state = next(s for s in cluster_states("prod") if "feed" in s.cluster["roles"])
    chats = state.values["alerting"]["telegram"]["chatIds"]
    base = state.values["alerting"]["runbookBaseUrl"]
    cfg = runnable_config(state, tmp_path, telegram.url)
    proc, url = start_alertmanager(cfg, tmp_path)
    try:
        binance = {"namespace": "md", "datafeed": "binance", "exchange": "BINANCE"}
        kraken = {"namespace": "md", "datafeed": "kraken", "exchange": "KRAKEN", "shard": "0"}
        # The inhibitor first: the whole shard 0 of binance is down.
        post(url, [alert("FeedDisconnected", "critical", "BINANCE feed binance is disconnected", shard="0", **binance)])
        time.sleep(0.5)
        post(
            url,
            [
                # Consequences of the disconnect: inhibited.
                alert(
                    "NoDataForSymbol",
                    "warning",
                    "No BINANCE data for BTC-USDT",
                    shard="0",
                    symbol="BTC-USDT",
                    **binance,
                ),
                alert(
                    "SequenceGaps",
                    "warning",
                    "Sequence gaps in BINANCE ETH-USDT",
                    shard="0",
                    symbol="ETH-USDT",
                    **binance,
                ),
                # Another shard of the same feed is connected: its alert is news.
                alert(
                    "NoDataForSymbol",
                    "warning",
                    "No BINANCE data for SOL-USDT",
                    shard="1",
                    symbol="SOL-USDT",
                    **binance,
                ),
                # Two alerts of one group (kraken/KRAKEN): one message.
                alert("NoDataForSymbol", "warning", "No KRAKEN data for XBT-USD", symbol="XBT-USD", **kraken),
                alert("NoDataForSymbol", "warning", "No KRAKEN data for ETH-USD", symbol="ETH-USD", **kraken),
                alert("FlushFailing", "critical", "Lake writes failing for KRAKEN trades", channel="trades", **kraken),
            ],
        )
        # Not a svoe alert: routed to the null receiver.
        other = alert("KubeNodeNotReady", "critical", "node down", node="n1")
        del other["labels"]["system"]
        post(url, [other])

        deadline = time.monotonic() + 20
        while len(telegram.messages) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # > group_wait + group_interval: anything inhibited or misrouted would have arrived
    finally:
        proc.terminate()
        proc.wait(10)
    log = (tmp_path / "alertmanager.log").read_text()
    assert not telegram.bad, telegram.bad
    msgs = telegram.messages
    assert len(msgs) == 4, f"expected 4 messages, got {json.dumps(msgs, indent=1)}\n{log[-3000:]}"

    def sent_to(chat: int) -> list[str]:
        return sorted(m["text"] for m in msgs if int(m["chat_id"]) == chat)

    critical, warning = sent_to(chats["critical"]), sent_to(chats["warning"])
    assert len(critical) == 2 and len(warning) == 2
    for m in msgs:
        assert m["parse_mode"] == "HTML"
        silent = str(m.get("disable_notification", "false")).lower() == "true"
        assert silent == (int(m["chat_id"]) == chats["warning"]), "warnings are silent, critical alerts ring"

    everything = "\n".join(m["text"] for m in msgs)
    assert "BTC-USDT" not in everything and "SequenceGaps" not in everything, "inhibited alerts were sent"
    assert "node down" not in everything and "KubeNodeNotReady" not in everything

    (disconnected,) = [t for t in critical if "FeedDisconnected" in t]
    assert "[FIRING:1] svoe binance BINANCE" in disconnected
    assert "feed: md/binance (shard 0)" in disconnected
    assert "exchange: BINANCE" in disconnected
    assert "symbol: -" in disconnected
    assert f'<a href="{base}docs/runbooks.md#feeddisconnected">' in disconnected
    assert "FeedDisconnected test description &lt;&amp;&gt;" in disconnected  # escaped for parse_mode HTML

    (flush,) = [t for t in critical if "FlushFailing" in t]
    assert "channel: trades" in flush and "exchange: KRAKEN" in flush

    (grouped,) = [t for t in warning if "kraken" in t]
    assert "[FIRING:2] svoe kraken KRAKEN" in grouped
    assert "symbol: XBT-USD" in grouped and "symbol: ETH-USD" in grouped
    assert grouped.count(f"{base}docs/runbooks.md#nodataforsymbol") == 2 * 2  # href and visible text, per alert

    (other_shard,) = [t for t in warning if "binance" in t]
    assert "symbol: SOL-USDT" in other_shard and "feed: md/binance (shard 1)" in other_shard

    # Telegram's HTML mode accepts only a few tags; ours must be balanced <b> and <a href>.
    for m in msgs:
        tags = re.findall(r"<(/?)(\w+)([^>]*)>", m["text"])
        assert {t[1] for t in tags} <= {"b", "a"}, tags
        assert sum(1 for t in tags if not t[0]) == sum(1 for t in tags if t[0])
