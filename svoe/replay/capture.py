"""Reading recorded exchange traffic (the text format of cryptofeed's old raw-data recorder).

Per exchange ``EX`` a capture directory holds ``EX.0`` (REST answers at start-up and the
``configuration:`` line), ``EX.http.N.M`` (REST answers during the run) and ``EX.ws.N.M`` (one
websocket connection each). See ../shared/captures/README.md for the format and its quirks.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import threading
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "REFERENCE_FEED_OPTIONS",
    "Capture",
    "CaptureError",
    "HttpAnswer",
    "RestIndex",
    "WsMessage",
    "WsStream",
    "capture_subscription",
    "list_capture_exchanges",
    "load_capture",
    "reference_counts",
]

_FILE_RE = re.compile(r"^(?P<exchange>[A-Z0-9_]+)\.(?:(?P<kind>ws|http)\.(?P<n>\d+)\.(?P<m>\d+)|0)$")
_HTTP_RE = re.compile(r"^(?P<url>\S+) -> (?P<ts>\d+(?:\.\d*)?): ?(?P<body>.*)$", re.DOTALL)
_WS_HEADER_RE = re.compile(r"^(?P<url>wss?://\S+) <-> (?P<ts>\d+(?:\.\d*)?)\s*$")
_WS_SENT_RE = re.compile(r"^(?P<url>wss?://\S+) <- (?P<ts>\d+(?:\.\d*)?): ?(?P<data>.*)$", re.DOTALL)
_WS_RECV_RE = re.compile(r"^(?P<ts>\d+(?:\.\d*)?): ?(?P<data>.*)$", re.DOTALL)
_CONFIG_PREFIX = "configuration: "

# Routes cryptofeed 3 asks under another name than the recording did; the body is unchanged.
# Keyed by exchange, then requested path -> captured path.
PATH_ALIASES: dict[str, dict[str, str]] = {
    "BITFINEX": {"/v2/conf/pub:list:pair:futures": "/v2/conf/pub:list:pair:future"},
}


# Feed options under which the README's reference counts were produced: no checksum validation,
# and every candle update counted (cryptofeed 3 defaults to closed candles only; Binance's
# kline stream is mostly updates of the open candle).
REFERENCE_FEED_OPTIONS: dict[str, Any] = {"checksum_validation": False, "candle_closed_only": False}


class CaptureError(ValueError):
    """A capture directory or file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    url: str
    path: str
    query: tuple[tuple[str, str], ...]
    timestamp: float
    body: str


@dataclass(frozen=True, slots=True)
class WsMessage:
    timestamp: float
    data: str | bytes


@dataclass(frozen=True, slots=True)
class WsStream:
    """One recorded websocket connection: what the server sent, in order."""

    name: str
    url: str
    opened: float
    messages: tuple[WsMessage, ...]
    # Frames the recording client sent: kept for diagnostics only, never replayed.
    client_frames: tuple[WsMessage, ...] = ()

    @property
    def path(self) -> str:
        """Path and query of the recorded address, the part a redirected client keeps."""
        return _path_and_query(self.url)


@dataclass(frozen=True)
class Capture:
    exchange: str
    directory: Path
    startup: tuple[HttpAnswer, ...]
    runtime: tuple[HttpAnswer, ...]
    streams: tuple[WsStream, ...]
    configuration: dict[str, list[str]] = field(default_factory=dict)

    @property
    def http_answers(self) -> tuple[HttpAnswer, ...]:
        return self.startup + self.runtime


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _split_url(url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(url)
    return parts.path or "/", tuple(parse_qsl(parts.query, keep_blank_values=True))


def _decode_message(raw: str, where: str) -> str | bytes:
    # The recorder wrote binary frames with repr(); everything else is the text frame verbatim.
    if raw[:2] in ("b'", 'b"'):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise CaptureError(f"{where}: unreadable binary frame literal ({exc}); the file is damaged") from exc
        if isinstance(value, bytes):
            return value
    return raw


def _read_lines(path: Path) -> Iterable[tuple[int, str]]:
    with path.open(encoding="utf-8") as fp:
        for lineno, line in enumerate(fp, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, line


def _parse_http_file(path: Path) -> tuple[list[HttpAnswer], dict[str, list[str]] | None]:
    answers: list[HttpAnswer] = []
    configuration: dict[str, list[str]] | None = None
    for lineno, line in _read_lines(path):
        where = f"{path}:{lineno}"
        if line.startswith(_CONFIG_PREFIX):
            try:
                loaded = json.loads(line[len(_CONFIG_PREFIX) :])
            except json.JSONDecodeError as exc:
                raise CaptureError(f"{where}: configuration line is not JSON ({exc})") from exc
            if not isinstance(loaded, dict) or not all(isinstance(v, list) for v in loaded.values()):
                raise CaptureError(f"{where}: configuration must be a JSON object {{channel: [symbols]}}")
            configuration = {str(k): [str(s) for s in v] for k, v in loaded.items()}
            continue
        match = _HTTP_RE.match(line)
        if match is None:
            raise CaptureError(f"{where}: expected 'URL -> TIMESTAMP: BODY' or 'configuration: {{...}}'")
        url = match["url"]
        req_path, query = _split_url(url)
        answers.append(HttpAnswer(url, req_path, query, float(match["ts"]), match["body"]))
    return answers, configuration


def _parse_ws_files(name: str, paths: list[Path]) -> WsStream:
    url: str | None = None
    opened = 0.0
    messages: list[WsMessage] = []
    sent: list[WsMessage] = []
    for path in paths:
        for lineno, line in _read_lines(path):
            where = f"{path}:{lineno}"
            if url is None:
                header = _WS_HEADER_RE.match(line)
                if header is None:
                    raise CaptureError(f"{where}: the first line of a websocket capture must be 'wss://URL <-> TS'")
                url, opened = header["url"], float(header["ts"])
                continue
            recv = _WS_RECV_RE.match(line)
            if recv is not None:
                messages.append(WsMessage(float(recv["ts"]), _decode_message(recv["data"], where)))
                continue
            client = _WS_SENT_RE.match(line)
            if client is not None:
                sent.append(WsMessage(float(client["ts"]), _decode_message(client["data"], where)))
                continue
            if _WS_HEADER_RE.match(line):
                # a continuation file repeats the header of the same connection
                continue
            raise CaptureError(f"{where}: expected 'TS: MESSAGE' or 'URL <- TS: DATA'")
    if url is None:
        raise CaptureError(f"{paths[0]}: empty websocket capture (no 'wss://URL <-> TS' line)")
    return WsStream(name, url, opened, tuple(messages), tuple(sent))


def _capture_files(directory: Path) -> dict[str, list[tuple[str, int, int, Path]]]:
    if not directory.is_dir():
        raise CaptureError(f"capture directory {directory} does not exist; pass the directory holding EX.0 files")
    found: dict[str, list[tuple[str, int, int, Path]]] = {}
    for entry in directory.iterdir():
        match = _FILE_RE.match(entry.name)
        if match is None or not entry.is_file():
            continue
        kind = match["kind"] or "startup"
        n = int(match["n"]) if match["n"] else 0
        m = int(match["m"]) if match["m"] else 0
        found.setdefault(match["exchange"], []).append((kind, n, m, entry))
    return found


def list_capture_exchanges(capture_dir: str | Path) -> list[str]:
    """Exchanges with at least one websocket capture in ``capture_dir``, sorted."""
    files = _capture_files(Path(capture_dir))
    return sorted(ex for ex, entries in files.items() if any(kind == "ws" for kind, *_ in entries))


def load_capture(capture_dir: str | Path, exchange: str) -> Capture:
    return _load_capture_cached(str(Path(capture_dir).resolve()), exchange)


@lru_cache(maxsize=16)
def _load_capture_cached(directory: str, exchange: str) -> Capture:
    root = Path(directory)
    entries = _capture_files(root).get(exchange)
    if not entries:
        known = ", ".join(list_capture_exchanges(root)) or "none"
        raise CaptureError(f"no capture files for exchange {exchange!r} in {root}; captured exchanges: {known}")
    startup: list[HttpAnswer] = []
    runtime: list[HttpAnswer] = []
    configuration: dict[str, list[str]] = {}
    ws_files: dict[int, list[tuple[int, Path]]] = {}
    for kind, n, m, path in sorted(entries, key=lambda e: (e[0], e[1], e[2])):
        if kind == "startup":
            answers, config = _parse_http_file(path)
            startup.extend(answers)
            if config is not None:
                configuration = config
        elif kind == "http":
            answers, config = _parse_http_file(path)
            runtime.extend(answers)
            if config is not None:
                configuration = config
        else:
            ws_files.setdefault(n, []).append((m, path))
    streams = [
        _parse_ws_files(f"{exchange}.ws.{n}", [p for _, p in sorted(chunks)]) for n, chunks in sorted(ws_files.items())
    ]
    runtime.sort(key=lambda a: a.timestamp)
    return Capture(exchange, root, tuple(startup), tuple(runtime), tuple(streams), configuration)


class RestIndex:
    """Answers REST requests from a capture.

    Exact path+query first, then the same path with the best-overlapping query: cryptofeed 3
    asks some queries differently from the recording (Binance ``limit=5000`` vs ``1000``,
    Deribit without ``expired=false``). Repeated requests for the same URL walk through the
    answers recorded for it in order and then stay on the last one.
    """

    def __init__(self, answers: Iterable[HttpAnswer], path_aliases: Mapping[str, str] | None = None) -> None:
        self._by_path: dict[str, list[HttpAnswer]] = {}
        for answer in answers:
            self._by_path.setdefault(answer.path, []).append(answer)
        self._aliases = dict(path_aliases or {})
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()

    def paths(self) -> list[str]:
        return sorted(self._by_path)

    def lookup(self, path: str, query: Iterable[tuple[str, str]] = ()) -> HttpAnswer | None:
        return self.lookup_with_state(path, query)[0]

    def lookup_with_state(self, path: str, query: Iterable[tuple[str, str]] = ()) -> tuple[HttpAnswer | None, bool]:
        """The answer and whether it is a recorded answer not served before."""
        path = self._aliases.get(path, path)
        candidates = self._by_path.get(path)
        if not candidates:
            return None, False
        wanted = tuple(query)
        chosen_url = self._choose(candidates, wanted)
        if chosen_url is None:
            return None, False
        same = [a for a in candidates if a.url == chosen_url]
        with self._lock:
            index = self._served.get(chosen_url, 0)
            self._served[chosen_url] = index + 1
        return same[min(index, len(same) - 1)], index < len(same)

    @staticmethod
    def _choose(candidates: list[HttpAnswer], wanted: tuple[tuple[str, str], ...]) -> str | None:
        exact = [a for a in candidates if sorted(a.query) == sorted(wanted)]
        if exact:
            return exact[0].url
        wanted_pairs = set(wanted)
        wanted_keys = {k for k, _ in wanted}
        best: tuple[int, int, int] | None = None
        chosen: str | None = None
        for answer in candidates:
            shared = len(wanted_pairs & set(answer.query))
            if wanted and shared == 0:
                # a query with no parameter in common would answer for another instrument
                continue
            keys = len(wanted_keys & {k for k, _ in answer.query})
            score = (shared, keys, -len(answer.query))
            if best is None or score > best:
                best, chosen = score, answer.url
        return chosen


class _CaptureConn:
    """Stands in for cryptofeed's HTTPAsyncConn while computing symbol maps from a capture."""

    def __init__(self, index: RestIndex, exchange: str) -> None:
        self._index = index
        self._exchange = exchange

    async def read(self, address: str, header: object = None, params: object = None, **_: object) -> str:
        req_path, query = _split_url(address)
        answer = self._index.lookup(req_path, query)
        if answer is None:
            raise CaptureError(f"{self._exchange}: the capture holds no REST answer for {address}")
        return answer.body


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from async code: a nested loop in a helper thread; the work is parsing only.
    result: list[Any] = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=runner, name="svoe-capture-symbols")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


@lru_cache(maxsize=16)
def captured_symbol_map(capture_dir: str, exchange: str) -> dict[str, str]:
    """What cryptofeed 3.0.1 makes of the captured symbol lists: normalized -> exchange symbol.

    Runs the feed class's own fetch-and-parse code against the captured REST answers, without
    touching cryptofeed's process-wide symbol registry.
    """
    from cryptofeed.exchanges import EXCHANGE_MAP

    capture = load_capture(capture_dir, exchange)
    if exchange not in EXCHANGE_MAP:
        raise CaptureError(f"exchange {exchange!r} is not known to cryptofeed 3.0.1")
    feed_cls: Any = EXCHANGE_MAP[exchange]
    conn = _CaptureConn(RestIndex(capture.startup, PATH_ALIASES.get(exchange)), exchange)
    data = _run_coroutine(feed_cls._fetch_symbol_data(conn))
    mapping, _info = feed_cls._parse_symbol_data(data if len(data) > 1 else data[0])
    return {str(k): str(v) for k, v in mapping.items()}


def _translate_symbol(symbol: str, known: Mapping[str, str]) -> str | None:
    if symbol in known:
        return symbol
    parts = symbol.split("-")
    # 2021 cryptofeed wrote single-currency options as BASE-STRIKE-EXPIRY-type; cryptofeed 3
    # carries the quote (BASE-QUOTE-STRIKE-EXPIRY-type) when it differs from the base.
    if len(parts) == 4 and parts[3] in ("call", "put"):
        base, strike, expiry, kind = parts
        matches = [s for s in known if (p := s.split("-"))[0] == base and p[-3:] == [strike, expiry, kind]]
        if len(matches) == 1:
            return matches[0]
    return None


def capture_subscription(capture_dir: str | Path, exchange: str) -> dict[str, list[str]]:
    """The subscription (channel -> cryptofeed 3 normalized symbols) the recording used.

    The configuration line holds 2021-era names; each is mapped to the name cryptofeed 3.0.1
    gives the same instrument when it parses the captured symbol lists.
    """
    directory = str(Path(capture_dir).resolve())
    capture = load_capture(directory, exchange)
    if not capture.configuration:
        raise CaptureError(
            f"{exchange}: {exchange}.0 has no 'configuration: {{...}}' line; the subscription is unknown"
        )
    known = captured_symbol_map(directory, exchange)
    out: dict[str, list[str]] = {}
    for channel, symbols in capture.configuration.items():
        translated: list[str] = []
        for symbol in symbols:
            name = _translate_symbol(symbol, known)
            if name is None:
                raise CaptureError(
                    f"{exchange}: configured symbol {symbol!r} ({channel}) is not among the symbols cryptofeed 3 "
                    "parses from the capture; extend svoe.replay.capture._translate_symbol"
                )
            translated.append(name)
        out[channel] = translated
    return out


_TABLE_ROW_RE = re.compile(r"^\|(.+)\|\s*$")


def reference_counts(capture_dir: str | Path) -> dict[str, dict[str, int]]:
    """The reference counts table of ``capture_dir``/README.md: {exchange: {channel: n}}."""
    readme = Path(capture_dir) / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise CaptureError(f"cannot read {readme}: {exc}; the reference counts live in the captures' README") from exc
    header: list[str] | None = None
    counts: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        row = _TABLE_ROW_RE.match(line.strip())
        if row is None:
            if header is not None and counts:
                break
            header = None
            continue
        cells = [c.strip() for c in row.group(1).split("|")]
        if header is None:
            if cells and cells[0].lower() == "exchange":
                header = cells
            continue
        if all(set(c) <= set("-: ") for c in cells):
            continue
        exchange, values = cells[0], cells[1:]
        per_channel: dict[str, int] = {}
        for channel, value in zip(header[1:], values, strict=False):
            if value:
                try:
                    per_channel[channel] = int(value)
                except ValueError as exc:
                    raise CaptureError(f"{readme}: count {value!r} for {exchange}/{channel} is not an integer") from exc
        counts[exchange] = per_channel
    if not counts:
        raise CaptureError(f"{readme}: no table with an 'exchange' header column found")
    return counts
