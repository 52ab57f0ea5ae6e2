"""The emulator's HTTP face: object requests, watches, server-side tables, discovery, OpenAPI.

`ApiServer` serves every object URL itself (kmock's parser and handlers are kept for discovery,
/version and custom reactions): list kinds, label and field selectors, tables for kubectl,
dry runs, field validation and warnings, and watches that resume from a resourceVersion, with
bookmarks and `sendInitialEvents`; and the pod proxy (`GET pods/NAME:PORT/proxy/PATH`), which
forwards to the pod's `status.podIP`, or to where `pod_address` says the pod's port listens (a
stand-in kubelet that maps ports). Test hooks: gates hold requests (a slow or stuck API server);
`request_count` and `request_stats` count what clients asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
import traceback
from collections.abc import Callable
from typing import Any

import aiohttp.web
import kmock

from svoe.testing.kube.model import JSON, PODS, VERBS, ApiError, ApiPath, ResKey, ResourceType, parse_api_path
from svoe.testing.kube.selectors import parse_field_selector, parse_label_selector
from svoe.testing.kube.store import ObjectStore
from svoe.testing.kube.tables import table


class ApiServer(ObjectStore):
    """kmock's Kubernetes emulator that serves object requests like an API server."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.bookmark_interval = 15.0
        self.request_count = 0
        self.request_stats: dict[tuple[str, str, str, str], int] = {}
        # Test hooks: requests matching a gate wait until it opens (a slow or stuck API server).
        self.gates: dict[tuple[ResKey, str], asyncio.Event] = {}
        self.held: dict[tuple[ResKey, str], int] = {}
        # (namespace, pod, port) -> (host, port) where that port listens; None: podIP:port.
        self.pod_address: Callable[[str | None, str, int], tuple[str, int] | None] | None = None

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
        if method == "GET" and p.plural == "pods" and p.name and (p.subresource or "").split("/")[0] == "proxy":
            return await self._proxy(raw, ns, p.name, (p.subresource or "").removeprefix("proxy"))
        if method == "GET" and p.name is not None:
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

    async def _proxy(
        self, raw: aiohttp.web.BaseRequest, ns: str | None, target: str, path: str
    ) -> aiohttp.web.Response:
        name, _, port_text = target.partition(":")
        pod = self.get(PODS, ns, name)
        port = int(port_text) if port_text.isdigit() else 80
        address = self.pod_address(ns, name, port) if self.pod_address else None
        if address is None:
            ip = (pod.get("status") or {}).get("podIP")
            if not ip:
                raise ApiError(503, "ServiceUnavailable", f"pod {name} has no IP address yet")
            address = (str(ip), port)
        url = f"http://{address[0]}:{address[1]}{path or '/'}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.get(url, params=raw.query) as resp,
            ):
                body = await resp.read()
                ctype = resp.headers.get("Content-Type", "application/octet-stream")
                return aiohttp.web.Response(body=body, status=resp.status, headers={"Content-Type": ctype})
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: {e}") from None

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
        return table(rt, items, self.rv)

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
                    "verbs": VERBS,
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
