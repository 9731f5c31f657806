"""Waiting queues (`replica/schedulers/queues.py`) and the engine's memo of decode step forms
(`replica/fast_forward.DecodeFns`): their order and answers, and that the calls asked at every
arrival (a queue's length, truth and iteration; a form by batch size) are C calls."""

from collections import deque

from servesim.replica.fast_forward import DecodeFns
from servesim.replica.schedulers.queues import DensityQueue, FCFSQueue, SortedWaiting


def test_fcfs_queue_order_and_answers():
    q = FCFSQueue()
    assert not q and len(q) == 0
    for x in ("a", "b", "c"):
        q.append(x)
    q.prepend("p")  # a preempted request goes back to the front
    assert list(q) == ["p", "a", "b", "c"] and q.peek() == "p" and len(q) == 4 and q
    assert q.pop() == "p"  # the head
    q.remove("b")
    assert list(q) == ["a", "c"]
    q.clear()
    assert not q
    # len, truth and iteration are the deque's own (no Python method per call)
    assert type(q).__len__ is deque.__len__ and type(q).__iter__ is deque.__iter__
    assert not hasattr(q, "__dict__")


def test_density_queue_removes_as_a_deque_does_found_by_id_or_not():
    """Andes's queue: `remove` takes the same request out as `deque.remove` (the first that
    is it), whether bisection on the ids finds it (arrivals in id order) or the ids are out of
    order there (prepended requests: the scan from the front)."""
    import random
    from types import SimpleNamespace

    rng = random.Random(3)
    for trial in range(300):
        reqs = [SimpleNamespace(id=i) for i in range(rng.randint(1, 120))]
        q, ref = DensityQueue(), deque()
        for r in reqs:
            if rng.random() < 0.15 and len(q):  # (a preempted one back at the front: out of id order)
                x = rng.choice(list(q))
                q.remove(x), ref.remove(x)
                q.prepend(x), ref.appendleft(x)
            q.append(r), ref.append(r)
        while ref:
            x = rng.choice(list(ref))
            q.remove(x), ref.remove(x)
            assert list(q) == list(ref)
        assert not q


def test_rekeyed_moves_each_request_as_a_remove_and_insert_would():
    """`rekeyed` finds a moved request by bisection on its old key: the queue ends as taking
    each out (`remove`) and back in after its equals would leave it, ties and all."""
    import random
    from bisect import bisect_right

    rng = random.Random(7)
    for trial in range(200):
        names = [f"r{i}" for i in range(rng.randint(1, 60))]
        spread = rng.choice([3, 1000])  # (many equal keys, or nearly unique ones)
        keys = {x: rng.randrange(spread) for x in names}
        q = SortedWaiting(keys.__getitem__)
        q.extend(names)
        q.sort(keys.__getitem__)
        ref = list(q)
        moved = rng.sample(names, rng.randint(1, min(16, len(names))))
        old = {x: keys[x] for x in moved}
        for x in moved:
            keys[x] = rng.randrange(spread)
        q.rekeyed(old, keys)
        for x in moved:
            ref.remove(x)
        for x in moved:
            ref.insert(bisect_right(ref, keys[x], key=keys.__getitem__), x)
        assert list(q) == ref, trial
        assert [keys[x] for x in q] == sorted(keys.values())


def test_sorted_waiting_keeps_its_order():
    keys = {"a": 3, "b": 1, "c": 2, "d": 2}
    q = SortedWaiting(keys.__getitem__)
    for x in ("a", "b", "c"):
        q.append(x)
    assert list(q) == ["a", "b", "c"]  # not sorted before its first use
    q.sort(keys.__getitem__)
    assert list(q) == ["b", "c", "a"] and q.clean
    q.append("d")  # at its place, after the equal key
    assert list(q) == ["b", "c", "d", "a"]
    keys["a"] = 0
    q.rekeyed({"a": 3}, keys)  # (its key before)
    assert list(q) == ["a", "b", "c", "d"] and q.pop() == "a"
    keys["a"] = 5
    q.prepend("a")  # by its key, not at the front
    assert list(q) == ["b", "c", "d", "a"]
    plain = SortedWaiting()
    for x in ("a", "b"):
        plain.append(x)
    plain.sort(lambda x: -keys[x] if x != "a" else 5)
    assert list(plain) == ["b", "a"] and not plain.clean  # no stored key: sorted at every use


def test_decode_fns_memo():
    class Perf:
        calls = 0

        def decode_time_fn(self, n):
            Perf.calls += 1
            return None if n == 3 else (lambda ctx, n=n: n + ctx)

    fns = DecodeFns(Perf())
    get = fns.__getitem__
    assert get(2)(10) == 12 and get(2)(1) == 3 and get(3) is False and get(3) is False
    assert Perf.calls == 2  # one perf call per batch size
