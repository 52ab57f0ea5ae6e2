"""The I/O half of reconciliation: run a plan through the API, post events, write the status."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from svoe.api.datafeed import API_GROUP, API_VERSION, KIND, PLURAL, DataFeed
from svoe.api.load import format_validation_error
from svoe.operator import render
from svoe.operator.config import OperatorConfig
from svoe.operator.errors import ApiConflictError, ApiError, ApiNotFoundError
from svoe.operator.kube import KubeClient
from svoe.operator.metrics import OperatorMetrics
from svoe.operator.reconcile import (
    Action,
    Observed,
    build_status,
    condition,
    content_digest,
    invalid_status,
    meta_drift,
    observe,
    plan,
    restore_patch,
    status_changed,
)

LOG = logging.getLogger(__name__)
JSON = dict[str, Any]
RECENT_TTL = 15.0
Key = tuple[str, str]


def plain(value: Any) -> Any:
    """kopf's body views -> plain JSON data."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class InvalidSpec(ValueError):
    """A DataFeed whose spec does not validate; the message names the fields and what is allowed."""


def parse_feed(body: kopf.Body) -> DataFeed:
    """The DataFeed; InvalidSpec when its spec does not validate."""
    meta = body.get("metadata") or {}
    doc = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": plain(body.get("spec") or {}),
    }
    try:
        return DataFeed.model_validate(doc)
    except ValidationError as err:
        raise InvalidSpec(format_validation_error(err).replace("\n", "; ")) from None


class Controller:
    """State shared by the handlers: the API client, wake-up flags and locks per DataFeed."""

    def __init__(self, config: OperatorConfig, metrics: OperatorMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or OperatorMetrics()
        self.client: KubeClient | None = None
        self._wakeups: dict[Key, asyncio.Event] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        # What this operator just wrote, until the watch cache shows it (see `_merge`).
        self._recent: dict[Key, dict[tuple[str, str], tuple[float, Observed | None, str | None]]] = {}
        self._written: dict[Key, tuple[str, str, JSON]] = {}  # uid, resourceVersion, status

    # -- coordination --------------------------------------------------------------------------

    def wakeup(self, key: Key) -> asyncio.Event:
        ev = self._wakeups.get(key)
        if ev is None:
            ev = self._wakeups[key] = asyncio.Event()
        return ev

    def wake(self, namespace: str | None, name: str | None) -> None:
        if namespace and name:
            self.wakeup((namespace, name)).set()

    def lock(self, key: Key) -> asyncio.Lock:
        lk = self._locks.get(key)
        if lk is None:
            lk = self._locks[key] = asyncio.Lock()
        return lk

    def forget(self, key: Key) -> None:
        self._wakeups.pop(key, None)
        self._locks.pop(key, None)
        self._recent.pop(key, None)
        self._written.pop(key, None)
        self.metrics.forget(*key)

    def api(self) -> KubeClient:
        if self.client is None:
            raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
        return self.client

    # -- reconcile ------------------------------------------------------------------------------

    async def reconcile(self, body: kopf.Body, observed: Iterable[Observed]) -> JSON:
        """One level-triggered pass for one DataFeed. Returns the status it wrote (or kept)."""
        meta = body.get("metadata") or {}
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        generation = meta.get("generation")
        async with self.lock((namespace, name)):
            previous = plain(body.get("status") or {})
            written = self._written.get((namespace, name))
            if written is not None and written[0] == uid and _newer_rv(written[1], str(meta.get("resourceVersion"))):
                # Our last status write has not come back through the watch yet: it is newer.
                previous = written[2]
            try:
                feed = parse_feed(body)
            except InvalidSpec as err:
                message = str(err)
                status = invalid_status(previous, message, generation)
                old = condition(previous, "InvalidSpec")
                if not old or old.get("status") != "True" or old.get("message") != message:
                    kopf.event(body, type="Warning", reason="InvalidSpec", message=f"{message}; no pods are created")
                return await self._write_status(body, previous, status)

            p = plan(feed, uid, previous, self._merge((namespace, name), observed), self.config)
            recorded = {int(s["index"]): tuple(s.get("symbols") or ()) for s in previous.get("shards") or []}
            if recorded != p.assignment:
                # Recorded in the status after this pass. A crash before that loses nothing: the
                # assignment is a deterministic function of the recorded one and the spec (and,
                # without any status, of the pods' own symbol annotations).
                kopf.event(body, type="Normal", reason="ShardsAssigned", message=_describe(p.assignment))
            errors = await self._execute(body, namespace, uid, p.actions)
            for ev in p.events:
                kopf.event(body, type="Normal", reason=ev.reason, message=ev.message)
            status = build_status(p, previous, generation, errors)
            self._transition_events(body, previous, status)
            return await self._write_status(body, previous, status)

    def _remember(self, key: Key, a: Action, result: JSON | None) -> None:
        entry = (time.monotonic(), observe(result) if result is not None else None, a.uid)
        self._recent.setdefault(key, {})[(a.kind, a.name)] = entry

    def _merge(self, key: Key, cached: Iterable[Observed]) -> list[Observed]:
        """The watch cache, corrected by this operator's own writes it does not show yet.

        Without this, a pass that runs before the watch delivers the pass before's creations
        would create them again (and get AlreadyExists), or delete what is already gone.
        """
        by_name = {(o.kind, o.name): o for o in cached}
        recent = self._recent.get(key)
        if not recent:
            return list(by_name.values())
        now = time.monotonic()
        for k, (at, obs, gone_uid) in list(recent.items()):
            current = by_name.get(k)
            if now - at > RECENT_TTL:
                del recent[k]
            elif obs is not None:
                if current is not None and (current.uid != obs.uid or not _older(current, obs)):
                    del recent[k]  # the cache caught up (or moved past it)
                else:
                    by_name[k] = obs
            elif current is None or current.uid != gone_uid:
                del recent[k]
            else:
                del by_name[k]
        return list(by_name.values())

    async def _write_status(self, body: kopf.Body, previous: Mapping[str, Any], status: JSON) -> JSON:
        meta = body.get("metadata") or {}
        namespace, name = str(meta["namespace"]), str(meta["name"])
        self.metrics.record_status(namespace, name, status)
        if not status_changed(previous, status):
            return dict(previous)
        try:
            result = await self.api().patch_status(f"{API_GROUP}/{API_VERSION}", PLURAL, namespace, name, status)
        except ApiNotFoundError:  # deleted meanwhile
            return status
        rv = str(result.get("metadata", {}).get("resourceVersion"))
        self._written[(namespace, name)] = (str(meta["uid"]), rv, status)
        return status

    def _transition_events(self, body: kopf.Body, previous: Mapping[str, Any], status: JSON) -> None:
        before = condition(previous, "Ready")
        after = condition(status, "Ready")
        if after is None:
            return
        was = before is not None and before.get("status") == "True"
        now = after.get("status") == "True"
        if now and not was:
            kopf.event(body, type="Normal", reason="Ready", message=str(after.get("message")))
        elif was and not now:
            kopf.event(body, type="Warning", reason="NotReady", message=str(after.get("message")))
        deg_before = condition(previous, "Degraded")
        deg_after = condition(status, "Degraded")
        if (
            deg_after
            and deg_after.get("status") == "True"
            and (
                not deg_before
                or deg_before.get("status") != "True"
                or deg_before.get("reason") != deg_after.get("reason")
            )
        ):
            kopf.event(body, type="Warning", reason="Degraded", message=str(deg_after.get("message")))

    async def _execute(self, body: kopf.Body, namespace: str, uid: str, actions: list[Action]) -> list[str]:
        """Creates of configmaps/services, then pods, then patches, then deletes; each group concurrently."""
        errors: list[str] = []
        stages = [
            [a for a in actions if a.verb == "create" and a.kind != "Pod"],
            [a for a in actions if a.verb == "create" and a.kind == "Pod"],
            [a for a in actions if a.verb == "patch"],
            [a for a in actions if a.verb == "delete"],
        ]
        groups = [g for g in stages if g]
        for group in groups:
            results = await asyncio.gather(*(self._act(body, namespace, uid, a) for a in group), return_exceptions=True)
            for action, result in zip(group, results, strict=True):
                if isinstance(result, ApiError):
                    LOG.warning("%s %s %s/%s failed: %s", action.verb, action.kind, namespace, action.name, result)
                    errors.append(f"{action.verb} {action.kind.lower()} {action.name}: {result.message or result}")
                elif isinstance(result, BaseException):
                    raise result
        if errors:
            kopf.event(body, type="Warning", reason="ReconcileError", message="; ".join(errors)[:1024])
        return errors

    async def _act(self, body: kopf.Body, namespace: str, uid: str, a: Action) -> None:
        api = self.api()
        key = (namespace, str(body["metadata"]["name"]))
        if a.verb == "create":
            assert a.body is not None
            try:
                self._remember(key, a, await api.create(a.body))
            except ApiConflictError:
                await self._resolve_conflict(body, namespace, uid, a)
                return
        elif a.verb == "patch":
            assert a.body is not None
            self._remember(key, a, await api.patch(a.kind, namespace, a.name, a.body))
        else:
            try:
                await api.delete(a.kind, namespace, a.name, uid=a.uid)
            except ApiConflictError:  # uid precondition: the namesake is a new object; leave it
                return
            self._remember(key, a, None)
        kopf.event(body, type="Warning" if a.warning else "Normal", reason=a.reason, message=a.message)

    async def _resolve_conflict(self, body: kopf.Body, namespace: str, uid: str, a: Action) -> None:
        """Create said AlreadyExists: an object the watch cache does not show (yet) has the name."""
        assert a.body is not None
        api = self.api()
        try:
            existing = await api.get(a.kind, namespace, a.name)
        except ApiNotFoundError:
            return  # deleted meanwhile: the next pass creates it
        owners = existing.get("metadata", {}).get("ownerReferences") or []
        obs = observe(existing)
        if any(r.get("uid") == uid for r in owners):
            # Ours: either just created (cache lag) or its labels were removed, hiding it from the
            # watch. Restore what differs.
            if a.kind == "Pod":
                if obs.content != content_digest("Pod", a.body):
                    await api.delete("Pod", namespace, a.name, uid=obs.uid)
                    kopf.event(
                        body,
                        type="Warning",
                        reason="DriftRestored",
                        message=f"pod {a.name} was edited by hand; recreating",
                    )
                elif (m := meta_drift(obs, a.body)) is not None:
                    await api.patch("Pod", namespace, a.name, {"metadata": m})
                    kopf.event(body, type="Warning", reason="DriftRestored", message=f"labels of pod {a.name} restored")
            elif (patch := restore_patch(obs, a.body)) is not None:
                await api.patch(a.kind, namespace, a.name, patch)
                kopf.event(
                    body,
                    type="Warning",
                    reason="DriftRestored",
                    message=f"{a.kind.lower()} {a.name} was changed by hand; restored",
                )
            return
        if any(r.get("kind") == KIND and r.get("name") == body["metadata"]["name"] for r in owners):
            # Left over from an earlier DataFeed of the same name; the garbage collector would get
            # to it, but the name is needed now.
            await api.delete(a.kind, namespace, a.name, uid=obs.uid)
            kopf.event(
                body,
                type="Normal",
                reason="DeletedLeftover",
                message=f"deleted {a.kind.lower()} {a.name} of an earlier DataFeed with this name",
            )
            return
        raise ApiConflictError(
            409, "AlreadyExists", f"{a.kind.lower()} {a.name} exists and is not owned by this DataFeed"
        )

    async def cleanup(self, body: kopf.Body) -> int:
        """Delete every child of a DataFeed being deleted. Returns how many were deleted."""
        meta = body.get("metadata") or {}
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        api = self.api()
        selector = f"{render.MANAGED_SELECTOR},{render.L_DATAFEED}={name}"
        deleted = 0
        for kind in ("Pod", "Service", "ConfigMap"):
            for obj in await api.list(kind, namespace, selector):
                m = obj["metadata"]
                if not any(r.get("uid") == uid for r in m.get("ownerReferences") or []):
                    continue
                await api.delete(kind, namespace, m["name"], uid=m["uid"])
                deleted += 1
                kopf.event(
                    body,
                    type="Normal",
                    reason=f"Deleted{kind}",
                    message=f"deleted {kind.lower()} {m['name']}: the DataFeed is being deleted",
                )
        self.forget((namespace, name))
        return deleted


def _newer_rv(a: str, b: str) -> bool:
    """Whether resourceVersion `a` is newer than `b` (numeric, as every API server issues them)."""
    return a.isdigit() and b.isdigit() and int(a) > int(b)


def _older(a: Observed, b: Observed) -> bool:
    """Whether `a` is an older version of the same object than `b`."""
    if a.resource_version.isdigit() and b.resource_version.isdigit():
        return int(a.resource_version) < int(b.resource_version)
    return a.resource_version != b.resource_version


def _describe(assignment: Mapping[int, tuple[str, ...]]) -> str:
    text = json.dumps({str(k): list(v) for k, v in assignment.items()}, separators=(",", ":"))
    return f"{len(assignment)} shard(s): {text}"[:1024]
