"""Matching and changing objects: label and field selectors, dotted paths, RFC 7386 merge patch."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from svoe.testing.kube.model import JSON, ApiError


def split_top(s: str) -> list[str]:
    """Split on the commas that are not inside parentheses (`a in (x,y),b` -> two requirements)."""
    parts: list[str] = []
    depth, cur = 0, ""
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
    for req in split_top(sel):
        m = re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\((.*)\)", req)
        if m:
            values = {v.strip() for v in m.group(3).split(",")}
            checks.append(_label_in(m.group(1), values, negate=m.group(2) == "notin"))
            continue
        m = re.fullmatch(r"([^\s!=]+)\s*(!=|==|=)\s*(.*)", req)
        if m:
            checks.append(_label_equals(m.group(1), m.group(3).strip(), negate=m.group(2) == "!="))
            continue
        if req.startswith("!"):
            checks.append(_label_exists(req[1:].strip(), negate=True))
        elif re.fullmatch(r"[^\s!=(),]+", req):
            checks.append(_label_exists(req, negate=False))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {req!r}")
    return lambda labels: all(c(labels) for c in checks)


def _label_in(key: str, values: set[str], negate: bool) -> Callable[[dict[str, str]], bool]:
    def check(labels: dict[str, str]) -> bool:
        return (labels.get(key) in values) != negate

    return check


def _label_equals(key: str, value: str, negate: bool) -> Callable[[dict[str, str]], bool]:
    def check(labels: dict[str, str]) -> bool:
        return (labels.get(key) == value) != negate

    return check


def _label_exists(key: str, negate: bool) -> Callable[[dict[str, str]], bool]:
    def check(labels: dict[str, str]) -> bool:
        return (key in labels) != negate

    return check


def dig(obj: Any, dotted: str) -> Any:
    """The value at a dotted path (`metadata.name`), or None."""
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def parse_field_selector(sel: str | None) -> Callable[[JSON], bool]:
    if not sel:
        return lambda _: True
    checks: list[Callable[[JSON], bool]] = []
    for req in split_top(sel):
        m = re.fullmatch(r"([^\s!=]+)\s*(!=|==|=)\s*(.*)", req)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {req!r}")
        path, op, val = m.group(1), m.group(2), m.group(3)

        def check(o: JSON, p: str = path, v: str = val, neg: bool = op == "!=") -> bool:
            got = dig(o, p)
            got_s = "" if got is None else (str(got).lower() if isinstance(got, bool) else str(got))
            return (got_s != v) if neg else (got_s == v)

        checks.append(check)
    return lambda obj: all(c(obj) for c in checks)


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
