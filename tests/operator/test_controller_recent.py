"""The controller's own writes stand in for a watch cache that lags behind (Controller._merge)."""

from __future__ import annotations

import pytest

from svoe.operator import controller as controller_module
from svoe.operator.config import OperatorConfig
from svoe.operator.controller import RECENT_TTL, Controller
from svoe.operator.observe import observe
from svoe.operator.plan import Change

KEY = ("md", "demo")
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demo-0", "namespace": "md", "uid": "u1",
                                                       "resourceVersion": "7"}}  # fmt: skip


def test_a_created_pod_stays_in_view_while_the_watch_is_half_a_minute_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(controller_module.time, "monotonic", lambda: now[0])
    ctrl = Controller(OperatorConfig(feed_image="img"))
    ctrl._remember(KEY, Change("create", "Pod", "demo-0", POD), POD)
    now[0] += 30  # the watch has still not delivered the pod: a plan now must not create it again
    assert [o.name for o in ctrl._merge(KEY, [])] == ["demo-0"]
    now[0] += RECENT_TTL  # a watch that never shows it (the pod is gone): the cache is believed again
    assert ctrl._merge(KEY, []) == []


def test_the_cache_replaces_the_remembered_write_once_it_shows_it() -> None:
    ctrl = Controller(OperatorConfig(feed_image="img"))
    ctrl._remember(KEY, Change("create", "Pod", "demo-0", POD), POD)
    newer = observe({**POD, "metadata": {"name": "demo-0", "namespace": "md", "uid": "u1", "resourceVersion": "9"}})
    assert ctrl._merge(KEY, [newer]) == [newer]
    assert ctrl._recent[KEY] == {}
