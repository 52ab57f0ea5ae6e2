"""The emulator's API-server manners that kopf, kubectl and the e2e tests rely on."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from svoe.testing.kube import CONFIGMAPS, PODS, ApiError, KubeEmulator


@pytest.fixture(scope="module")
def k() -> Iterator[KubeEmulator]:
    with KubeEmulator() as kube:
        yield kube


def cm(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"a": "1"}}


def test_create_assigns_identity_and_generate_name(k: KubeEmulator) -> None:
    a = k.create(CONFIGMAPS, cm("a"), "e1")
    assert a["metadata"]["uid"] and a["metadata"]["creationTimestamp"] and a["metadata"]["generation"] == 1
    b = k.create(CONFIGMAPS, {"metadata": {"generateName": "gen-"}, "data": {}}, "e1")
    assert b["metadata"]["name"].startswith("gen-") and len(b["metadata"]["name"]) == 9
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as err:
        k.create(CONFIGMAPS, cm("a"), "e1")
    assert err.value.code == 409 and err.value.reason == "AlreadyExists"
    listing = k.request("GET", k.path(CONFIGMAPS, "e1"))
    assert listing["kind"] == "ConfigMapList" and listing["apiVersion"] == "v1"
    assert listing["metadata"]["resourceVersion"]


def test_patches_bump_versions_and_json_patch_tests_are_422(k: KubeEmulator) -> None:
    a = k.create(CONFIGMAPS, cm("p"), "e2")
    rv = a["metadata"]["resourceVersion"]
    b = k.patch(CONFIGMAPS, "e2", "p", {"data": {"b": "2", "a": None}})
    assert b["data"] == {"b": "2"} and b["metadata"]["resourceVersion"] != rv
    assert b["metadata"]["generation"] == 2, "a data change is a spec change"
    c = k.patch(CONFIGMAPS, "e2", "p", {"metadata": {"labels": {"x": "y"}}})
    assert c["metadata"]["generation"] == 2, "metadata changes keep the generation"
    same = k.patch(CONFIGMAPS, "e2", "p", {"metadata": {"labels": {"x": "y"}}})
    assert same["metadata"]["resourceVersion"] == c["metadata"]["resourceVersion"], "no-op patches change nothing"
    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/data/c", "value": "3"},
    ]
    with pytest.raises(ApiError) as err:
        k.patch(CONFIGMAPS, "e2", "p", stale, content_type="application/json-patch+json")
    assert err.value.code == 422
    with pytest.raises(ApiError) as err:
        k.patch(CONFIGMAPS, "e2", "p", {"metadata": {"resourceVersion": rv}, "data": {"c": "3"}})
    assert err.value.code == 409


def test_status_subresource_and_finalizers(k: KubeEmulator) -> None:
    pod = {"metadata": {"name": "p", "finalizers": ["x/y"]}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    created = k.create(PODS, pod, "e3")
    assert created["status"]["phase"] == "Pending"
    k.patch(PODS, "e3", "p", {"status": {"phase": "Running"}})
    assert k.get(PODS, "e3", "p")["status"]["phase"] == "Pending", "status changes only through /status"
    k.set_pod_ready("e3", "p")
    assert k.get(PODS, "e3", "p")["status"]["phase"] == "Running"
    k.delete(PODS, "e3", "p")
    assert k.get(PODS, "e3", "p")["metadata"]["deletionTimestamp"], "held by its finalizer"
    k.patch(PODS, "e3", "p", {"metadata": {"finalizers": None}})
    assert k.try_get(PODS, "e3", "p") is None


def test_owner_references_are_garbage_collected(k: KubeEmulator) -> None:
    owner = k.create(CONFIGMAPS, cm("owner"), "e4")
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    k.create(CONFIGMAPS, {**cm("child"), "metadata": {"name": "child", "ownerReferences": [ref]}}, "e4")
    k.delete(CONFIGMAPS, "e4", "owner")
    assert k.try_get(CONFIGMAPS, "e4", "child") is None


def _watch(k: KubeEmulator, path: str, events: list[dict[str, Any]], started: threading.Event, n: int) -> None:
    url = urlparse(k.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.getheader("Content-Type", "").startswith("application/json")
    started.set()
    while len(events) < n:
        line = resp.readline()
        if not line:
            break
        events.append(json.loads(line))
    conn.close()


def test_watch_streams_json_with_selectors_and_resumes_from_a_version(k: KubeEmulator) -> None:
    k.create(CONFIGMAPS, cm("w1", app="x"), "e5")
    events: list[dict[str, Any]] = []
    started = threading.Event()
    path = k.path(CONFIGMAPS, "e5") + "?watch=true&labelSelector=app%3Dx"
    t = threading.Thread(target=_watch, args=(k, path, events, started, 4))
    t.start()
    started.wait(5)
    k.create(CONFIGMAPS, cm("w2", app="y"), "e5")  # not selected
    k.patch(CONFIGMAPS, "e5", "w2", {"metadata": {"labels": {"app": "x"}}})  # enters the selection
    k.patch(CONFIGMAPS, "e5", "w1", {"metadata": {"labels": {"app": "z"}}})  # leaves it
    k.create(CONFIGMAPS, cm("w3", app="x"), "e5")
    t.join(10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w1"),
        ("ADDED", "w2"),
        ("DELETED", "w1"),
        ("ADDED", "w3"),
    ]
    # Resuming from the version of the second event replays only what came after it.
    since = events[1]["object"]["metadata"]["resourceVersion"]
    replay: list[dict[str, Any]] = []
    path = k.path(CONFIGMAPS, "e5") + f"?watch=true&labelSelector=app%3Dx&resourceVersion={since}"
    t = threading.Thread(target=_watch, args=(k, path, replay, threading.Event(), 2))
    t.start()
    t.join(10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in replay] == [("DELETED", "w1"), ("ADDED", "w3")]


def test_tables_for_kubectl(k: KubeEmulator) -> None:
    k.create(CONFIGMAPS, cm("t1"), "e6")
    import urllib.request

    req = urllib.request.Request(
        k.url + k.path(CONFIGMAPS, "e6"), headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    )
    with urllib.request.urlopen(req) as r:
        table = json.loads(r.read())
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"][0] == "t1"
