"""A Kubernetes API emulator for tests, e2e and benchmarks: kmock with an API server's manners.

kmock (0.8) stores objects and streams watch events, but it assigns no uid, resourceVersion or
generation, ignores generateName, label selectors and the status subresource, returns lists
without a kind and watch streams without a JSON content type. kopf needs uids and
resourceVersions (its finalizer patch is a JSON patch that tests the resourceVersion), kubectl
needs list kinds, content types, tables and CRD discovery. `ApiServer` subclasses kmock's
`KubernetesEmulator` and serves every object request itself:

- create: generateName, uid, resourceVersion, generation, creationTimestamp; 409 on conflict;
- CustomResourceDefinitions register their resources (discovery, short names, categories,
  printer columns) and validate custom resources like the API server: structural-schema
  defaulting and pruning, types/enums/patterns/bounds, list types, and CEL rules (cel-python);
- get / list / watch with label and field selectors, list kinds, server-side tables for kubectl,
  watch resume from a resourceVersion, bookmarks and `sendInitialEvents`;
- merge, strategic-merge (as merge) and JSON patches (a failed `test` is 422), PUT with
  optimistic concurrency, the status subresource, generation bumps on spec changes;
- delete with finalizers (deletionTimestamp, then removal when the last finalizer goes) and,
  optionally, the ownerReference garbage collector;
- optionally, graceful pod deletion: a pod deleted with a grace period keeps running with a
  deletionTimestamp until its kubelet deletes it again with gracePeriodSeconds=0 (e2e/local).

Discovery, the HTTP server and object storage (`.objects`, with histories) are kmock's.
`KubeEmulator` runs it on a background thread so synchronous tests, kubectl and a real operator
process can all talk to it through a kubeconfig.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
import math
import random
import re
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import jsonschema
import kmock
import yaml

try:  # CEL rules of CRDs are evaluated when cel-python is installed (a dev dependency).
    import celpy
except ImportError:  # pragma: no cover
    celpy = None

JSON = dict[str, Any]
ResKey = tuple[str, str, str]  # group, version, plural
ObjKey = tuple[ResKey, str | None, str]


class ApiError(Exception):
    """An API error rendered as a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> JSON:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    then = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    secs = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    if secs < 120:
        return f"{max(secs, 0)}s"
    if secs < 3600 * 3:
        return f"{secs // 60}m"
    if secs < 86400 * 2:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


# ---------------------------------------------------------------------------------------------
# Selectors and JSONPath
# ---------------------------------------------------------------------------------------------


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(sel: str | None) -> Callable[[dict[str, str]], bool]:
    if not sel:
        return lambda _: True
    checks: list[Callable[[dict[str, str]], bool]] = []
    for req in _split_top(sel):
        m = re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\((.*)\)", req)
        if m:
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                checks.append(lambda lb, k=key, vs=vals: lb.get(k) in vs)
            else:
                checks.append(lambda lb, k=key, vs=vals: lb.get(k) not in vs)
            continue
        m = re.fullmatch(r"([^\s!=]+)\s*(!=|==|=)\s*(.*)", req)
        if m:
            key, op, val = m.group(1), m.group(2), m.group(3).strip()
            if op == "!=":
                checks.append(lambda lb, k=key, v=val: lb.get(k) != v)
            else:
                checks.append(lambda lb, k=key, v=val: lb.get(k) == v)
            continue
        if req.startswith("!"):
            absent = req[1:].strip()
            checks.append(lambda lb, k=absent: k not in lb)
        elif re.fullmatch(r"[^\s!=(),]+", req):
            checks.append(lambda lb, k=req: k in lb)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {req!r}")
    return lambda labels: all(c(labels) for c in checks)


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def parse_field_selector(sel: str | None) -> Callable[[JSON], bool]:
    if not sel:
        return lambda _: True
    checks: list[Callable[[JSON], bool]] = []
    for req in _split_top(sel):
        m = re.fullmatch(r"([^\s!=]+)\s*(!=|==|=)\s*(.*)", req)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {req!r}")
        path, op, val = m.group(1), m.group(2), m.group(3)

        def check(o: JSON, p: str = path, v: str = val, neg: bool = op == "!=") -> bool:
            got = _dig(o, p)
            got_s = "" if got is None else (str(got).lower() if isinstance(got, bool) else str(got))
            return (got_s != v) if neg else (got_s == v)

        checks.append(check)
    return lambda obj: all(c(obj) for c in checks)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """The JSONPath subset of kubectl printer columns: .a.b, [n], [*], [?(@.k=="v")]."""
    tokens = re.findall(r"\.([A-Za-z0-9_\-]+)|\[(\d+|\*|\?\(@\.[A-Za-z0-9_.\-]+\s*==\s*[\"'][^\"']*[\"']\))\]", path)
    current = [obj]
    for name, bracket in tokens:
        nxt: list[Any] = []
        for item in current:
            if name:
                if isinstance(item, dict) and name in item:
                    nxt.append(item[name])
            elif bracket == "*":
                if isinstance(item, list):
                    nxt.extend(item)
            elif bracket.isdigit():
                if isinstance(item, list) and int(bracket) < len(item):
                    nxt.append(item[int(bracket)])
            else:
                m = re.fullmatch(r"\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*[\"']([^\"']*)[\"']\)", bracket)
                assert m is not None
                if isinstance(item, list):
                    nxt.extend(x for x in item if isinstance(x, dict) and str(_dig(x, m.group(1))) == m.group(2))
        current = nxt
    return current


# ---------------------------------------------------------------------------------------------
# Merge patch and CRD validation
# ---------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _to_jsonschema(node: JSON) -> JSON:
    """An OpenAPI v3 structural node -> JSON Schema draft 4 (nullable, list types)."""
    out: JSON = {}
    for k, v in node.items():
        if k == "properties":
            out[k] = {p: _to_jsonschema(s) for p, s in v.items()}
        elif k == "items" or (k == "additionalProperties" and isinstance(v, dict)):
            out[k] = _to_jsonschema(v)
        elif k in ("x-kubernetes-validations", "default", "description", "x-kubernetes-preserve-unknown-fields"):
            continue
        else:
            out[k] = v
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


@dataclass
class CelRule:
    rule: str
    message: str | None
    message_expression: str | None
    field_path: str | None
    program: Any
    message_program: Any


@dataclass
class ResourceType:
    key: ResKey
    kind: str
    namespaced: bool
    singular: str
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    printer_columns: list[JSON] = field(default_factory=list)
    schema: JSON | None = None
    validator: jsonschema.Draft4Validator | None = None
    cel: dict[str, list[CelRule]] = field(default_factory=dict)  # schema path -> rules

    @property
    def api_version(self) -> str:
        g, v, _ = self.key
        return f"{g}/{v}" if g else v

    @property
    def plural(self) -> str:
        return self.key[2]


def _defaults_and_prune(node: JSON, value: Any, path: str, unknown: list[str]) -> Any:
    """Apply structural defaults and drop (reporting) fields the schema does not declare."""
    if not isinstance(value, dict) and not isinstance(value, list):
        return value
    if isinstance(value, list):
        items = node.get("items")
        return [_defaults_and_prune(items, v, f"{path}[{i}]", unknown) for i, v in enumerate(value)] if items else value
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return value
    props = node.get("properties")
    if props is None:
        addl = node.get("additionalProperties")
        if isinstance(addl, dict):
            return {k: _defaults_and_prune(addl, v, f"{path}.{k}", unknown) for k, v in value.items()}
        return value
    out: JSON = {}
    for k, v in value.items():
        if k in props:
            out[k] = _defaults_and_prune(props[k], v, f"{path}.{k}" if path else k, unknown)
        else:
            unknown.append(f"{path}.{k}" if path else k)
    for k, sub in props.items():
        if k not in out and "default" in sub:
            out[k] = _defaults_and_prune(sub, copy.deepcopy(sub["default"]), f"{path}.{k}", unknown)
    return out


def _collect_cel(node: JSON, path: str, out: dict[str, list[CelRule]]) -> None:
    rules = node.get("x-kubernetes-validations") or []
    if rules and celpy is not None:
        env = celpy.Environment()
        compiled = []
        for r in rules:
            prog = env.program(env.compile(r["rule"]))
            mprog = env.program(env.compile(r["messageExpression"])) if r.get("messageExpression") else None
            compiled.append(
                CelRule(r["rule"], r.get("message"), r.get("messageExpression"), r.get("fieldPath"), prog, mprog)
            )
        out[path] = compiled
    for k, sub in (node.get("properties") or {}).items():
        _collect_cel(sub, f"{path}.{k}" if path else k, out)
    if isinstance(node.get("items"), dict):
        _collect_cel(node["items"], f"{path}[]", out)


def _values_at(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    if not path:
        yield "", obj
        return
    parts = re.findall(r"[^.\[\]]+|\[\]", path)

    def walk(o: Any, i: int, where: str) -> Iterator[tuple[str, Any]]:
        if i == len(parts):
            yield where, o
            return
        p = parts[i]
        if p == "[]":
            if isinstance(o, list):
                for n, item in enumerate(o):
                    yield from walk(item, i + 1, f"{where}[{n}]")
        elif isinstance(o, dict) and p in o:
            yield from walk(o[p], i + 1, f"{where}.{p}" if where else p)

    yield from walk(obj, 0, "")


@dataclass(frozen=True)
class ApiPath:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_api_path(path: str) -> ApiPath | None:
    """An object or collection URL, or None for discovery and anything else.

    (kmock's parser reads /api/v1/namespaces as "the namespace called nothing".)
    """
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    elif len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return ApiPath(group, version, rest[0], namespace, name, sub)


def _split_path(where: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", where)]


_MISSING = object()


def _unchanged(old: Any, new: Any, path: list[Any]) -> bool:
    for p in path:
        old = old[p] if isinstance(old, (dict, list)) and _has(old, p) else _MISSING
        new = new[p] if isinstance(new, (dict, list)) and _has(new, p) else _MISSING
    return old is not _MISSING and bool(old == new)


def _has(container: Any, key: Any) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(key, int) and 0 <= key < len(container)


# ---------------------------------------------------------------------------------------------
# The API server
# ---------------------------------------------------------------------------------------------

_BUILTINS: list[tuple[ResKey, str, bool, bool, list[str]]] = [
    (("", "v1", "pods"), "Pod", True, True, ["po"]),
    (("", "v1", "configmaps"), "ConfigMap", True, False, ["cm"]),
    (("", "v1", "services"), "Service", True, True, ["svc"]),
    (("", "v1", "events"), "Event", True, False, ["ev"]),
    (("", "v1", "namespaces"), "Namespace", False, True, ["ns"]),
    (("", "v1", "secrets"), "Secret", True, False, []),
    (("", "v1", "serviceaccounts"), "ServiceAccount", True, False, ["sa"]),
    (("events.k8s.io", "v1", "events"), "Event", True, False, ["ev"]),
    (("coordination.k8s.io", "v1", "leases"), "Lease", True, False, []),
    (("apiextensions.k8s.io", "v1", "customresourcedefinitions"), "CustomResourceDefinition", False, True, ["crd"]),
]
NAMESPACES = ("", "v1", "namespaces")
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class LogEntry:
    rv: int
    type: str
    obj: JSON
    old: JSON | None
    at: float


class ApiServer(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's Kubernetes emulator that serves object requests like an API server."""

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
        self.bookmark_interval = 15.0
        self.keep_history = True
        self.request_count = 0
        self.request_stats: dict[tuple[str, str, str, str], int] = {}
        self.cel_memo: dict[tuple[str, str], tuple[bool, str]] = {}
        # Test hooks: requests matching a gate wait until it opens (a slow or stuck API server).
        self.gates: dict[tuple[ResKey, str], asyncio.Event] = {}
        self.held: dict[tuple[ResKey, str], int] = {}
        for key, kind, namespaced, status, short in _BUILTINS:
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
            verbs=_VERBS,
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
        spec = crd["spec"]
        names = spec["names"]
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            key = (spec["group"], version["name"], names["plural"])
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            cel: dict[str, list[CelRule]] = {}
            validator = None
            if schema is not None:
                validator = jsonschema.Draft4Validator(_to_jsonschema(schema))
                _collect_cel(schema, "", cel)
            self.register(
                ResourceType(
                    key,
                    names["kind"],
                    spec.get("scope", "Namespaced") == "Namespaced",
                    names.get("singular") or names["kind"].lower(),
                    list(names.get("shortNames") or []),
                    list(names.get("categories") or []),
                    "status" in (version.get("subresources") or {}),
                    list(version.get("additionalPrinterColumns") or []),
                    schema,
                    validator,
                    cel,
                )
            )

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

    # -- validation of custom resources --------------------------------------------------------

    def _admit(self, rt: ResourceType, obj: JSON, strict: bool, warnings: list[str], old: JSON | None = None) -> JSON:
        """Default, prune and validate a custom resource.

        Updates ratchet, as in Kubernetes 1.33 (CRDValidationRatcheting): a value that fails the
        schema or a rule but did not change in this update is let through, so a stored object
        that an older schema accepted can still get status updates and finalizers.
        """
        if rt.schema is None:
            return obj
        unknown: list[str] = []
        meta = obj.get("metadata", {})
        body = {k: v for k, v in obj.items() if k != "metadata"}
        pruned = _defaults_and_prune(rt.schema, body, "", unknown)
        unknown = [u for u in unknown if u not in ("apiVersion", "kind")]
        pruned["metadata"] = meta
        if unknown and strict:
            causes = [
                {"reason": "FieldValueInvalid", "message": "field not declared in schema", "field": u} for u in unknown
            ]
            raise ApiError(
                400,
                "BadRequest",
                "; ".join(f".{u}: field not declared in schema" for u in unknown),
                {"causes": causes},
            )
        warnings.extend(f'unknown field "{u}"' for u in unknown)
        if not self.validate_custom_resources:
            return pruned
        errors: list[tuple[str, str]] = []
        name_schema = ((rt.schema.get("properties") or {}).get("metadata") or {}).get("properties", {}).get("name")
        if name_schema and meta.get("name"):
            name = meta["name"]
            if "pattern" in name_schema and not re.search(name_schema["pattern"], name):
                errors.append(("metadata.name", f"Invalid value: {name!r}: must match {name_schema['pattern']}"))
            if "maxLength" in name_schema and len(name) > name_schema["maxLength"]:
                errors.append(("metadata.name", f"Too long: may not be more than {name_schema['maxLength']} bytes"))
        if rt.validator is not None:
            check = {k: v for k, v in pruned.items() if k != "metadata"}
            for err in sorted(rt.validator.iter_errors(check), key=lambda e: list(e.absolute_path)):
                if old is not None and _unchanged(old, pruned, list(err.absolute_path)):
                    continue
                where = ".".join(str(p) for p in err.absolute_path) or "<root>"
                if err.validator == "enum":
                    allowed = ", ".join(map(repr, err.validator_value))
                    msg = f"Unsupported value: {err.instance!r}: supported values: {allowed}"
                elif err.validator == "required":
                    msg = f"Required value: {err.message}"
                elif err.validator == "uniqueItems":
                    msg = f"Duplicate value: {err.instance!r}"
                else:
                    msg = f"Invalid value: {err.message}"
                errors.append((where, msg))
        if not errors:
            errors.extend(self._check_cel(rt, pruned, old))
        if errors:
            kind = f"{rt.kind}.{rt.key[0]}" if rt.key[0] else rt.kind
            text = "; ".join(f"{w}: {m}" for w, m in errors)
            raise ApiError(
                422,
                "Invalid",
                f'{kind} "{meta.get("name", "")}" is invalid: {text}',
                {
                    "name": meta.get("name"),
                    "group": rt.key[0],
                    "kind": rt.kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": m, "field": w} for w, m in errors],
                },
            )
        return pruned

    def _check_cel(self, rt: ResourceType, obj: JSON, old: JSON | None) -> list[tuple[str, str]]:
        errors = []
        for path, rules in rt.cel.items():
            for where, value in _values_at(obj, path):
                if old is not None and _unchanged(old, obj, _split_path(where)):
                    continue
                activation = celpy.json_to_cel({"self": value})
                value_key = json.dumps(value, sort_keys=True)
                for r in rules:
                    # Rules are pure functions of `self`; cel-python is slow, so results are memoized.
                    memo_key = (r.rule, value_key)
                    if memo_key in self.cel_memo:
                        ok, r_msg = self.cel_memo[memo_key]
                    else:
                        try:
                            ok, r_msg = bool(r.program.evaluate(activation)), ""
                        except Exception as e:  # an evaluation error rejects, as in the API server
                            ok, r_msg = False, f"rule evaluation error: {e}"
                        if len(self.cel_memo) > 10_000:
                            self.cel_memo.clear()
                        self.cel_memo[memo_key] = (ok, r_msg)
                    if ok:
                        continue
                    msg = r.message or r_msg or f"failed rule: {r.rule}"
                    if r.message_program is not None:
                        # On an evaluation error the static message stands, as in the API server.
                        with contextlib.suppress(Exception):
                            msg = str(r.message_program.evaluate(activation))
                    at = (where + (r.field_path or "")).lstrip(".") or "<root>"
                    errors.append((at, f"Invalid value: {msg}"))
        return errors

    # -- object operations (synchronous: no await inside, so no locks are needed) ---------------

    def create(
        self,
        key: ResKey,
        namespace: str | None,
        obj: JSON,
        *,
        strict: bool = False,
        dry_run: bool = False,
        warnings: list[str] | None = None,
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
        if key == ("", "v1", "pods"):
            obj["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}
        if key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            obj["status"] = {
                "acceptedNames": obj["spec"]["names"],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": _now()},
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "lastTransitionTime": _now(),
                    },
                ],
                "storedVersions": [v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
            }
        if dry_run:
            return obj
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        self.store[key][okey] = obj
        self._emit(key, "ADDED", obj, None)
        if key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._register_crd(obj)
        return obj

    def get(self, key: ResKey, namespace: str | None, name: str) -> JSON:
        rt = self._type(key)
        obj = self.store[key].get((namespace if rt.namespaced else None, name))
        if obj is None:
            raise self._not_found(rt, name)
        return obj

    def list(
        self, key: ResKey, namespace: str | None, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[JSON]:
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
        warnings: list[str] | None = None,
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
        spec_of = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}  # noqa: E731
        if spec_of(new) != spec_of(current):
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
        if key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._register_crd(new)
        return new

    def patch(
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
        warnings: list[str] | None = None,
    ) -> JSON:
        current = self.get(key, namespace, name)
        if content_type.startswith("application/json-patch+json"):
            if not isinstance(patch, list):
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

    def delete(
        self, key: ResKey, namespace: str | None, name: str, options: JSON | None = None, dry_run: bool = False
    ) -> JSON:
        rt = self._type(key)
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
        if grace:
            if current["metadata"].get("deletionTimestamp"):
                return current
            # As the API server does for pods on a node: mark, and let the kubelet stop the
            # containers within the grace period and then delete the pod with a grace of 0.
            new = copy.deepcopy(current)
            until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace)
            new["metadata"]["deletionTimestamp"] = until.strftime("%Y-%m-%dT%H:%M:%SZ")
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            new["metadata"]["resourceVersion"] = self._next_rv()
            self.store[key][okey] = new
            self._emit(key, "MODIFIED", new, current)
            return new
        if current["metadata"].get("finalizers"):
            if current["metadata"].get("deletionTimestamp"):
                return current
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["resourceVersion"] = self._next_rv()
            self.store[key][okey] = new
            self._emit(key, "MODIFIED", new, current)
            return new
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        del self.store[key][okey]
        self._emit(key, "DELETED", gone, current)
        if key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            spec = current["spec"]
            for v in spec.get("versions", []):
                ckey = (spec["group"], v["name"], spec["names"]["plural"])
                for ns, n in list(self.store.get(ckey, {})):
                    self._force_remove(ckey, ns, n)
                self.unregister(ckey)
        if options.get("propagationPolicy") == "Orphan":
            self._orphan(current["metadata"]["uid"])
        else:
            self._collect_garbage(gone)
        _ = rt
        return gone

    def _pod_grace(self, key: ResKey, current: JSON, options: JSON) -> int:
        """Seconds of graceful termination a delete asks for (0: remove now, as before)."""
        if key != ("", "v1", "pods") or not self.graceful_pod_deletion:
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

    def _dependents(self, uid: str) -> list[tuple[ResKey, str | None, str]]:
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

    # -- HTTP ----------------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw.path.startswith("/openapi/"):
            doc = self._openapi(raw.path)
            if doc is None:
                return self._json(ApiError(404, "NotFound", "not found").status(), 404)
            return self._json(doc)
        p = parse_api_path(raw.path)
        if p is None:
            # Discovery, /version, /openapi and custom reactions: kmock as is.
            return await super().__call__(raw)
        self.request_count += 1
        key = (p.group, p.version, p.plural)
        stat = (raw.method, p.plural, p.subresource or "", raw.query.get("watch", ""))
        self.request_stats[stat] = self.request_stats.get(stat, 0) + 1
        try:
            return await self._serve(raw, key, p)
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)
        except ConnectionResetError:
            raise
        except Exception as e:  # the emulator's own bug: say so loudly, as a 500
            import traceback

            err = ApiError(500, "InternalError", f"emulator error: {e!r}", {"traceback": traceback.format_exc()})
            return aiohttp.web.json_response(err.status(), status=500)

    async def _serve(self, raw: aiohttp.web.BaseRequest, key: ResKey, p: ApiPath) -> aiohttp.web.StreamResponse:
        q = raw.query
        method = raw.method.upper()
        rt = self._type(key)
        ns = p.namespace if rt.namespaced else None
        strict = q.get("fieldValidation", "").lower() == "strict"
        dry_run = q.get("dryRun") == "All"
        warnings: list[str] = []
        body: Any = None
        if raw.can_read_body:
            text = await raw.text()
            if text:
                ctype = raw.headers.get("Content-Type", "application/json")
                if "yaml" in ctype:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        f"{ctype} (server-side apply) is not emulated; use client-side apply",
                    )
                try:
                    body = json.loads(text)
                except ValueError:
                    raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None

        gate = self.gates.get((key, method))
        if gate is not None and not gate.is_set():
            self.held[(key, method)] = self.held.get((key, method), 0) + 1
            await gate.wait()
        if method == "GET" and q.get("watch") in ("true", "1"):
            return await self._watch(raw, key, ns, p.name)
        if method == "GET" and p.name is None:
            items = self.list(key, ns, q.get("labelSelector"), q.get("fieldSelector"))
            if self._wants_table(raw):
                return self._json(self._table(rt, items))
            return self._json(
                {
                    "apiVersion": rt.api_version,
                    "kind": f"{rt.kind}List",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                }
            )
        if method == "GET":
            obj = self.get(key, ns, p.name)
            if p.subresource not in (None, "status"):
                raise ApiError(404, "NotFound", f"subresource {p.subresource} is not emulated")
            return self._json(self._table(rt, [obj]) if self._wants_table(raw) else obj)
        if method == "POST" and p.name is None:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            obj = self.create(key, ns, body, strict=strict, dry_run=dry_run, warnings=warnings)
            return self._json(obj, 201, warnings)
        if method == "PATCH" and p.name is not None:
            ctype = raw.headers.get("Content-Type", "")
            obj = self.patch(
                key,
                ns,
                p.name,
                body,
                ctype,
                subresource=p.subresource,
                strict=strict,
                dry_run=dry_run,
                warnings=warnings,
            )
            return self._json(obj, 200, warnings)
        if method == "PUT" and p.name is not None:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            expect = (body.get("metadata") or {}).get("resourceVersion")
            obj = self.update(
                key,
                ns,
                p.name,
                body,
                subresource=p.subresource,
                expect_rv=expect,
                strict=strict,
                dry_run=dry_run,
                warnings=warnings,
            )
            return self._json(obj, 200, warnings)
        if method == "DELETE" and p.name is not None:
            options = dict(body) if isinstance(body, dict) else {}
            if q.get("gracePeriodSeconds") is not None:  # kubectl may pass it as a query parameter
                options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            obj = self.delete(key, ns, p.name, options, dry_run=dry_run)
            return self._json(obj, 200)
        if method == "DELETE":
            items = self.list(key, ns, q.get("labelSelector"), q.get("fieldSelector"))
            for o in items:
                self.delete(key, o["metadata"].get("namespace"), o["metadata"]["name"], dry_run=dry_run)
            return self._json({"apiVersion": rt.api_version, "kind": f"{rt.kind}List", "metadata": {}, "items": items})
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {raw.path}")

    @staticmethod
    def _json(obj: Any, status: int = 200, warnings: list[str] | None = None) -> aiohttp.web.Response:
        headers = {}
        if warnings:
            headers["Warning"] = ", ".join(f'299 - "{w}"' for w in warnings)
        return aiohttp.web.Response(
            body=json.dumps(obj, separators=(",", ":")).encode(),
            status=status,
            content_type="application/json",
            headers=headers,
        )

    @staticmethod
    def _wants_table(raw: aiohttp.web.BaseRequest) -> bool:
        accept = raw.headers.get("Accept", "")
        return "as=Table" in accept

    def _table(self, rt: ResourceType, items: list[JSON]) -> JSON:
        cols: list[JSON] = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        pcols = rt.printer_columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        for c in pcols:
            cols.append(
                {
                    "name": c["name"],
                    "type": c["type"],
                    "format": c.get("format", ""),
                    "description": c.get("description", ""),
                    "priority": c.get("priority", 0),
                }
            )
        rows = []
        for o in items:
            cells: list[Any] = [o["metadata"]["name"]]
            for c in pcols:
                found = jsonpath(o, c["jsonPath"])
                if not found:
                    cells.append(None)
                    continue
                v = found[0]
                if c["type"] == "date":
                    cells.append(_age(v) if isinstance(v, str) else None)
                elif c["type"] == "string" and isinstance(v, (list, dict)):
                    cells.append(json.dumps(v, separators=(",", ":")))
                elif c["type"] == "string":
                    cells.append(str(v).lower() if isinstance(v, bool) else str(v))
                else:
                    cells.append(v)
            meta = {k: v for k, v in o["metadata"].items() if k != "managedFields"}
            rows.append(
                {
                    "cells": cells,
                    "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self.rv)},
            "columnDefinitions": cols,
            "rows": rows,
        }

    async def _watch(
        self, raw: aiohttp.web.BaseRequest, key: ResKey, ns: str | None, name: str | None
    ) -> aiohttp.web.StreamResponse:
        q = raw.query
        lmatch = parse_label_selector(q.get("labelSelector"))
        fsel = q.get("fieldSelector")
        if name:
            fsel = f"metadata.name={name}" + (f",{fsel}" if fsel else "")
        fmatch = parse_field_selector(fsel)

        def matches(o: JSON | None) -> bool:
            if o is None:
                return False
            m = o["metadata"]
            if ns is not None and m.get("namespace") != ns:
                return False
            return lmatch(m.get("labels") or {}) and fmatch(o)

        resp = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(raw)

        async def send(typ: str, obj: JSON) -> None:
            await resp.write(json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n")

        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        deadline = time.monotonic() + timeout if timeout else math.inf
        bookmarks = q.get("allowWatchBookmarks") == "true"
        since = q.get("resourceVersion")
        log = self.log[key]
        position = self.log_dropped[key] + len(log)  # absolute index of the next entry to send
        rt = self.types[key]
        if since and since != "0":
            start = int(since)
            oldest_kept = log[0].rv if log else self.rv + 1
            if self.log_dropped[key] and start < oldest_kept - 1:
                await send("ERROR", ApiError(410, "Expired", f"too old resource version: {start}").status())
                return resp
            position = self.log_dropped[key] + next((i for i, e in enumerate(log) if e.rv > start), len(log))
        else:
            for o in self.list(key, ns):
                if matches(o):
                    await send("ADDED", o)
            if q.get("sendInitialEvents") == "true":
                await send(
                    "BOOKMARK",
                    {
                        "kind": rt.kind,
                        "apiVersion": rt.api_version,
                        "metadata": {
                            "resourceVersion": str(self.rv),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                )
        last_bookmark = time.monotonic()
        try:
            while time.monotonic() < deadline:
                idx = position - self.log_dropped[key]
                if idx < 0:
                    await send("ERROR", ApiError(410, "Expired", "the watch fell behind the event log").status())
                    return resp
                pending = self.log[key][idx:]
                position += len(pending)
                for e in pending:
                    now_in, was_in = matches(e.obj), matches(e.old)
                    if e.type == "MODIFIED" and now_in and not was_in:
                        await send("ADDED", e.obj)
                    elif (e.type == "MODIFIED" and was_in and not now_in) or (
                        e.type == "DELETED" and (now_in or was_in)
                    ):
                        await send("DELETED", e.obj)
                    elif now_in:
                        await send(e.type, e.obj)
                if bookmarks and time.monotonic() - last_bookmark > self.bookmark_interval:
                    last_bookmark = time.monotonic()
                    await send(
                        "BOOKMARK",
                        {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(self.rv)}},
                    )
                if position - self.log_dropped[key] >= len(self.log[key]):
                    wait = min(self.bookmark_interval, max(deadline - time.monotonic(), 0.0))
                    async with self.changed:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.changed.wait(), timeout=wait)
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        return resp

    # -- discovery and OpenAPI ------------------------------------------------------------------

    def _get_resources(self) -> list[kmock.resource]:
        return [kmock.resource(*k) for k in self.types]

    async def _serve_version(self, request: Any) -> Any:
        group, version = request.resource.group, request.resource.version
        types = [rt for rt in self.types.values() if rt.key[0] == group and rt.key[1] == version]
        if not types:
            raise kmock.KubernetesResourceNotFoundError()
        resources: list[JSON] = []
        for rt in types:
            resources.append(
                {
                    "name": rt.plural,
                    "singularName": rt.singular,
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": _VERBS,
                    "shortNames": rt.short_names,
                    "categories": rt.categories,
                }
            )
            if rt.status_subresource:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "apiVersion": "v1",
            "kind": "APIResourceList",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _openapi(self, path: str) -> JSON | None:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself."""
        gvs = sorted({(g, v) for g, v, _ in self.types})
        if path.rstrip("/") == "/openapi/v3":
            return {
                "paths": {
                    (f"apis/{g}/{v}" if g else f"api/{v}"): {
                        "serverRelativeURL": f"/openapi/v3/{'apis/' + g if g else 'api'}/{v}?hash={self.rv}"
                    }
                    for g, v in gvs
                }
            }
        m = re.fullmatch(r"/openapi/v3/(?:apis/([^/]+)|api)/([^/]+)", path)
        if m is None:
            return None
        group, version = m.group(1) or "", m.group(2)
        params = [
            {"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
            for n in ("dryRun", "fieldManager", "fieldValidation")
        ]
        paths: JSON = {}
        for rt in self.types.values():
            if rt.key[:2] != (group, version):
                continue
            base = f"/apis/{group}/{version}" if group else f"/api/{version}"
            scope = "/namespaces/{namespace}" if rt.namespaced else ""
            gvk = {"group": group, "version": version, "kind": rt.kind}
            op = {"x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {}}
            paths[f"{base}{scope}/{rt.plural}"] = {"post": op}
            paths[f"{base}{scope}/{rt.plural}/{{name}}"] = {"patch": op, "put": op}
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": paths,
            "components": {"schemas": {}},
        }

    async def _serve_server_version(self, request: Any) -> Any:
        return {
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-svoe-emulator",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-04-23T00:00:00Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        }


# ---------------------------------------------------------------------------------------------
# Running it: a background thread, a kubeconfig, a small synchronous client
# ---------------------------------------------------------------------------------------------


def resource_key(api_version: str, plural: str) -> ResKey:
    group, _, version = api_version.rpartition("/")
    return (group, version, plural)


PODS = ("", "v1", "pods")
CONFIGMAPS = ("", "v1", "configmaps")
SERVICES = ("", "v1", "services")
EVENTS = ("", "v1", "events")
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


class KubeEmulator:
    """The emulated API server on 127.0.0.1, on its own thread, with a kubeconfig file.

    Use as a context manager. Tests talk to it over HTTP (`request`, `get`, `create`, ...), like
    kubectl or a kubelet would; `server` and `call()` give direct access for assertions on the
    event log.
    """

    def __init__(
        self,
        *,
        validate_custom_resources: bool = True,
        garbage_collection: bool = True,
        workdir: Path | None = None,
        keep_history: bool = True,
        graceful_pod_deletion: bool = False,
    ) -> None:
        self._validate = validate_custom_resources
        self._gc = garbage_collection
        self._graceful_pods = graceful_pod_deletion
        self._keep_history = keep_history
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="kube-emulator-")) if workdir is None else workdir
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: ApiServer | None = None
        self.url = ""
        self.kubeconfig = self.workdir / "kubeconfig"
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._kubelet: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(20) or self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error!r}")
        self._write_kubeconfig()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to start()
            self._error = e
            self._started.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = ApiServer()
        server.validate_custom_resources = self._validate
        server.garbage_collection = self._gc
        server.graceful_pod_deletion = self._graceful_pods
        server.keep_history = self._keep_history
        async with server, kmock.Server(server) as srv:
            self.server = server
            self.url = str(srv.url).rstrip("/")
            server.create(("", "v1", "namespaces"), None, {"metadata": {"name": "default"}})
            self._started.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(20)
        if self._own_dir:
            for p in sorted(self.workdir.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            self.workdir.rmdir()

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator", "namespace": "default"}}
            ],
            "current-context": "emulator",
        }
        self.kubeconfig.write_text(yaml.safe_dump(cfg))

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (kubectl, the operator) that should talk to the emulator."""
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        env.update(extra)
        return env

    # -- direct access (runs on the emulator's loop) --------------------------------------------

    def call[T](self, fn: Callable[[ApiServer], T], timeout: float = 30) -> T:
        """Run `fn(server)` on the emulator's loop and return its result (thread-safe)."""
        assert self.loop is not None and self.server is not None
        server = self.server

        async def run() -> T:
            return fn(server)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def close_gate(self, key: ResKey, method: str) -> None:
        """Hold every `method` request for `key` until `open_gate` (they are then served)."""
        self.call(lambda s: s.gates.__setitem__((key, method.upper()), asyncio.Event()))

    def open_gate(self, key: ResKey, method: str) -> None:
        def release(s: ApiServer) -> None:
            gate = s.gates.pop((key, method.upper()), None)
            if gate is not None:
                gate.set()

        self.call(release)

    def held(self, key: ResKey, method: str) -> int:
        """How many requests a gate has held so far."""
        return self.call(lambda s: s.held.get((key, method.upper()), 0))

    def start_kubelet(self, delay: float = 0.0) -> None:
        """Mark every new pod Running and Ready after `delay` seconds, as a kubelet would report.

        For benchmarks and end-to-end runs where no containers start; tests that check
        readiness handling patch pods/status themselves.
        """

        async def kubelet(s: ApiServer) -> None:
            position = s.log_dropped[PODS] + len(s.log[PODS])
            while True:
                idx = position - s.log_dropped[PODS]
                pending = s.log[PODS][max(idx, 0) :]
                position += len(pending)
                for e in pending:
                    if e.type == "ADDED":
                        meta = e.obj["metadata"]
                        asyncio.get_running_loop().call_later(
                            delay, self._mark_ready, s, meta.get("namespace"), meta["name"], meta["uid"]
                        )
                async with s.changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(s.changed.wait(), 1.0)

        def spawn(s: ApiServer) -> None:
            self._kubelet = asyncio.get_running_loop().create_task(kubelet(s))

        self.call(spawn)

    @staticmethod
    def _mark_ready(s: ApiServer, namespace: str | None, name: str, uid: str) -> None:
        obj = s.store[PODS].get((namespace, name))
        if obj is not None and obj["metadata"]["uid"] == uid:
            s.patch(PODS, namespace, name, pod_status(True), "application/merge-patch+json", subresource="status")

    def timeline(self, key: ResKey) -> list[tuple[int, str, JSON]]:
        """Every watch event of a resource so far: (resourceVersion, type, object)."""
        return self.call(lambda s: [(e.rv, e.type, e.obj) for e in s.log[key]])

    # -- HTTP client ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            payload = json.loads(e.read() or b"{}")
            raise ApiError(
                e.code, payload.get("reason", ""), payload.get("message", ""), payload.get("details")
            ) from None

    @staticmethod
    def path(key: ResKey, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        group, version, plural = key
        p = f"/apis/{group}/{version}" if group else f"/api/{version}"
        if namespace:
            p += f"/namespaces/{namespace}"
        p += f"/{plural}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p

    def create(self, key: ResKey, obj: JSON, namespace: str | None = None) -> JSON:
        ns = namespace or obj.get("metadata", {}).get("namespace")
        return dict(self.request("POST", self.path(key, ns), obj))

    def get(self, key: ResKey, namespace: str | None, name: str) -> JSON:
        return dict(self.request("GET", self.path(key, namespace, name)))

    def try_get(self, key: ResKey, namespace: str | None, name: str) -> JSON | None:
        try:
            return self.get(key, namespace, name)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def list(self, key: ResKey, namespace: str | None = None, selector: str | None = None) -> list[JSON]:
        query = {"labelSelector": selector} if selector else None
        return list(self.request("GET", self.path(key, namespace), query=query)["items"])

    def patch(
        self,
        key: ResKey,
        namespace: str | None,
        name: str,
        patch: Any,
        sub: str | None = None,
        content_type: str = "application/merge-patch+json",
    ) -> JSON:
        return dict(self.request("PATCH", self.path(key, namespace, name, sub), patch, content_type))

    def delete(self, key: ResKey, namespace: str | None, name: str, options: JSON | None = None) -> JSON:
        """DELETE with optional DeleteOptions (e.g. gracePeriodSeconds, preconditions)."""
        return dict(self.request("DELETE", self.path(key, namespace, name), options))

    def apply_crd(self, crd: JSON) -> JSON:
        return self.create(CRDS, crd)

    def set_pod_ready(self, namespace: str, name: str, ready: bool = True) -> JSON:
        """What a kubelet reports once every container runs and passes its readiness probe."""
        return self.patch(PODS, namespace, name, pod_status(ready), sub="status")

    def wait_for[T](
        self, probe: Callable[[], T | None], timeout: float = 20, interval: float = 0.1, what: str = "condition"
    ) -> T:
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pod_status(ready: bool) -> JSON:
    now = _now()
    flag = "True" if ready else "False"
    return {
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                {"type": "Ready", "status": flag, "lastTransitionTime": now},
            ],
            "startTime": now,
        }
    }
