"""Stable assignment of a DataFeed's symbols to shards (one feed pod per shard).

Stability is the point: a symbol stays in its shard for as long as it is listed, so adding or
removing a symbol replaces only the shard that gains or loses it, and every other pod keeps
collecting without a restart. Shards are identified by a small integer index that is never
reused while the shard exists; the assignment is recorded in the DataFeed status and on each
pod (annotation), so a restarted operator finds the same assignment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

Assignment = dict[int, tuple[str, ...]]


def initial_assignment(symbols: Sequence[str], max_per_shard: int) -> Assignment:
    """Symbols in spec order, chunked: the deterministic starting point (same result after a crash)."""
    return {i: tuple(symbols[o : o + max_per_shard]) for i, o in enumerate(range(0, len(symbols), max_per_shard))}


def assign(previous: Mapping[int, Sequence[str]], symbols: Sequence[str], max_per_shard: int) -> Assignment:
    """The new assignment of `symbols` given the previous one.

    - a symbol still listed stays in its shard (first come wins if the previous assignment is
      inconsistent and lists it twice);
    - removed symbols leave their shard; a shard left empty disappears;
    - a shard above `max_per_shard` (the limit was lowered) keeps its first symbols and the
      overflow is placed like new symbols;
    - new symbols fill the existing shards with room, lowest index first, in spec order, then
      new shards take the lowest free indexes. Under-filled shards are not merged: merging would
      restart pods that lost nothing.
    """
    if max_per_shard < 1:
        raise ValueError("max_per_shard must be at least 1")
    if not previous:
        return initial_assignment(symbols, max_per_shard)
    wanted = set(symbols)
    placed: set[str] = set()
    shards: dict[int, list[str]] = {}
    for index in sorted(previous):
        kept: list[str] = []
        for s in previous[index]:
            if s in wanted and s not in placed and len(kept) < max_per_shard:
                kept.append(s)
                placed.add(s)
        if kept:
            shards[index] = kept
    pending = [s for s in symbols if s not in placed]
    for index in sorted(shards):
        room = max_per_shard - len(shards[index])
        if room > 0 and pending:
            shards[index].extend(pending[:room])
            pending = pending[room:]
    next_index = 0
    while pending:
        while next_index in shards:
            next_index += 1
        shards[next_index] = pending[:max_per_shard]
        pending = pending[max_per_shard:]
    return {i: tuple(shards[i]) for i in sorted(shards)}


def changed_shards(old: Mapping[int, Sequence[str]], new: Mapping[int, Sequence[str]]) -> set[int]:
    """Shard indexes whose symbol list differs (added, removed or changed)."""
    keys: Iterable[int] = set(old) | set(new)
    return {i for i in keys if tuple(old.get(i, ())) != tuple(new.get(i, ()))}
