"""A small asyncio Kubernetes client for the operator's own writes (children, status, cleanup).

It uses the credentials kopf logs in with (kopf.ConnectionInfo), so kubeconfig, in-cluster
service accounts and exec plugins work the same for kopf's watches and for these calls.
Objects are plain dicts: the render functions produce dicts and nothing here needs models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from svoe.operator.errors import ApiNotFoundError, api_error

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


def resource_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None, sub: str | None = None
) -> str:
    path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


PLURALS = {"Pod": "pods", "ConfigMap": "configmaps", "Service": "services", "Deployment": "deployments"}
API_VERSIONS = {"Deployment": "apps/v1"}  # the rest are core v1


def kind_path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    return resource_path(API_VERSIONS.get(kind, "v1"), PLURALS[kind], namespace, name)


class KubeClient:
    """JSON over HTTP to the API server. One aiohttp session, created lazily on the running loop."""

    def __init__(self, info: kopf.ConnectionInfo, max_connections: int = 64) -> None:
        self.info = info
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._tmpfiles: list[str] = []

    def _file(self, data: str | bytes) -> str:
        fd, path = tempfile.mkstemp(prefix="svoe-kube-")
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        self._tmpfiles.append(path)
        return path

    def _ssl(self) -> ssl.SSLContext | bool:
        i = self.info
        if not i.server.startswith("https://"):
            return False
        ctx = ssl.create_default_context()
        if i.ca_path:
            ctx.load_verify_locations(cafile=os.fsdecode(i.ca_path))
        elif i.ca_data:
            ca = i.ca_data.decode() if isinstance(i.ca_data, bytes) else i.ca_data
            ctx.load_verify_locations(cadata=ca)
        if i.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert = os.fsdecode(i.certificate_path) if i.certificate_path else None
        key = os.fsdecode(i.private_key_path) if i.private_key_path else None
        if i.certificate_data:
            cert = self._file(i.certificate_data)
        if i.private_key_data:
            key = self._file(i.private_key_data)
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def _headers(self) -> dict[str, str]:
        i = self.info
        headers = {"Accept": "application/json", "User-Agent": "svoe-operator"}
        if i.token:
            headers["Authorization"] = f"{i.scheme or 'Bearer'} {i.token}"
        elif i.username and i.password:
            headers["Authorization"] = aiohttp.BasicAuth(i.username, i.password).encode()
        return headers

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, ssl=self._ssl())
            self._session = aiohttp.ClientSession(
                base_url=self.info.server.rstrip("/") + "/",
                connector=connector,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    def relogin(self, info: kopf.ConnectionInfo) -> None:
        """New credentials (kopf re-authenticated): the next request opens a new session."""
        self.info = info
        if self._session is not None and not self._session.closed:
            old = self._session
            self._session = None
            # Closing waits for in-flight requests of other tasks; do not block the caller on it.
            asyncio.get_running_loop().create_task(old.close())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        for path in self._tmpfiles:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session().request(method, path.lstrip("/"), data=data, headers=headers, params=params) as resp:
            text = await resp.text()
            if resp.status >= 400:
                try:
                    err = json.loads(text)
                    reason, message = str(err.get("reason", "")), str(err.get("message", text))
                except ValueError:
                    reason, message = resp.reason or "", text
                raise api_error(resp.status, reason, message)
            return json.loads(text) if text else None

    # -- typed helpers --------------------------------------------------------------------------

    async def create(self, obj: JSON) -> JSON:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], PLURALS[obj["kind"]], meta.get("namespace"))
        return dict(await self.request("POST", path, obj))

    async def get(self, kind: str, namespace: str, name: str) -> JSON:
        return dict(await self.request("GET", kind_path(kind, namespace, name)))

    async def list(self, kind: str, namespace: str, selector: str) -> list[JSON]:
        path = kind_path(kind, namespace)
        return list((await self.request("GET", path, params={"labelSelector": selector}))["items"])

    async def patch(self, kind: str, namespace: str, name: str, patch: JSON) -> JSON:
        return dict(await self.request("PATCH", kind_path(kind, namespace, name), patch, MERGE_PATCH))

    async def delete(
        self, kind: str, namespace: str, name: str, uid: str | None = None, grace_seconds: int | None = None
    ) -> None:
        """Delete, tolerating an already-gone object. With `uid`, never deletes a namesake."""
        body: JSON = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        with contextlib.suppress(ApiNotFoundError):  # already gone
            await self.request("DELETE", kind_path(kind, namespace, name), body)

    async def patch_status(self, api_version: str, plural: str, namespace: str, name: str, status: JSON) -> JSON:
        path = resource_path(api_version, plural, namespace, name, "status")
        return dict(await self.request("PATCH", path, {"status": status}, MERGE_PATCH))

    async def proxy_get(self, namespace: str, pod: str, port: int, path: str, timeout: float) -> Any:
        """GET a pod's HTTP endpoint through the API server's pod proxy (RBAC: pods/proxy get).

        The API server reaches every pod; the operator need not share a network with them."""
        url = resource_path("v1", "pods", namespace, f"{pod}:{port}", "proxy") + "/" + path.lstrip("/")
        async with self.session().get(url.lstrip("/"), timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise api_error(resp.status, resp.reason or "", text[:200])
            return json.loads(text)
