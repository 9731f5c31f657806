"""A prefix group's per-slot counts and stamps (typed arrays) through each operation, the usual
one-value ranges and the mixed ones, with the exact slots expected."""

from __future__ import annotations

from array import array

from servesim.replica.prefix_groups import NO_STAMP, NONE, ONE, Group


def test_fills_are_typed_arrays_of_one_value():
    assert NONE * 3 == array("i", [-1, -1, -1]) and ONE * 2 == array("i", [1, 1]) and len(ONE * 0) == 0
    assert NO_STAMP * 2 == array("q", [0, 0]) and array("q", [2**40]) * 1 == array("q", [2**40])
    g = Group(0)
    g.append_held(3)
    assert g.ref.typecode == "i" and g.stamp.typecode == "q"


def test_a_group_through_register_hit_release_and_evict():
    g = Group(4)
    assert g.register(4, 10) == [] and list(g.ref) == [1] * 6 and g.num_cached == 6
    g.append_held(2)
    assert g.hi == 12 and list(g.ref) == [1] * 8 and list(g.stamp) == [0] * 8
    assert g.hit(6, 8) == 0 and list(g.ref) == [1, 1, 2, 2, 1, 1, 1, 1]
    # mixed counts: only the slots reaching 0 get the stamp
    assert g.release(4, 12, 5) == 6 and list(g.ref) == [0, 0, 1, 1, 0, 0, 0, 0]
    assert list(g.stamp) == [5, 5, 0, 0, 5, 5, 5, 5]
    assert g.num_free(4, 12) == 6 and g.num_leading_cached(4, 12) == 8
    # the usual eviction: the entry's last slots, all still stamped
    assert g.evict(4, 12, 5, 3) == (3, 9) and list(g.ref) == [0, 0, 1, 1, 0, -1, -1, -1]
    assert g.num_leading_cached(4, 12) == 5 and g.num_cached == 5
    # a hit from the free queue takes slot 8 out of the entry: the next eviction skips it
    assert g.hit(8, 9) == 1 and list(g.stamp) == [5, 5, 0, 0, 0, 0, 0, 0]
    assert g.evict(4, 9, 5, 1) == (1, 5) and list(g.ref) == [0, -1, 1, 1, 1, -1, -1, -1]
    assert g.evict(4, 5, 5, 4) == (1, 4) and g.num_cached == 3
    assert not g.any_cached(9, 12) and g.any_cached(4, 9)
    # registering over a mixed range: cached slots come back as copies
    assert g.register(6, 10) == [(6, 9)] and list(g.ref) == [-1, -1, 1, 1, 1, 1, -1, -1]
    assert g.register(2, 5) == [] and g.lo == 2 and list(g.ref[:3]) == [1, 1, 1]
