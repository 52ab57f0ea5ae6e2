"""The emulator's resource types and state: what is served, what is stored, what happened.

`Registry` subclasses kmock's `KubernetesEmulator` (which keeps `.objects` with histories and
serves discovery from `.resources`) and adds the resource types (built-ins and those of CRDs),
the stored objects per type, the resourceVersion counter and a per-type event log that watches
read. `store.ObjectStore` adds the object operations on top.
"""

from __future__ import annotations

import asyncio
import time

import kmock

from svoe.testing.kube import schema
from svoe.testing.kube.model import BUILTINS, JSON, VERBS, ApiError, LogEntry, ResKey, ResourceType


class Registry(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with resource types, per-type object storage and event logs."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.rv = 0
        self.types: dict[ResKey, ResourceType] = {}
        self.store: dict[ResKey, dict[tuple[str | None, str], JSON]] = {}
        self.log: dict[ResKey, list[LogEntry]] = {}
        self.log_dropped: dict[ResKey, int] = {}
        self.log_limit = 200_000
        self.changed = asyncio.Condition()
        self.validate_custom_resources = True
        self.garbage_collection = True
        # Off: a deleted pod is gone at once (no kubelet runs its containers). On: pods terminate
        # gracefully like on a real node, and whoever plays the kubelet finishes the deletion.
        self.graceful_pod_deletion = False
        self.keep_history = True
        self.cel_memo: schema.CelMemo = {}
        for key, kind, namespaced, status, short in BUILTINS:
            self.register(ResourceType(key, kind, namespaced, kind.lower(), short, [], status))

    # -- registry ------------------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        self.types[rt.key] = rt
        self.store.setdefault(rt.key, {})
        self.log.setdefault(rt.key, [])
        self.log_dropped.setdefault(rt.key, 0)
        subresources = ["status"] if rt.status_subresource else []
        self.resources[kmock.resource(*rt.key)] = kmock.ResourceInfo(
            kind=rt.kind,
            singular=rt.singular,
            namespaced=rt.namespaced,
            verbs=VERBS,
            shortnames=rt.short_names,
            categories=rt.categories,
            subresources=subresources,
        )

    def unregister(self, key: ResKey) -> None:
        self.types.pop(key, None)
        res = kmock.resource(*key)
        if res in self.resources:
            del self.resources[res]

    def _register_crd(self, crd: JSON) -> None:
        for rt in schema.crd_resource_types(crd):
            self.register(rt)

    # -- storage helpers -----------------------------------------------------------------------

    def _type(self, key: ResKey) -> ResourceType:
        rt = self.types.get(key)
        if rt is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({'/'.join(key)})")
        return rt

    def _emit(self, key: ResKey, typ: str, obj: JSON, old: JSON | None) -> None:
        log = self.log[key]
        log.append(LogEntry(self.rv, typ, obj, old, time.monotonic()))
        if len(log) > self.log_limit:
            drop = len(log) - self.log_limit
            del log[:drop]
            self.log_dropped[key] += drop
        if self.keep_history:
            meta = obj["metadata"]
            okey = (kmock.resource(*key), meta.get("namespace"), meta["name"])
            if typ == "DELETED":
                if okey in self.objects:
                    self.objects[okey].delete()
            elif okey in self.objects:
                self.objects[okey].history.append(obj)
            else:
                self.objects[okey] = obj
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _not_found(self, rt: ResourceType, name: str) -> ApiError:
        group = rt.key[0]
        res = f"{rt.plural}.{group}" if group else rt.plural
        return ApiError(404, "NotFound", f'{res} "{name}" not found', {"name": name, "group": group, "kind": rt.plural})
