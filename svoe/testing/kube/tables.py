"""Server-side tables for kubectl (`Accept: ...;as=Table`): printer columns and their JSONPath."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from svoe.api.timestamps import parse_rfc3339
from svoe.testing.kube.model import JSON, ResourceType
from svoe.testing.kube.selectors import dig


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
                    nxt.extend(x for x in item if isinstance(x, dict) and str(dig(x, m.group(1))) == m.group(2))
        current = nxt
    return current


def age(ts: str | None) -> str:
    """kubectl's AGE column: 42s, 5m, 3h, 2d."""
    if not ts:
        return "<unknown>"
    # A date column may hold any RFC 3339 time (fractions of a second too), not only metav1.Time.
    then = parse_rfc3339(ts)
    if then is None:
        return "<invalid>"
    secs = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    if secs < 120:
        return f"{max(secs, 0)}s"
    if secs < 3600 * 3:
        return f"{secs // 60}m"
    if secs < 86400 * 2:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def table(rt: ResourceType, items: list[JSON], resource_version: int) -> JSON:
    """A meta.k8s.io/v1 Table of `items` with the type's printer columns (or just Name, Age)."""
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
                cells.append(age(v) if isinstance(v, str) else None)
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
        "metadata": {"resourceVersion": str(resource_version)},
        "columnDefinitions": cols,
        "rows": rows,
    }
