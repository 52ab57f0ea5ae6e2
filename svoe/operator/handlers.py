"""The kopf handlers, kept thin: they only route events to the Controller.

- indexes over the feed pods, configmaps and services (label-selected on the server) are the
  informer cache the planner reads, so a reconcile pass costs no API reads;
- child events wake the DataFeed's daemon, so a deleted or edited child is restored at once;
- one daemon per DataFeed runs the level-triggered reconcile loop (daemon.py) on wake-ups and at least every
  `resync_seconds` (drift healing, rollout progress, status);
- create/update/resume record the new generation and wake the daemon; delete removes the
  children explicitly (ownerReferences let the garbage collector do the same if the operator is
  gone, but then nothing reports it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from svoe.api.datafeed import API_GROUP, API_VERSION, PLURAL
from svoe.operator import render
from svoe.operator.config import MANAGER
from svoe.operator.controller import Controller
from svoe.operator.daemon import reconcile_until_stopped
from svoe.operator.errors import ApiError
from svoe.operator.kube import KubeClient
from svoe.operator.observe import Observed, observe

LOG = logging.getLogger(__name__)
CHILD_LABELS: Mapping[str, Any] = {render.L_MANAGED_BY: MANAGER, render.L_DATAFEED: kopf.PRESENT}
CHILD_RESOURCES = (("v1", "pods"), ("v1", "configmaps"), ("v1", "services"))


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

    def index_child(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
        return {(namespace, labels[render.L_DATAFEED]): observe(body)}

    def wake_parent(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        controller.wake(namespace, labels.get(render.L_DATAFEED))

    for version, plural in CHILD_RESOURCES:
        kopf.index(version, plural, labels=CHILD_LABELS, registry=registry, id=f"svoe_{plural}")(index_child)
        kopf.on.event(version, plural, labels=CHILD_LABELS, registry=registry, id=f"wake_{plural}")(wake_parent)

    # -- DataFeed --------------------------------------------------------------------------------

    @kopf.on.create(API_GROUP, API_VERSION, PLURAL, registry=registry, id="create")
    async def datafeed_created(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        with metrics.timed("create"):
            kopf.event(
                body,
                type="Normal",
                reason="Accepted",
                message=f"generation {body.meta.get('generation')} accepted; reconciling",
            )
            controller.wake(namespace, name)

    @kopf.on.update(API_GROUP, API_VERSION, PLURAL, registry=registry, id="update")
    async def datafeed_updated(body: kopf.Body, namespace: str | None, name: str, diff: kopf.Diff, **_: Any) -> None:
        with metrics.timed("update"):
            fields = sorted({".".join(str(p) for p in d[1]) for d in diff}) or ["metadata"]
            kopf.event(
                body,
                type="Normal",
                reason="SpecChanged",
                message=f"generation {body.meta.get('generation')}: {', '.join(fields)} changed; reconciling",
            )
            controller.wake(namespace, name)

    @kopf.on.resume(API_GROUP, API_VERSION, PLURAL, registry=registry, id="resume")
    async def datafeed_resumed(namespace: str | None, name: str, **_: Any) -> None:
        with metrics.timed("resume"):
            controller.wake(namespace, name)

    @kopf.on.delete(API_GROUP, API_VERSION, PLURAL, registry=registry, id="delete")
    async def datafeed_deleted(body: kopf.Body, **_: Any) -> None:
        with metrics.timed("delete"):
            try:
                await controller.cleanup(body)
            except ApiError as e:
                raise kopf.TemporaryError(f"deleting the children failed: {e}", delay=2) from e

    @kopf.daemon(API_GROUP, API_VERSION, PLURAL, registry=registry, cancellation_timeout=10, id="reconciler")
    async def reconciler(
        body: kopf.Body,
        namespace: str | None,
        name: str,
        stopped: kopf.DaemonStopped,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        key = (namespace or "", name)
        indexes = [kwargs[f"svoe_{plural}"] for _, plural in CHILD_RESOURCES]
        await reconcile_until_stopped(controller, key, body, lambda: _children(key, indexes), stopped, logger)

    return registry
