"""`UniformInts` replays `Generator.integers(n)` value for value from blocks of raw words."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.cluster.routers.common import UniformInts, argmin_pick


def _bounds() -> list[int]:
    r = np.random.default_rng(99)
    small = r.integers(1, 9, size=20_000).tolist()  # tie counts of a few replicas
    large = r.integers(1, 2**31, size=2_000).tolist()  # bounds whose rejection branch is taken often
    return small + large + [2**32 - 1, 2**32, 3 * 2**30, 1, 2] * 40


def test_draws_equal_numpy_integers_for_every_bound() -> None:
    bounds = _bounds()
    for seed in (0, 1, 7):
        want = [int(v) for v in map(np.random.default_rng(seed).integers, bounds)]
        ints = UniformInts(np.random.default_rng(seed))
        assert [ints.integers(n) for n in bounds] == want
        assert ints._exact  # the block path ran, not the fallback


def test_a_generator_that_already_split_a_word_falls_back_to_integers() -> None:
    rng, ref = np.random.default_rng(3), np.random.default_rng(3)
    rng.integers(5, dtype=np.uint32), ref.integers(5, dtype=np.uint32)  # leaves half a word buffered
    ints = UniformInts(rng)
    assert not ints._exact
    assert [ints.integers(6) for _ in range(50)] == [int(ref.integers(6)) for _ in range(50)]


def test_argmin_pick_with_block_draws_picks_as_with_the_generator() -> None:
    keys_of = np.random.default_rng(5).integers(0, 3, size=(3_000, 8)).tolist()
    cands = list(range(8))
    ints, rng = UniformInts(np.random.default_rng(11)), np.random.default_rng(11)
    picks = [argmin_pick(cands, keys, "random", ints) for keys in keys_of]
    assert picks == [argmin_pick(cands, keys, "random", rng) for keys in keys_of]
    assert len(set(picks)) == 8  # ties were broken at random, over every replica


def test_bounds_above_two_to_the_32_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 2\\^32, not 8589934592"):
        UniformInts(np.random.default_rng(0)).integers(2**33)


def test_argmin_pick_on_lists_picks_and_draws_as_the_general_path() -> None:
    """Lists take C-level scans when the minimum is unique or ties go first; the pick and the
    draws (none without a tie) must be those of the general path (a tuple goes there)."""
    keys_of = np.random.default_rng(3).integers(0, 4, size=(2_000, 8)).tolist()
    keys_of += [[2.5, float("inf"), 0.5, 0.5], [1.0, float("nan"), 0.5, 3.0], [1, 1.0, 0.0, 0]]
    for tie_break in ("random", "first"):
        fast, slow = np.random.default_rng(9), np.random.default_rng(9)
        for keys in keys_of:
            cands = list(range(10, 10 + len(keys)))
            assert argmin_pick(cands, keys, tie_break, fast) == argmin_pick(cands, tuple(keys), tie_break, slow)
        assert fast.integers(1 << 30) == slow.integers(1 << 30)  # as many draws on both
