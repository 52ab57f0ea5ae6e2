"""The kopf handlers, kept thin: they only route events to the Controller.

- indexes over the feed pods, configmaps and services (label-selected on the server) are the
  informer cache the planner reads, so a reconcile pass costs no API reads;
- child events wake the DataFeed's daemon, so a deleted or edited child is restored at once;
- one daemon per DataFeed runs the level-triggered reconcile loop (daemon.py) on wake-ups and at least every
  `resync_seconds` (drift healing, rollout progress, status);
- create/update/resume record the new generation and wake the daemon; delete removes the
  children explicitly (ownerReferences let the garbage collector do the same if the operator is
  gone, but then nothing reports it).

FeatureSets run the same way (featureset_controller.py): their children (the featurizer's
ConfigMap, Deployment, Service and pods) and the DataFeeds they read are indexed, and a DataFeed
event wakes the FeatureSets that read it, so a source that appears or reshards is followed at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import kopf

from svoe.api.datafeed import API_GROUP, API_VERSION, PLURAL
from svoe.api.featureset import PLURAL as FS_PLURAL
from svoe.operator import render
from svoe.operator.config import MANAGER
from svoe.operator.controller import Controller
from svoe.operator.coordination import Coordination
from svoe.operator.daemon import reconcile_until_stopped, serve
from svoe.operator.errors import ApiError
from svoe.operator.featureset_controller import FeatureSetController
from svoe.operator.featureset_render import L_FEATURESET
from svoe.operator.kube import KubeClient
from svoe.operator.metrics import OperatorMetrics
from svoe.operator.observe import Observed, observe
from svoe.operator.parse import plain

LOG = logging.getLogger(__name__)
CHILD_LABELS: Mapping[str, Any] = {render.L_MANAGED_BY: MANAGER, render.L_DATAFEED: kopf.PRESENT}
CHILD_RESOURCES = (("v1", "pods"), ("v1", "configmaps"), ("v1", "services"))
FS_CHILD_LABELS: Mapping[str, Any] = {render.L_MANAGED_BY: MANAGER, L_FEATURESET: kopf.PRESENT}
FS_CHILD_RESOURCES = (*CHILD_RESOURCES, ("apps/v1", "deployments"))


def _children(key: tuple[str, str], indexes: Iterable[Any]) -> list[Observed]:
    out: list[Observed] = []
    for index in indexes:
        out.extend(index.get(key, ()))
    return out


class _QuietWakeups(logging.Filter):
    """Child events arrive by the thousand; their wake-up handlers need not log each success."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Handler 'wake_") and msg.endswith("succeeded."))


def _watch_children(
    registry: kopf.OperatorRegistry,
    resources: Iterable[tuple[str, str]],
    labels: Mapping[str, Any],
    parent_label: str,
    prefix: str,
    parents: Coordination,
) -> None:
    """Index the children by (namespace, parent) (index ids svoe_{prefix}{plural}) and wake their parent."""

    def index_child(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
        return {(namespace, labels[parent_label]): observe(body)}

    def wake_parent(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        parents.wake(namespace, labels.get(parent_label))

    for version, plural in resources:
        kw: Any = {"labels": labels, "registry": registry}
        kopf.index(version, plural, id=f"svoe_{prefix}{plural}", **kw)(index_child)
        kopf.on.event(version, plural, id=f"wake_{prefix}{plural}", **kw)(wake_parent)


Runner = Callable[[kopf.Body, tuple[str, str], Mapping[str, Any], Any, Any], Awaitable[None]]


def _lifecycle(
    registry: kopf.OperatorRegistry,
    plural: str,
    prefix: str,
    metrics: OperatorMetrics,
    parents: Coordination,
    cleanup: Callable[[kopf.Body], Awaitable[int]],
    what: str,
    run: Runner,
) -> None:
    """Create, update and resume wake the loop (create and update with an event); delete removes
    the children first (kopf's finalizer holds the resource until then); the daemon runs the
    reconcile loop (`run`) with kopf's indexes."""

    def accepted(body: kopf.Body, namespace: str | None, name: str, reason: str, what: str) -> None:
        message = f"generation {body.meta.get('generation')}{what}; reconciling"
        kopf.event(body, type="Normal", reason=reason, message=message)
        parents.wake(namespace, name)

    @kopf.on.create(API_GROUP, API_VERSION, plural, registry=registry, id=f"{prefix}create")
    async def created(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        with metrics.timed(f"{prefix}create"):
            accepted(body, namespace, name, "Accepted", " accepted")

    @kopf.on.update(API_GROUP, API_VERSION, plural, registry=registry, id=f"{prefix}update")
    async def updated(body: kopf.Body, namespace: str | None, name: str, diff: kopf.Diff, **_: Any) -> None:
        with metrics.timed(f"{prefix}update"):
            fields = sorted({".".join(str(p) for p in d[1]) for d in diff}) or ["metadata"]
            accepted(body, namespace, name, "SpecChanged", f": {', '.join(fields)} changed")

    @kopf.on.resume(API_GROUP, API_VERSION, plural, registry=registry, id=f"{prefix}resume")
    async def resumed(namespace: str | None, name: str, **_: Any) -> None:
        with metrics.timed(f"{prefix}resume"):
            parents.wake(namespace, name)

    @kopf.on.delete(API_GROUP, API_VERSION, plural, registry=registry, id=f"{prefix}delete")
    async def deleted(body: kopf.Body, **_: Any) -> None:
        with metrics.timed(f"{prefix}delete"):
            try:
                await cleanup(body)
            except ApiError as e:
                raise kopf.TemporaryError(f"deleting {what} failed: {e}", delay=2) from e

    @kopf.daemon(API_GROUP, API_VERSION, plural, registry=registry, cancellation_timeout=10, id=f"{prefix}reconciler")
    async def reconciler(
        body: kopf.Body,
        namespace: str | None,
        name: str,
        stopped: kopf.DaemonStopped,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        await run(body, (namespace or "", name), kwargs, stopped, logger)


def build_registry(controller: Controller, *, peering_lifetime: int | None = None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    objects_log = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietWakeups) for f in objects_log.filters):
        objects_log.addFilter(_QuietWakeups())
    metrics = controller.metrics
    config = controller.config

    @kopf.on.login(registry=registry, id="login")
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials for kopf's watches and the controller's writes. The helpers read
        # files and may run exec plugins: off the event loop.
        def credentials() -> kopf.ConnectionInfo | None:
            return (
                kopf.login_via_client(**kwargs)
                or kopf.login_with_service_account(**kwargs)
                or kopf.login_with_kubeconfig(**kwargs)
            )

        info = await asyncio.to_thread(credentials)
        if info is not None:
            if controller.client is None:
                controller.client = KubeClient(info)
            else:
                controller.client.relogin(info)
        return info

    @kopf.on.startup(registry=registry, id="configure")
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Progress and diff-base in annotations of our own prefix: the status belongs to us.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="svoe.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="svoe.io", key="last-handled-configuration"
        )
        settings.persistence.finalizer = "svoe.io/operator"
        # Actions post their own events; kopf's handler chatter only when something goes wrong.
        settings.posting.level = logging.WARNING
        settings.posting.reporting_component = MANAGER
        for version, plural in CHILD_RESOURCES:
            settings.watching.label_selectors[f"{version}/{plural}"] = render.MANAGED_SELECTOR
        settings.watching.label_selectors["apps", "v1", "deployments"] = render.MANAGED_SELECTOR
        settings.watching.connect_timeout = 30
        settings.networking.request_timeout = 60
        settings.background.cancellation_polling = 1
        if peering_lifetime is not None:
            settings.peering.lifetime = peering_lifetime
        await metrics.start(config.metrics_port)

    @kopf.on.cleanup(registry=registry, id="shutdown")
    async def cleanup(**_: Any) -> None:
        await metrics.stop()
        if controller.client is not None:
            await controller.client.close()

    # -- the informer cache of children ---------------------------------------------------------

    _watch_children(registry, CHILD_RESOURCES, CHILD_LABELS, render.L_DATAFEED, "", controller)

    # -- DataFeed --------------------------------------------------------------------------------

    async def run(body: kopf.Body, key: tuple[str, str], indexes: Mapping[str, Any], stopped: Any, logger: Any) -> None:
        children = [indexes[f"svoe_{plural}"] for _, plural in CHILD_RESOURCES]
        await reconcile_until_stopped(controller, key, body, lambda: _children(key, children), stopped, logger)

    _lifecycle(registry, PLURAL, "", metrics, controller, controller.cleanup, "the children", run)

    _register_featuresets(registry, FeatureSetController(controller))
    return registry


def _register_featuresets(registry: kopf.OperatorRegistry, fs: FeatureSetController) -> None:
    metrics = fs.metrics

    _watch_children(registry, FS_CHILD_RESOURCES, FS_CHILD_LABELS, L_FEATURESET, "fs_", fs)

    @kopf.index(API_GROUP, API_VERSION, PLURAL, registry=registry, id="svoe_sources")
    def index_source(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
        # Only what a FeatureSet needs of its source: the spec and the recorded shards.
        status = body.get("status") or {}
        doc = {"metadata": {"name": name, "namespace": namespace}, "spec": plain(body.get("spec") or {})}
        return {(namespace, name): {**doc, "status": {"shards": plain(status.get("shards") or [])}}}

    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, registry=registry, id="wake_fs_readers")
    def wake_readers(namespace: str | None, name: str, **_: Any) -> None:
        fs.wake_readers(namespace, name)

    async def run(body: kopf.Body, key: tuple[str, str], indexes: Mapping[str, Any], stopped: Any, logger: Any) -> None:
        children = [indexes[f"svoe_fs_{plural}"] for _, plural in FS_CHILD_RESOURCES]
        sources = indexes["svoe_sources"]

        def source() -> Any:
            found = sources.get((key[0], body.get("spec", {}).get("source")), ())
            return next(iter(found), None)

        async def reconcile() -> Any:
            return await fs.reconcile(body, source(), _children(key, children))

        await serve(fs, key, reconcile, stopped, logger, "reconcile_featureset")
        fs.forget(key)

    _lifecycle(registry, FS_PLURAL, "fs_", metrics, fs, fs.cleanup, "the featurizer", run)
