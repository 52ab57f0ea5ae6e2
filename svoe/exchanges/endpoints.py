"""Point a cryptofeed feed at another host: the replay exchange, a testnet or a mirror.

cryptofeed declares endpoints as class attributes (``websocket_endpoints``, ``rest_endpoints``),
so a subclass with the same paths on another scheme+host+port redirects a feed without
touching the library. Trusting a private CA is scoped the same way: the websocket endpoints carry
an ``ssl`` option (cryptofeed passes endpoint options to ``websockets.connect``) and the REST
connections of the subclass open their aiohttp sessions with a connector that trusts the CA.
Nothing global is patched.

One thing stays shared with the original class: cryptofeed's process-wide symbol registry
(``cryptofeed.symbols.Symbols``) is keyed by exchange id, so a redirected feed reuses symbols an
original feed of the same exchange already loaded in this process, and vice versa.
"""

from __future__ import annotations

import dataclasses
import ssl
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from cryptofeed import connection as _cf_connection
from cryptofeed.exchanges import EXCHANGE_MAP
from cryptofeed.feed import Feed

# cryptofeed ships py.typed but leaves these untyped; as Any, subclasses may call their methods
# under mypy --strict.
_HTTPAsyncConn: Any = _cf_connection.HTTPAsyncConn
_HTTPPoll: Any = _cf_connection.HTTPPoll

__all__ = ["rebase_url", "redirected_feed_class"]


def rebase_url(url: str, base: str) -> str:
    """``url`` with the scheme, host and port of ``base``; path and query are kept.

    A path on ``base`` (e.g. a mirror under ``/binance``) is prefixed to the original path.
    """
    target = urlsplit(base)
    if not target.scheme or not target.netloc:
        raise ValueError(f"endpoint base {base!r} must be scheme://host[:port], e.g. wss://127.0.0.1:8443")
    original = urlsplit(url)
    prefix = target.path.rstrip("/")
    return urlunsplit((target.scheme, target.netloc, prefix + original.path, original.query, original.fragment))


def _client_ssl_context(ca_file: str) -> ssl.SSLContext:
    # The system store plus ca_file: passing cafile= to create_default_context would trust only it.
    ctx = ssl.create_default_context()
    try:
        ctx.load_verify_locations(cafile=ca_file)
        return ctx
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ca_file {ca_file!r} is not a readable PEM certificate: {exc}") from exc


class _TrustingHTTPConn(_HTTPAsyncConn):  # type: ignore[misc]
    """cryptofeed's REST connection, with an aiohttp session that trusts one extra CA."""

    def __init__(self, conn_id: str, proxy: Any, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(conn_id, proxy)
        self._ssl_context = ssl_context

    async def _open(self) -> None:
        if self.is_open:
            await super()._open()  # logs the "already created" warning, as upstream does
            return
        self.conn = _session(self._ssl_context)
        self._reset_counters()


class _TrustingHTTPPoll(_HTTPPoll):  # type: ignore[misc]
    """cryptofeed's REST poller (e.g. Binance open interest), trusting one extra CA."""

    def __init__(self, original: Any, ssl_context: ssl.SSLContext | None) -> None:
        conn_id = original.id.split(".http.")[0]
        super().__init__(original.address, conn_id, original.delay, original.sleep, original.proxy)
        self.subscription = original.subscription
        self._ssl_context = ssl_context

    async def _open(self) -> None:
        if self.is_open:
            await super()._open()
            return
        self.conn = _session(self._ssl_context)
        self._reset_counters()


def _session(ssl_context: ssl.SSLContext | None) -> aiohttp.ClientSession:
    if ssl_context is None:
        return aiohttp.ClientSession()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context))


def redirected_feed_class(
    exchange: str,
    websocket_base: str | None,
    rest_base: str | None,
    ca_file: str | None,
) -> type[Feed]:
    """cryptofeed's feed class for ``exchange`` with endpoints moved to the given bases.

    websocket_base: e.g. ``wss://127.0.0.1:8443``; rest_base: e.g. ``https://127.0.0.1:8443``;
    ca_file: a PEM CA certificate trusted (in addition to the system store) for both.
    With all three None, the original class is returned.
    """
    if exchange not in EXCHANGE_MAP:
        known = ", ".join(sorted(EXCHANGE_MAP))
        raise ValueError(f"unknown exchange {exchange!r}; cryptofeed 3.0.1 knows: {known}")
    if websocket_base is None and rest_base is None and ca_file is None:
        return cast("type[Feed]", EXCHANGE_MAP[exchange])
    return _redirected(exchange, websocket_base, rest_base, ca_file)


@lru_cache(maxsize=64)
def _redirected(exchange: str, websocket_base: str | None, rest_base: str | None, ca_file: str | None) -> type[Feed]:
    # Cached so that asking twice gives the same class (isinstance checks, class-level state).
    base: Any = EXCHANGE_MAP[exchange]
    ssl_context = _client_ssl_context(ca_file) if ca_file else None

    ws_endpoints = []
    for ep in base.websocket_endpoints:
        changes: dict[str, Any] = {}
        if websocket_base is not None:
            changes["address"] = rebase_url(ep.address, websocket_base)
            if ep.sandbox:
                changes["sandbox"] = rebase_url(ep.sandbox, websocket_base)
        if ssl_context is not None:
            changes["options"] = {**(ep.options or {}), "ssl": ssl_context}
        ws_endpoints.append(dataclasses.replace(ep, **changes))

    rest_endpoints = []
    for rep in base.rest_endpoints:
        if rest_base is None:
            rest_endpoints.append(rep)
            continue
        # Routes are paths appended to the address; only the address (and sandbox) move.
        sandbox = rebase_url(rep.sandbox, rest_base) if rep.sandbox else None
        rest_endpoints.append(dataclasses.replace(rep, address=rebase_url(rep.address, rest_base), sandbox=sandbox))

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        if ssl_context is not None:
            self.http_conn = _TrustingHTTPConn(self.id, self.http_proxy, ssl_context)

    def _wrap_connection(self: Any, conn: Any) -> Any:
        conn = base._wrap_connection(self, conn)
        if ssl_context is not None and isinstance(conn, _HTTPPoll) and not isinstance(conn, _TrustingHTTPPoll):
            conn = _TrustingHTTPPoll(conn, ssl_context)
        return conn

    async def load_symbols(cls: Any, conn: Any = None, refresh: bool = False, cache_ttl: float | None = None) -> Any:
        # Without a connection cryptofeed opens a plain one, which would not trust ca_file.
        if conn is None and ssl_context is not None:
            own = _TrustingHTTPConn(cls.id, None, ssl_context)
            try:
                return await super(redirected, cls).load_symbols(conn=own, refresh=refresh, cache_ttl=cache_ttl)
            finally:
                await own.close()
        return await super(redirected, cls).load_symbols(conn=conn, refresh=refresh, cache_ttl=cache_ttl)

    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": f"{base.__name__} redirected to ws={websocket_base} rest={rest_base} ca={ca_file}",
        "websocket_endpoints": ws_endpoints,
        "rest_endpoints": rest_endpoints,
        "__init__": __init__,
        "_wrap_connection": _wrap_connection,
        "load_symbols": classmethod(load_symbols),
    }
    redirected: type[Feed] = type(f"Redirected{base.__name__}", (base,), namespace)
    return redirected
