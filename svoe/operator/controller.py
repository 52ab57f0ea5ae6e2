"""The I/O half of reconciliation: run a plan through the API, post events, write the status."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from svoe.api import contract
from svoe.api.datafeed import API_GROUP, API_VERSION, PLURAL, DataFeed
from svoe.operator import render
from svoe.operator.config import OperatorConfig
from svoe.operator.coordination import Coordination, Key
from svoe.operator.errors import ApiConflictError, ApiError, ApiNotFoundError
from svoe.operator.health import PodStats, parse_stats
from svoe.operator.kube import KubeClient
from svoe.operator.metrics import OperatorMetrics
from svoe.operator.observe import Observed, observe
from svoe.operator.parse import InvalidSpec, parse_resource, plain
from svoe.operator.plan import Change, Notice, plan, resolve_conflict
from svoe.operator.status import (
    assignment_notice,
    build_status,
    invalid_notice,
    invalid_status,
    status_changed,
    status_patch,
    transition_notices,
)

LOG = logging.getLogger(__name__)
JSON = dict[str, Any]
# How long a write of this operator stands in for what the watch cache does not show yet. The cache
# stays behind for longer than 15 s under load: with 500 DataFeeds created at once on two cores,
# 15 s let half the pods and a quarter of the configmaps and services be created twice (409s).
RECENT_TTL = 60.0


def parse_feed(body: kopf.Body) -> DataFeed:
    return parse_resource(DataFeed, body)


class Controller(Coordination):
    """State shared by the handlers: the API client, wake-up flags and locks per DataFeed."""

    def __init__(self, config: OperatorConfig, metrics: OperatorMetrics | None = None) -> None:
        super().__init__()
        self.config = config
        self.metrics = metrics or OperatorMetrics()
        self.client: KubeClient | None = None
        # What this operator just wrote, until the watch cache shows it (see `_merge`).
        self._recent: dict[Key, dict[tuple[str, str], tuple[float, Observed | None, str | None]]] = {}
        self._written: dict[Key, tuple[str, str, JSON]] = {}  # uid, resourceVersion, status
        # Health: the pods worth reading (from the last plan) and what they answered.
        self.serving: dict[Key, list[str]] = {}
        self.health: dict[Key, dict[str, PodStats]] = {}
        self.stats_port = contract.COLLECTOR_PORT

    def parse(self, doc: Mapping[str, Any], read_at: float) -> PodStats:
        return parse_stats(doc, read_at)

    def forget(self, key: Key) -> None:
        self.release(key)
        self._recent.pop(key, None)
        self._written.pop(key, None)
        self.serving.pop(key, None)
        self.health.pop(key, None)
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
        key = (namespace, name)
        generation = meta.get("generation")
        async with self.lock(key):
            previous = plain(body.get("status") or {})
            written = self._written.get(key)
            if written is not None and written[0] == uid and _newer_rv(written[1], str(meta.get("resourceVersion"))):
                # Our last status write has not come back through the watch yet: it is newer.
                previous = written[2]
            try:
                feed = parse_feed(body)
            except InvalidSpec as err:
                self._post(body, [invalid_notice(previous, str(err))])
                return await self._write_status(body, previous, invalid_status(previous, str(err), generation))

            p = plan(feed, uid, previous, self._merge(key, observed), self.config, time.time())
            # Recorded in the status after this pass. A crash before that loses nothing: the
            # assignment is a deterministic function of the recorded one and the spec (and,
            # without any status, of the pods' own symbol annotations).
            self._post(body, [assignment_notice(previous, p.assignment)])
            errors = await self._execute(body, namespace, uid, p.changes)
            self._post(body, p.notices)
            self.serving[key] = [r.pods[0] for s in p.shards for r in s.replicas if r.serving]
            health = self.health.setdefault(key, {})
            for gone in set(health) - set(self.serving[key]):
                del health[gone]
            status = build_status(p, previous, generation, errors, health, self.config.stale_after_seconds)
            self._post(body, transition_notices(previous, status))
            return await self._write_status(body, previous, status)

    def _post(self, body: kopf.Body, notices: Iterable[Notice | None]) -> None:
        for n in notices:
            if n is not None:
                kopf.event(body, type="Warning" if n.warning else "Normal", reason=n.reason, message=n.message)

    def _remember(self, key: Key, c: Change, result: JSON | None) -> None:
        entry = (time.monotonic(), observe(result) if result is not None else None, c.uid)
        self._recent.setdefault(key, {})[(c.kind, c.name)] = entry

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
        patch = status_patch(previous, status)
        try:
            result = await self.api().patch_status(f"{API_GROUP}/{API_VERSION}", PLURAL, namespace, name, patch)
        except ApiNotFoundError:  # deleted meanwhile
            return status
        rv = str(result.get("metadata", {}).get("resourceVersion"))
        self._written[(namespace, name)] = (str(meta["uid"]), rv, status)
        return status

    async def _execute(self, body: kopf.Body, namespace: str, uid: str, changes: list[Change]) -> list[str]:
        """Creates of configmaps/services, then pods, then patches, then deletes; each group concurrently."""
        errors: list[str] = []
        stages = [
            [c for c in changes if c.verb == "create" and c.kind != "Pod"],
            [c for c in changes if c.verb == "create" and c.kind == "Pod"],
            [c for c in changes if c.verb == "patch"],
            [c for c in changes if c.verb == "delete"],
        ]
        for group in (g for g in stages if g):
            results = await asyncio.gather(
                *(self._apply(body, namespace, uid, c) for c in group), return_exceptions=True
            )
            for change, result in zip(group, results, strict=True):
                if isinstance(result, ApiError):
                    LOG.warning("%s %s %s/%s failed: %s", change.verb, change.kind, namespace, change.name, result)
                    errors.append(f"{change.verb} {change.kind.lower()} {change.name}: {result.message or result}")
                elif isinstance(result, BaseException):
                    raise result
        if errors:
            self._post(body, [Notice("ReconcileError", "; ".join(errors)[:1024], warning=True)])
        return errors

    async def _apply(self, body: kopf.Body, namespace: str, uid: str, c: Change, follow_up: bool = False) -> None:
        api = self.api()
        key = (namespace, str(body["metadata"]["name"]))
        if c.verb == "create":
            assert c.body is not None
            try:
                self._remember(key, c, await api.create(c.body))
            except ApiConflictError:
                if follow_up:
                    raise
                try:
                    existing: Observed | None = observe(await api.get(c.kind, namespace, c.name))
                except ApiNotFoundError:
                    existing = None
                fixes, error = resolve_conflict(c, existing, uid, key[1])
                if error is not None:
                    raise ApiConflictError(409, "AlreadyExists", error) from None
                for fix in fixes:
                    await self._apply(body, namespace, uid, fix, follow_up=True)
                return
        elif c.verb == "patch":
            assert c.body is not None
            self._remember(key, c, await api.patch(c.kind, namespace, c.name, c.body))
        else:
            try:
                await api.delete(c.kind, namespace, c.name, uid=c.uid, grace_seconds=c.grace_seconds)
            except ApiConflictError:  # uid precondition: the namesake is a new object; leave it
                return
            self._remember(key, c, None)
        self._post(body, [c.notice])

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
