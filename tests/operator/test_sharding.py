"""Stable symbol-to-shard assignment."""

from __future__ import annotations

import random

import pytest

from svoe.operator.sharding import assign, changed_shards, initial_assignment

SYMS = [f"S{i}-USDT" for i in range(10)]


def test_initial_assignment_chunks_in_spec_order() -> None:
    assert initial_assignment(SYMS[:5], 2) == {0: ("S0-USDT", "S1-USDT"), 1: ("S2-USDT", "S3-USDT"), 2: ("S4-USDT",)}
    assert assign({}, SYMS[:5], 2) == initial_assignment(SYMS[:5], 2)


def test_adding_a_symbol_fills_the_shard_with_room_and_touches_no_other() -> None:
    old = assign({}, SYMS[:5], 2)
    new = assign(old, [*SYMS[:5], "NEW-USDT"], 2)
    assert new == {**old, 2: ("S4-USDT", "NEW-USDT")}
    assert changed_shards(old, new) == {2}


def test_adding_symbols_to_full_shards_opens_a_new_shard() -> None:
    old = assign({}, SYMS[:4], 2)
    new = assign(old, [*SYMS[:4], "X-USDT", "Y-USDT", "Z-USDT"], 2)
    assert changed_shards(old, new) == {2, 3}
    assert new[2] == ("X-USDT", "Y-USDT") and new[3] == ("Z-USDT",)


def test_removing_a_symbol_touches_only_its_shard_and_empty_shards_disappear() -> None:
    old = assign({}, SYMS[:6], 2)
    new = assign(old, [s for s in SYMS[:6] if s != "S3-USDT"], 2)
    assert new == {0: old[0], 1: ("S2-USDT",), 2: old[2]}
    gone = assign(old, [s for s in SYMS[:6] if s not in ("S2-USDT", "S3-USDT")], 2)
    assert gone == {0: old[0], 2: old[2]}
    # The freed index is reused by the next new shard; existing shards keep theirs.
    again = assign(gone, [*SYMS[:2], *SYMS[4:6], "A-USDT", "B-USDT"], 2)
    assert again == {0: old[0], 1: ("A-USDT", "B-USDT"), 2: old[2]}


def test_reordering_symbols_in_the_spec_changes_nothing() -> None:
    old = assign({}, SYMS, 3)
    assert assign(old, list(reversed(SYMS)), 3) == old


def test_lowering_the_limit_splits_only_oversized_shards() -> None:
    old = assign({}, SYMS[:5], 3)  # {0: S0 S1 S2, 1: S3 S4}
    new = assign(old, SYMS[:5], 2)
    assert new[0] == ("S0-USDT", "S1-USDT") and new[1] == ("S3-USDT", "S4-USDT") and new[2] == ("S2-USDT",)
    assert changed_shards(old, new) == {0, 2}


def test_inconsistent_previous_assignment_keeps_each_symbol_once() -> None:
    new = assign({0: ("A-X", "B-X"), 1: ("B-X", "C-X")}, ["A-X", "B-X", "C-X"], 5)
    assert new == {0: ("A-X", "B-X"), 1: ("C-X",)}


@pytest.mark.parametrize("seed", range(20))
def test_random_edits_keep_every_symbol_once_within_limits_and_untouched_shards_stable(seed: int) -> None:
    rng = random.Random(seed)
    universe = [f"U{i}-USDT" for i in range(60)]
    limit = rng.randint(1, 7)
    current = rng.sample(universe, rng.randint(1, 30))
    assignment = assign({}, current, limit)
    for _ in range(30):
        nxt = [s for s in current if rng.random() > 0.1] or current[:1]
        nxt += [s for s in rng.sample(universe, 3) if s not in nxt]
        new = assign(assignment, nxt, limit)
        placed = [s for syms in new.values() for s in syms]
        assert sorted(placed) == sorted(nxt)
        assert all(1 <= len(syms) <= limit for syms in new.values())
        removed, added = set(current) - set(nxt), set(nxt) - set(current)
        for index in changed_shards(assignment, new):
            before, after = set(assignment.get(index, ())), set(new.get(index, ()))
            assert (before - after) <= removed and (after - before) <= added, "a shard changed for no reason"
        assignment, current = new, nxt
