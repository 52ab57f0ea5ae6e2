"""Custom resources checked like the API server does: structural defaulting and pruning, the
OpenAPI schema (types, enums, patterns, bounds, list types) and CEL rules (cel-python).

Updates ratchet, as in Kubernetes 1.33 (CRDValidationRatcheting): a value that fails the schema
or a rule but did not change in this update is let through, so a stored object that an older
schema accepted can still get status updates and finalizers.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema

from svoe.api.timestamps import now_rfc3339
from svoe.testing.kube.model import JSON, ApiError, CelRule, ResourceType

try:  # CEL rules of CRDs are evaluated when cel-python is installed (a dev dependency).
    import celpy
except ImportError:  # pragma: no cover
    celpy = None  # type: ignore[assignment]  # then CEL rules are not checked

CelMemo = dict[tuple[str, str], tuple[bool, str]]  # (rule, value as JSON) -> (ok, error message)


def to_jsonschema(node: JSON) -> JSON:
    """An OpenAPI v3 structural node -> JSON Schema draft 4 (nullable, list types)."""
    out: JSON = {}
    for k, v in node.items():
        if k == "properties":
            out[k] = {p: to_jsonschema(s) for p, s in v.items()}
        elif k == "items" or (k == "additionalProperties" and isinstance(v, dict)):
            out[k] = to_jsonschema(v)
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


def duplicate_map_keys(node: JSON, value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Items of an `x-kubernetes-list-type: map` list that repeat another's keys (a JSON Schema cannot say it)."""
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        keys = node.get("x-kubernetes-list-map-keys") if node.get("x-kubernetes-list-type") == "map" else None
        seen: set[str] = set()
        for i, item in enumerate(value):
            if keys and isinstance(item, dict):
                key = json.dumps([item.get(k) for k in keys])
                if key in seen:
                    yield f"{path}[{i}]", f"Duplicate value: {dict((k, item.get(k)) for k in keys)!r}"
                seen.add(key)
            yield from duplicate_map_keys(node["items"], item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, sub in (node.get("properties") or {}).items():
            if k in value:
                yield from duplicate_map_keys(sub, value[k], f"{path}.{k}" if path else k)


def defaults_and_prune(node: JSON, value: Any, path: str, unknown: list[str]) -> Any:
    """Apply structural defaults and drop (reporting) fields the schema does not declare."""
    if not isinstance(value, dict) and not isinstance(value, list):
        return value
    if isinstance(value, list):
        items = node.get("items")
        return [defaults_and_prune(items, v, f"{path}[{i}]", unknown) for i, v in enumerate(value)] if items else value
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return value
    props = node.get("properties")
    if props is None:
        addl = node.get("additionalProperties")
        if isinstance(addl, dict):
            return {k: defaults_and_prune(addl, v, f"{path}.{k}", unknown) for k, v in value.items()}
        return value
    out: JSON = {}
    for k, v in value.items():
        if k in props:
            out[k] = defaults_and_prune(props[k], v, f"{path}.{k}" if path else k, unknown)
        else:
            unknown.append(f"{path}.{k}" if path else k)
    for k, sub in props.items():
        if k not in out and "default" in sub:
            out[k] = defaults_and_prune(sub, copy.deepcopy(sub["default"]), f"{path}.{k}", unknown)
    return out


def collect_cel(node: JSON, path: str, out: dict[str, list[CelRule]]) -> None:
    """Compile the x-kubernetes-validations of `node` and below into `out` (schema path -> rules)."""
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
        collect_cel(sub, f"{path}.{k}" if path else k, out)
    if isinstance(node.get("items"), dict):
        collect_cel(node["items"], f"{path}[]", out)


def crd_resource_types(crd: JSON) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves, one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        key = (spec["group"], version["name"], names["plural"])
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        cel: dict[str, list[CelRule]] = {}
        validator = None
        if schema is not None:
            validator = jsonschema.Draft4Validator(to_jsonschema(schema))
            collect_cel(schema, "", cel)
        out.append(
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
    return out


def crd_status(crd: JSON) -> JSON:
    """The status the API server gives a new CustomResourceDefinition: names accepted, established."""
    return {
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": now_rfc3339()},
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "lastTransitionTime": now_rfc3339(),
            },
        ],
        "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
    }


def values_at(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every (concrete path, value) at a schema path such as `spec.shards[].name`."""
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


def split_path(where: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", where)]


_MISSING = object()


def unchanged(old: Any, new: Any, path: list[Any]) -> bool:
    """Whether the value at `path` exists in `old` and is the same in `new` (for ratcheting)."""
    for p in path:
        old = old[p] if isinstance(old, (dict, list)) and _has(old, p) else _MISSING
        new = new[p] if isinstance(new, (dict, list)) and _has(new, p) else _MISSING
    return old is not _MISSING and bool(old == new)


def _has(container: Any, key: Any) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(key, int) and 0 <= key < len(container)


def admit(
    rt: ResourceType,
    obj: JSON,
    *,
    strict: bool,
    warnings: list[str],
    old: JSON | None,
    validate: bool,
    cel_memo: CelMemo,
) -> JSON:
    """Default, prune and (with `validate`) validate a custom resource; ApiError 400/422 if bad."""
    if rt.schema is None:
        return obj
    unknown: list[str] = []
    meta = obj.get("metadata", {})
    body = {k: v for k, v in obj.items() if k != "metadata"}
    pruned: JSON = defaults_and_prune(rt.schema, body, "", unknown)
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
    if not validate:
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
            if old is not None and unchanged(old, pruned, list(err.absolute_path)):
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
    errors.extend(duplicate_map_keys(rt.schema, {k: v for k, v in pruned.items() if k != "metadata"}, ""))
    if not errors:
        errors.extend(check_cel(rt, pruned, old, cel_memo))
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


def check_cel(rt: ResourceType, obj: JSON, old: JSON | None, memo: CelMemo) -> list[tuple[str, str]]:
    """The CEL rules `obj` breaks, as (field, message); unchanged values are not re-checked."""
    errors = []
    for path, rules in rt.cel.items():
        for where, value in values_at(obj, path):
            if old is not None and unchanged(old, obj, split_path(where)):
                continue
            activation = celpy.adapter.json_to_cel({"self": value})
            value_key = json.dumps(value, sort_keys=True)
            for r in rules:
                # Rules are pure functions of `self`; cel-python is slow, so results are memoized.
                memo_key = (r.rule, value_key)
                if memo_key in memo:
                    ok, r_msg = memo[memo_key]
                else:
                    try:
                        ok, r_msg = bool(r.program.evaluate(activation)), ""
                    except Exception as e:  # an evaluation error rejects, as in the API server
                        ok, r_msg = False, f"rule evaluation error: {e}"
                    if len(memo) > 10_000:
                        memo.clear()
                    memo[memo_key] = (ok, r_msg)
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
