"""Per-resource wake-up flags and locks, shared by the DataFeed and FeatureSet controllers."""

from __future__ import annotations

import asyncio

Key = tuple[str, str]


class Coordination:
    """One wake-up event and one lock per (namespace, name) of the resources a controller runs."""

    def __init__(self) -> None:
        self._wakeups: dict[Key, asyncio.Event] = {}
        self._locks: dict[Key, asyncio.Lock] = {}

    def wakeup(self, key: Key) -> asyncio.Event:
        ev = self._wakeups.get(key)
        if ev is None:
            ev = self._wakeups[key] = asyncio.Event()
        return ev

    def wake(self, namespace: str | None, name: str | None) -> None:
        # Only a running loop's event: children of a deleted resource keep sending events while
        # they terminate, and must not bring its entry back. A loop that starts passes at once.
        ev = self._wakeups.get((namespace or "", name or ""))
        if ev is not None:
            ev.set()

    def lock(self, key: Key) -> asyncio.Lock:
        lk = self._locks.get(key)
        if lk is None:
            lk = self._locks[key] = asyncio.Lock()
        return lk

    def release(self, key: Key) -> None:
        self._wakeups.pop(key, None)
        self._locks.pop(key, None)
