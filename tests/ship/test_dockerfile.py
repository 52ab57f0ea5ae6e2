"""The Dockerfile: checkov, the stage layout, and its uv steps run for real.

No Docker engine exists here, so the image is not built. What can be exercised without one is:
checkov's Dockerfile policies; the structure (base image, non-root user, no compilers in the
runtime stages, entry points of docs/contracts.md, accepted by the real CLI parser); and the
builder's two `uv sync` commands, run verbatim against a copy of the build context (the
.dockerignore allowlist) into a fresh virtualenv, which must then provide the `svoe` entry point.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from svoe.api.contract import AGGREGATOR_PORT, COLLECTOR_PORT, HEALTHZ_PATH, LIVE_PORT
from tests.ship.conftest import ROOT, run_checkov
from tests.ship.test_chart import parse_cli

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cython|uv|pip install)\b")


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name: (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"(\S+)\s+AS\s+(\S+)", args, re.I)
            assert m, f"every stage is named: {line}"
            current = m.group(2)
            out[current] = [("FROM", m.group(1))]
        else:
            out[current].append((instr, args.strip()))
    return out


def contract_commands() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "contracts.md").read_text()
    cmds = {}
    for m in re.finditer(r"^\| (\w+) \| `([^`]+)`", text, re.M):
        cmds[m.group(1)] = shlex.split(m.group(2))
    return cmds


def test_checkov_passes_on_the_dockerfile() -> None:
    report = run_checkov(DOCKERFILE, "dockerfile")
    failed = report["results"]["failed_checks"]
    assert not failed, "\n".join(f"{f['check_id']} {f['check_name']}" for f in failed)
    assert not report["results"]["skipped_checks"]
    assert report["summary"]["passed"] > 50


def test_stage_layout() -> None:
    st = stages()
    assert {"builder", "operator", "feedpod"} <= set(st)
    for name, instrs in st.items():
        base = instrs[0][1]
        assert base.startswith("python:3.13-slim") or base in st, f"{name} starts from {base}"
    for target in ("operator", "feedpod"):
        chain, name = [], target
        while name in st:
            chain.append(name)
            name = st[name][0][1]
        assert "builder" not in chain, f"{target} must not inherit the builder stage"
        instrs = [i for n in chain for i in st[n]]
        users = [a for i, a in instrs if i == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{target} runs as root"
        for i, a in instrs:
            if i == "RUN":
                assert not BUILD_TOOLS.search(a), f"{target}: build tooling in a runtime stage: {a}"
        copies = [a for i, a in instrs if i == "COPY"]
        assert any(a.startswith("--from=builder ") for a in copies)
        assert not [a for a in copies if not a.startswith("--from=")], f"{target} copies sources: {copies}"
    builder = " ".join(a for i, a in st["builder"] if i == "RUN")
    assert "uv sync --frozen --no-dev" in builder


def test_entry_points_follow_the_contract() -> None:
    st = stages()

    def argv(target: str) -> list[str]:
        instrs = dict(reversed([(i, a) for n in (target, st[target][0][1]) if n in st for i, a in st[n]]))
        return json.loads(instrs["ENTRYPOINT"]) + json.loads(instrs["CMD"])

    contract = contract_commands()
    assert argv("feedpod") == contract["collector"], "the feedpod default is the collector of docs/contracts.md"
    assert contract["aggregator"][0] == "svoe" and contract["redis"][0] == "redis-server"
    feed_run = " ".join(a for i, a in st["feedpod"] if i == "RUN")
    assert "redis-server" in feed_run, "the feedpod image carries redis-server for the redis container"
    feed_instrs = dict(st["feedpod"])
    assert set(feed_instrs["EXPOSE"].split()) == {str(p) for p in (COLLECTOR_PORT, AGGREGATOR_PORT, LIVE_PORT)}
    assert f"127.0.0.1:{COLLECTOR_PORT}{HEALTHZ_PATH}" in feed_instrs["HEALTHCHECK"]
    op = argv("operator")
    assert op[:2] == ["svoe", "operator"]
    for cmd in (op, contract["collector"], contract["aggregator"]):
        parse_cli(cmd[1:])


def test_builder_uv_steps_produce_a_working_venv(tmp_path: Path) -> None:
    if shutil.which("uv") is None:
        pytest.fail("uv is not installed; .ci/run installs it")
    st = stages()
    env_line = " ".join(a for i, a in st["builder"] if i == "ENV")
    docker_env = dict(re.findall(r"(\w+)=(\S+)", env_line))
    # The build context: what .dockerignore lets through.
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    allow = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert set(allow) == {"pyproject.toml", "uv.lock", "README.md", "svoe"}
    for name in allow:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, ctx / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        else:
            shutil.copy2(src, ctx / name)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env.update(docker_env)
    # Paths of the image replaced by this machine's; bytecode compilation and copying skipped
    # for speed (they change how files land, not what is installed).
    env.update(
        UV_PROJECT_ENVIRONMENT=str(venv), UV_PYTHON=sys.executable, UV_COMPILE_BYTECODE="0", UV_LINK_MODE="hardlink"
    )
    runs = [a for i, a in st["builder"] if i == "RUN" and "uv sync" in a]
    assert len(runs) == 2
    for run in runs:
        cmd = re.sub(r"--mount=\S+\s*", "", run).strip()
        proc = subprocess.run(
            cmd, shell=True, cwd=ctx, env=env, capture_output=True, text=True, check=False, timeout=300
        )
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    svoe = venv / "bin" / "svoe"
    assert svoe.exists()
    out = subprocess.run([str(svoe), "--help"], capture_output=True, text=True, check=False, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    for sub in ("operator", "collector", "aggregator", "run"):
        assert sub in out.stdout
    # Installed, not linked to the build context; no dev tools.
    assert not list(venv.glob("lib/python3.13/site-packages/*.pth")) or all(
        str(ctx) not in p.read_text() for p in venv.glob("lib/python3.13/site-packages/*.pth")
    )
    assert not (venv / "bin" / "pytest").exists() and not (venv / "bin" / "mypy").exists()
