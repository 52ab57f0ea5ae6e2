"""Fixtures for the operator tests: the emulated API server and the real operator process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from svoe.api.crd import crd
from svoe.api.crd_featureset import featureset_crd
from svoe.testing.kube import EVENTS, PODS, KubeEmulator
from svoe.testing.operator import OperatorProcess

DATAFEEDS = ("svoe.io", "v1alpha1", "datafeeds")
FEATURESETS = ("svoe.io", "v1alpha1", "featuresets")


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeEmulator]:
    # No garbage collector: children must be removed by the operator itself, not by the emulator.
    with KubeEmulator(garbage_collection=False) as k:
        k.apply_crd(crd())
        k.apply_crd(featureset_crd())
        yield k


@pytest.fixture(scope="module")
def operator(kube: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kube, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()


@pytest.fixture
def alive_operator(operator: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """The module's operator, restarted if a previous test stopped it; its log is shown on failure."""
    if not operator.alive:
        operator.start()
    yield operator
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stderr.write(f"--- operator log ---\n{operator.log()[-8000:]}\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep


def datafeed(
    name: str, symbols: list[str], *, channels: list[str] | None = None, per_pod: int = 10, exchange: str = "BINANCE"
) -> dict[str, Any]:
    return {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "DataFeed",
        "metadata": {"name": name},
        "spec": {
            "exchange": exchange,
            "channels": channels or ["trades", "l2_book"],
            "symbols": symbols,
            "sharding": {"maxSymbolsPerPod": per_pod},
        },
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def has_condition(kube: KubeEmulator, ns: str, name: str, type_: str, value: str) -> dict[str, Any] | None:
    obj = kube.get(DATAFEEDS, ns, name)
    c = condition(obj, type_)
    return (
        obj
        if c is not None and c["status"] == value and c.get("observedGeneration") == obj["metadata"]["generation"]
        else None
    )


def pods_of(kube: KubeEmulator, ns: str, name: str) -> list[dict[str, Any]]:
    return kube.list(PODS, ns, f"svoe.io/datafeed={name}")


def mark_all_ready(kube: KubeEmulator, ns: str, name: str) -> list[str]:
    names = []
    for p in pods_of(kube, ns, name):
        if not any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])):
            kube.set_pod_ready(ns, p["metadata"]["name"])
        names.append(p["metadata"]["name"])
    return names


def event_reasons(kube: KubeEmulator, ns: str, name: str, *expected: str) -> list[str]:
    """The reasons of an object's events, once every `expected` one is among them: kopf posts
    events from a queue of its own, so one can arrive after the status change that caused it."""

    def reasons() -> list[str] | None:
        got = [e["reason"] for e in kube.list(EVENTS, ns) if e.get("involvedObject", {}).get("name") == name]
        return got if set(expected) <= set(got) else None

    return kube.wait_for(reasons, what=f"events {', '.join(expected)} of {name}") if expected else reasons() or []
