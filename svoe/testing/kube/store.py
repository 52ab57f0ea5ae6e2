"""The API server's object semantics, without HTTP: create, get, list, update, patch, delete.

On top of the `Registry`: generateName, uids, resourceVersions, generations and timestamps; 409
on conflicts; CRDs that register their resources and whose custom resources `schema.admit`
defaults, prunes and validates; the status subresource; merge, strategic-merge (as merge) and
JSON patches with optimistic concurrency; finalizers, graceful pod deletion and the
ownerReference garbage collector. Every change goes to the event log (`Registry._emit`).

The operations are synchronous (no await inside), so no locks are needed on the event loop.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import datetime
import random
import uuid
from typing import Any

import jsonpatch

from svoe.api.timestamps import now_rfc3339, rfc3339
from svoe.testing.kube import schema
from svoe.testing.kube.model import CRDS, JSON, NAMESPACES, PODS, ApiError, ResKey, ResourceType
from svoe.testing.kube.registry import Registry
from svoe.testing.kube.selectors import merge_patch, parse_field_selector, parse_label_selector

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


class ObjectStore(Registry):
    """The registry with an API server's object operations."""

    def _admit(
        self, rt: ResourceType, obj: JSON, strict: bool, warnings: builtins.list[str], old: JSON | None = None
    ) -> JSON:
        return schema.admit(
            rt,
            obj,
            strict=strict,
            warnings=warnings,
            old=old,
            validate=self.validate_custom_resources,
            cel_memo=self.cel_memo,
        )

    # -- object operations ---------------------------------------------------------------------

    def create(
        self,
        key: ResKey,
        namespace: str | None,
        obj: JSON,
        *,
        strict: bool = False,
        dry_run: bool = False,
        warnings: builtins.list[str] | None = None,
    ) -> JSON:
        rt = self._type(key)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            ns = namespace or meta.get("namespace")
            if not ns:
                raise ApiError(400, "BadRequest", "the namespace of the object is required")
            if meta.get("namespace") not in (None, ns):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = ns
            if (None, ns) not in self.store[NAMESPACES]:
                # NamespaceAutoProvision: tests need not create every namespace first.
                self.create(NAMESPACES, None, {"metadata": {"name": ns}})
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
            while True:
                name = meta["generateName"] + "".join(random.choice(_NAME_CHARS) for _ in range(5))
                if (meta.get("namespace"), name) not in self.store[key]:
                    break
            meta["name"] = name
        if obj.get("kind") not in (None, rt.kind) or obj.get("apiVersion") not in (None, rt.api_version):
            raise ApiError(
                400, "BadRequest", f"the API version/kind in the body does not match {rt.api_version}/{rt.kind}"
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        okey = (meta.get("namespace"), meta["name"])
        if okey in self.store[key]:
            group = key[0]
            res = f"{rt.plural}.{group}" if group else rt.plural
            raise ApiError(
                409,
                "AlreadyExists",
                f'{res} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": group, "kind": rt.plural},
            )
        if rt.status_subresource and key[0] not in ("", "apiextensions.k8s.io"):
            obj.pop("status", None)
        obj = self._admit(rt, obj, strict, warnings if warnings is not None else [])
        meta = obj["metadata"]
        for drop in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "generation", "managedFields"):
            meta.pop(drop, None)
        if key == PODS:
            obj["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}
        if key == CRDS:
            obj["status"] = schema.crd_status(obj)
        if dry_run:
            return obj
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        self.store[key][okey] = obj
        self._emit(key, "ADDED", obj, None)
        if key == CRDS:
            self._register_crd(obj)
        return obj

    # get, patch and delete shadow kmock's client helpers (requests to the mock server) on purpose.
    def get(self, key: ResKey, namespace: str | None, name: str) -> JSON:  # type: ignore[override]
        rt = self._type(key)
        obj = self.store[key].get((namespace if rt.namespaced else None, name))
        if obj is None:
            raise self._not_found(rt, name)
        return obj

    def list(
        self, key: ResKey, namespace: str | None, label_selector: str | None = None, field_selector: str | None = None
    ) -> builtins.list[JSON]:
        rt = self._type(key)
        lmatch = parse_label_selector(label_selector)
        fmatch = parse_field_selector(field_selector)
        out = [
            o
            for (ns, _), o in self.store[key].items()
            if (namespace is None or not rt.namespaced or ns == namespace)
            and lmatch(o["metadata"].get("labels") or {})
            and fmatch(o)
        ]
        out.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return out

    def update(
        self,
        key: ResKey,
        namespace: str | None,
        name: str,
        new: JSON,
        *,
        subresource: str | None = None,
        expect_rv: str | None = None,
        strict: bool = False,
        dry_run: bool = False,
        warnings: builtins.list[str] | None = None,
    ) -> JSON:
        """Replace an object with `new` (already patched), with the API server's rules."""
        rt = self._type(key)
        current = self.get(key, namespace, name)
        if subresource not in (None, "status") or (subresource == "status" and not rt.status_subresource):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({subresource})")
        if expect_rv and expect_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": name, "group": key[0], "kind": rt.plural},
            )
        new = copy.deepcopy(new)
        if rt.status_subresource:
            if subresource == "status":
                # Only the status stanza changes through /status.
                status = new.get("status")
                new = copy.deepcopy(current)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            elif "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        cur_meta = current["metadata"]
        for keep in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if keep in cur_meta:
                meta[keep] = cur_meta[keep]
            else:
                meta.pop(keep, None)
        meta["resourceVersion"] = cur_meta["resourceVersion"]
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        new = self._admit(rt, new, strict and subresource is None, warnings if warnings is not None else [], current)
        meta = new["metadata"]
        if cur_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(cur_meta.get("finalizers") or [])
            if added:
                raise ApiError(
                    422,
                    "Invalid",
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                )
        if new == current:
            return current
        if _spec_of(new) != _spec_of(current):
            meta["generation"] = int(cur_meta.get("generation", 1)) + 1
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        okey = (meta.get("namespace"), name)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.store[key][okey]
            self._emit(key, "DELETED", new, current)
            self._collect_garbage(new)
            return new
        self.store[key][okey] = new
        self._emit(key, "MODIFIED", new, current)
        if key == CRDS:
            self._register_crd(new)
        return new

    def patch(  # type: ignore[override]
        self,
        key: ResKey,
        namespace: str | None,
        name: str,
        patch: Any,
        content_type: str,
        *,
        subresource: str | None = None,
        strict: bool = False,
        dry_run: bool = False,
        warnings: builtins.list[str] | None = None,
    ) -> JSON:
        current = self.get(key, namespace, name)
        new: JSON
        if content_type.startswith("application/json-patch+json"):
            if not isinstance(patch, builtins.list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                new = jsonpatch.apply_patch(current, patch, in_place=False)
            except jsonpatch.JsonPatchTestFailed as e:
                raise ApiError(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
                ) from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {e}") from None
            expect = None
        elif content_type.startswith(("application/merge-patch+json", "application/strategic-merge-patch+json")):
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be an object")
            new = merge_patch(current, patch)
            expect = (patch.get("metadata") or {}).get("resourceVersion")
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        return self.update(
            key,
            namespace,
            name,
            new,
            subresource=subresource,
            expect_rv=expect,
            strict=strict,
            dry_run=dry_run,
            warnings=warnings,
        )

    def delete(  # type: ignore[override]
        self, key: ResKey, namespace: str | None, name: str, options: JSON | None = None, dry_run: bool = False
    ) -> JSON:
        self._type(key)
        current = self.get(key, namespace, name)
        options = options or {}
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409, "Conflict", f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}"
            )
        if dry_run:
            return current
        okey = (current["metadata"].get("namespace"), name)
        grace = self._pod_grace(key, current, options)
        if grace or current["metadata"].get("finalizers"):
            if current["metadata"].get("deletionTimestamp"):
                return current
            # A pod on a node: mark, and let the kubelet stop the containers within the grace
            # period and then delete the pod with a grace of 0. Finalizers: mark, and remove the
            # object when the last finalizer goes (see update).
            new = copy.deepcopy(current)
            until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace)
            new["metadata"]["deletionTimestamp"] = rfc3339(until)
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            new["metadata"]["resourceVersion"] = self._next_rv()
            self.store[key][okey] = new
            self._emit(key, "MODIFIED", new, current)
            return new
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        del self.store[key][okey]
        self._emit(key, "DELETED", gone, current)
        if key == CRDS:
            spec = current["spec"]
            for v in spec.get("versions", []):
                ckey = (spec["group"], v["name"], spec["names"]["plural"])
                for ns, n in builtins.list(self.store.get(ckey, {})):
                    self._force_remove(ckey, ns, n)
                self.unregister(ckey)
        if options.get("propagationPolicy") == "Orphan":
            self._orphan(current["metadata"]["uid"])
        else:
            self._collect_garbage(gone)
        return gone

    def _pod_grace(self, key: ResKey, current: JSON, options: JSON) -> int:
        """Seconds of graceful termination a delete asks for (0: remove now, as before)."""
        if key != PODS or not self.graceful_pod_deletion:
            return 0
        asked = options.get("gracePeriodSeconds")
        if asked is None or int(asked) < 0:
            asked = (current.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        return max(int(asked), 0)

    def _force_remove(self, key: ResKey, ns: str | None, name: str) -> None:
        obj = self.store[key].pop((ns, name))
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._emit(key, "DELETED", gone, obj)

    # -- garbage collection --------------------------------------------------------------------

    def _dependents(self, uid: str) -> builtins.list[tuple[ResKey, str | None, str]]:
        out = []
        for key, objs in self.store.items():
            for (ns, n), o in objs.items():
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or []):
                    out.append((key, ns, n))
        return out

    def _collect_garbage(self, owner: JSON) -> None:
        if not self.garbage_collection:
            return
        for key, ns, n in self._dependents(owner["metadata"]["uid"]):
            with contextlib.suppress(ApiError):
                self.delete(key, ns, n)

    def _orphan(self, uid: str) -> None:
        for key, ns, n in self._dependents(uid):
            o = self.store[key][(ns, n)]
            refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            self.patch(key, ns, n, {"metadata": {"ownerReferences": refs or None}}, "application/merge-patch+json")


def _spec_of(obj: JSON) -> JSON:
    """All but metadata and status: what a change of bumps the generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
