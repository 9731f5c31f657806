"""A prefix group's per-slot counts and stamps (typed arrays) through each operation, the usual
one-value ranges and the mixed ones, with the exact slots expected."""

from __future__ import annotations

from array import array

from servesim.replica.prefix_groups import NO_STAMP, NONE, ONE, Group, count_of


def test_fills_are_typed_arrays_of_one_value():
    assert NONE * 3 == array("i", [-1, -1, -1]) and ONE * 2 == array("i", [1, 1]) and len(ONE * 0) == 0
    assert NO_STAMP * 2 == array("q", [0, 0]) and array("q", [2**40]) * 1 == array("q", [2**40])
    g = Group(0)
    g.append_held(3)
    assert g.ref.typecode == "i" and g.stamp.typecode == "q"


def test_count_of_is_arrays_count_for_one_value_short_and_long_mixed_ranges():
    """`count_of`: one value over the range (one comparison), a short mixed range (array's
    loop) and a long one (numpy): each `array.count`'s answer, for counts and large stamps."""
    import random

    from servesim.replica.prefix_groups import _NP_MIN

    rng = random.Random(3)
    assert count_of(array("i"), 0) == 0
    assert count_of(ONE * 500, 1) == 500 and count_of(ONE * 500, 0) == 0 and count_of(NONE * 7, -1) == 7
    for trial in range(300):
        n = rng.choice([1, 2, _NP_MIN - 1, _NP_MIN, 300])
        code, vals = rng.choice([("i", [-1, 0, 1, 2]), ("q", [0, 2**40, 2**40 + 1])])
        pool = vals[:rng.choice([1, 2, len(vals)])]  # (one value: the usual case)
        r = array(code, [rng.choice(pool) for _ in range(n)])
        for v in vals:
            assert count_of(r, v) == r.count(v), (trial, code, v)


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
    assert g.evict(4, 12, 5, 3, 6) == (3, 9) and list(g.ref) == [0, 0, 1, 1, 0, -1, -1, -1]
    assert g.num_leading_cached(4, 12) == 5 and g.num_cached == 5
    # a hit from the free queue takes slot 8 out of the entry: the next eviction skips it
    assert g.hit(8, 9) == 1 and list(g.stamp) == [5, 5, 0, 0, 0, 0, 0, 0]
    assert g.evict(4, 9, 5, 1, 2) == (1, 5) and list(g.ref) == [0, -1, 1, 1, 1, -1, -1, -1]
    assert g.evict(4, 5, 5, 4, 1) == (1, 4) and g.num_cached == 3
    assert not g.any_cached(9, 12) and g.any_cached(4, 9)
    # registering over a mixed range: cached slots come back as copies
    assert g.register(6, 10) == [(6, 9)] and list(g.ref) == [-1, -1, 1, 1, 1, 1, -1, -1]
    assert g.register(2, 5) == [] and g.lo == 2 and list(g.ref[:3]) == [1, 1, 1]


def test_long_ranges_are_searched_by_numpy_as_slot_by_slot():
    """Past `_NP_MIN` slots a stale entry's slots are found by numpy (`Group.evict`'s scan):
    the same slots as array's own loop, for stamps past a C int and entries whose slots were
    hit or re-stamped since."""
    import random

    from servesim.replica.prefix_groups import _NP_MIN

    rng = random.Random(7)
    for trial in range(200):
        n = rng.choice([_NP_MIN - 1, _NP_MIN, 100, 400])
        stamp = 2**40 + trial
        vals = [rng.choice([stamp, 0, stamp + 1, 3]) for _ in range(n)]
        g = Group(10)
        g.append_held(n)
        g.release(10, 10 + n, stamp)
        for s, v in enumerate(vals):  # slots hit since (stamp 0, held) or freed again later
            g.stamp[s] = v
            g.ref[s] = 0 if v else 1
        g.num_cached = n
        k = rng.choice([1, 2, 5, n])
        # slot by slot: the last k slots still carrying the entry's stamp
        mine = [s for s in range(n) if vals[s] == stamp][::-1][:k]
        got = g.evict(10, 10 + n, stamp, k, vals.count(stamp))
        end = (10 + mine[-1]) if len(mine) == k else 10
        assert got == (len(mine), end if mine else 10)
        assert [s for s in range(n) if g.ref[s] == -1] == sorted(mine) and g.num_cached == n - len(mine)
        assert all(g.stamp[s] == 0 for s in mine)
        assert g.num_leading_cached(10, 10 + n) == (min(mine) if mine else n)


def test_registering_a_long_mixed_range_gives_slot_by_slots_counts_and_copies(monkeypatch):
    """Past `_NP_MIN` slots a partly evicted range registers with numpy (`_register_mixed`):
    the same counts, cached count and copy ranges as the slot-by-slot loop, at any offset."""
    import random

    import servesim.replica.prefix_groups as prefix_groups

    rng = random.Random(11)
    calls = []
    mixed = Group._register_mixed
    monkeypatch.setattr(Group, "_register_mixed", lambda self, *a: calls.append(a[1:3]) or mixed(self, *a))
    for trial in range(300):
        n, lo = rng.choice([prefix_groups._NP_MIN, 100, 333]), rng.randrange(0, 40)
        refs = [rng.choice([-1, -1, 0, 1, 3]) if trial % 2 else rng.choice([-1, 1]) for _ in range(n)]
        s0 = lo + rng.randrange(0, n - prefix_groups._NP_MIN + 1)
        s1 = rng.randrange(s0 + prefix_groups._NP_MIN, lo + n + 1)
        expected, slots = [], refs[s0 - lo:s1 - lo]
        for t, v in enumerate(slots):  # the copies: the cached slots, as ranges of consecutive ones
            if v >= 0:
                if expected and expected[-1][1] == s0 + t:
                    expected[-1] = (expected[-1][0], s0 + t + 1)
                else:
                    expected.append((s0 + t, s0 + t + 1))
        g = Group(lo)
        g.append_held(n)
        g.ref = array("i", refs)
        g.num_cached = sum(v >= 0 for v in refs)
        dups = g.register(s0, s1)
        assert dups == expected
        assert list(g.ref) == refs[:s0 - lo] + [v if v >= 0 else 1 for v in slots] + refs[s1 - lo:]
        assert g.num_cached == sum(v >= 0 for v in g.ref)
    assert len(calls) > 250  # (the numpy path ran: most ranges are mixed)
