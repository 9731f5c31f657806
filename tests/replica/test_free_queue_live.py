"""`FreeQueue`'s live counts: each group entry counts the blocks it still holds, hits lower the
count (one entry's range, or ranges over several entries), and a pop passes an entry its hits
emptied without a search of its slots."""

from __future__ import annotations

from servesim.replica.free_queue import FreeQueue
from servesim.replica.prefix_groups import Group
from servesim.replica.prefix_index import PrefixIndex


def test_hits_lower_live_counts_and_pops_pass_emptied_entries(monkeypatch):
    q = FreeQueue(0, PrefixIndex())
    g = Group(0)
    g.register(0, 100)
    assert q.release(g, 0, 50) == 50 and q.release(g, 50, 100) == 50  # (two entries, stamps 1 and 2)
    first, second = q.entries[1], q.entries[2]
    assert (first[4], second[4]) == (50, 50)
    assert g.hit(40, 60, q.entries) == 20  # (a range over both entries: a count each)
    assert (first[4], second[4]) == (40, 40)
    assert g.hit(0, 40, q.entries) == 40  # (the rest of the first: emptied)
    assert first[4] == 0
    other = Group(0)
    assert q.head_evicts(1, [g]) and not q.head_evicts(1, [other])  # (the first block popped is the second entry's)
    searched = []
    evict = Group.evict
    monkeypatch.setattr(Group, "evict", lambda self, *a: searched.append(a) or evict(self, *a))
    q.pop(10)  # passes the emptied entry, then evicts the second's last 10 blocks
    assert [a[2] for a in searched] == [2] and 1 not in q.entries and second[4] == 30
    assert list(g.ref[90:100]) == [-1] * 10 and g.num_cached == 90
    assert list(g.stamp[0:60]) == [0] * 60  # (the hit blocks carry no entry's stamp)
