"""The I/O half of a FeatureSet's reconciliation: run its plan through the API, post events,
read nothing itself (the source DataFeed and the children come from kopf's indexes), write the status."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from svoe.api import contract
from svoe.api.datafeed import API_GROUP, API_VERSION
from svoe.api.featureset import PLURAL, FeatureSet
from svoe.operator.controller import Controller
from svoe.operator.coordination import Coordination, Key
from svoe.operator.errors import ApiConflictError, ApiError, ApiNotFoundError
from svoe.operator.featureset_plan import FeatureSetPlan, plan_featureset, source_name
from svoe.operator.featureset_render import L_FEATURESET
from svoe.operator.featureset_status import blocked_notice, build_featureset_status
from svoe.operator.health import FeaturizerStats, parse_featurizer_stats
from svoe.operator.kube import KubeClient
from svoe.operator.observe import Observed, observe
from svoe.operator.parse import InvalidSpec, parse_resource, plain
from svoe.operator.plan import Change, Notice
from svoe.operator.render import MANAGED_SELECTOR
from svoe.operator.status import status_changed, status_patch, transition_notices

LOG = logging.getLogger(__name__)
JSON = dict[str, Any]
CHILD_KINDS = ("Deployment", "Service", "ConfigMap")


def post(body: kopf.Body, notices: Iterable[Notice | None]) -> None:
    for n in notices:
        if n is not None:
            kopf.event(body, type="Warning" if n.warning else "Normal", reason=n.reason, message=n.message)


class FeatureSetController(Coordination):
    """FeatureSets beside the DataFeed controller, whose API client, settings and metrics it shares."""

    def __init__(self, controller: Controller) -> None:
        super().__init__()
        self.base = controller
        self.config = controller.config
        self.metrics = controller.metrics
        # The featurizer pods worth reading (Ready ones, from the last pass) and what they answered.
        self.serving: dict[Key, list[str]] = {}
        self.health: dict[Key, dict[str, FeaturizerStats]] = {}
        self.stats_port = contract.FEATURIZER_PORT
        # (namespace, DataFeed) -> the FeatureSets reading it, so that a DataFeed event wakes them.
        self.readers: dict[Key, set[str]] = {}

    def parse(self, doc: Mapping[str, Any], read_at: float) -> FeaturizerStats:
        return parse_featurizer_stats(doc, read_at)

    def api(self) -> KubeClient:
        return self.base.api()

    def wake_readers(self, namespace: str | None, datafeed: str | None) -> None:
        for fs in sorted(self.readers.get((namespace or "", datafeed or ""), ())):
            self.wake(namespace, fs)

    def forget(self, key: Key) -> None:
        self.release(key)
        self.serving.pop(key, None)
        self.health.pop(key, None)
        for readers in self.readers.values():
            readers.discard(key[1])

    async def reconcile(self, body: kopf.Body, source: Mapping[str, Any] | None, observed: Iterable[Observed]) -> JSON:
        """One level-triggered pass for one FeatureSet. Returns the status it wrote (or kept)."""
        meta = body.get("metadata") or {}
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        key = (namespace, name)
        children = list(observed)
        async with self.lock(key):
            previous = plain(body.get("status") or {})
            fs: FeatureSet | None = None
            try:
                fs = parse_resource(FeatureSet, body)
            except InvalidSpec as err:
                p = FeatureSetPlan([], blocked="InvalidSpec", message=str(err))
                p.deployment = next((o for o in children if o.kind == "Deployment" and uid in o.owner_uids), None)
            if fs is not None:
                self._record_source(key, source_name(fs))
                p = plan_featureset(fs, uid, source, children, self.config)
            post(body, [blocked_notice(previous, p)])
            errors = await self._execute(body, namespace, uid, p.changes)
            self.serving[key] = [o.name for o in children if o.kind == "Pod" and o.ready and not o.deleting]
            health = self.health.setdefault(key, {})
            for gone in set(health) - set(self.serving[key]):
                del health[gone]
            stats = max(health.values(), key=lambda s: s.read_at, default=None)
            status = build_featureset_status(fs, p, previous, meta.get("generation"), stats, errors)
            post(body, transition_notices(previous, status))
            if status_changed(previous, status):
                try:
                    api_version = f"{API_GROUP}/{API_VERSION}"
                    await self.api().patch_status(api_version, PLURAL, namespace, name, status_patch(previous, status))
                except ApiNotFoundError:  # deleted meanwhile
                    pass
            return status

    def _record_source(self, key: Key, datafeed: str | None) -> None:
        for readers in self.readers.values():
            readers.discard(key[1])
        if datafeed is not None:
            self.readers.setdefault((key[0], datafeed), set()).add(key[1])

    async def _execute(self, body: kopf.Body, namespace: str, uid: str, changes: list[Change]) -> list[str]:
        """In order (the ConfigMap before the Deployment that mounts it); errors are reported, not raised."""
        errors: list[str] = []
        for c in changes:
            try:
                await self._apply(namespace, uid, c)
            except ApiError as e:
                LOG.warning("%s %s %s/%s failed: %s", c.verb, c.kind, namespace, c.name, e)
                errors.append(f"{c.verb} {c.kind.lower()} {c.name}: {e.message or e}")
                continue
            post(body, [c.notice])
        if errors:
            post(body, [Notice("ReconcileError", "; ".join(errors)[:1024], warning=True)])
        return errors

    async def _apply(self, namespace: str, uid: str, c: Change) -> None:
        api = self.api()
        assert c.body is not None
        if c.verb == "patch":
            await api.patch(c.kind, namespace, c.name, c.body)
            return
        try:
            await api.create(c.body)
        except ApiConflictError:
            # Ours already, created by a pass whose write the watch has not delivered yet: nothing to do.
            existing = observe(await api.get(c.kind, namespace, c.name))
            if uid not in existing.owner_uids:
                raise ApiConflictError(409, "AlreadyExists", f"{c.kind.lower()} {c.name} is not ours") from None

    async def cleanup(self, body: kopf.Body) -> int:
        """Delete the featurizer of a FeatureSet being deleted. Returns how many objects were deleted."""
        meta = body.get("metadata") or {}
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        deleted = 0
        for kind in CHILD_KINDS:
            for obj in await self.api().list(kind, namespace, f"{MANAGED_SELECTOR},{L_FEATURESET}={name}"):
                m = obj["metadata"]
                if any(r.get("uid") == uid for r in m.get("ownerReferences") or []):
                    await self.api().delete(kind, namespace, m["name"], uid=m["uid"])
                    deleted += 1
        if deleted:
            post(body, [Notice("DeletedFeaturizer", f"deleted {deleted} object(s): the FeatureSet is being deleted")])
        self.forget((namespace, name))
        return deleted
