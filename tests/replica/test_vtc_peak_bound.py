"""VTC's mini-batch settles the future-peak check by the batch's reserved sum when that fits,
and builds the sorted peak items only when it does not: the same admissions either way."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.schedulers import vtc
from servesim.replica.schedulers.vtc import future_peak
from tests.factories import make_engine, make_request
from tests.replica.test_vllm_scheduler import run_logged


def test_the_future_peak_is_at_most_the_sum_of_contexts_plus_rests():
    rng = np.random.default_rng(11)
    for trial in range(500):
        n = int(rng.integers(1, 60))
        # context + rest is a prompt plus a reserve: > 0, while a rest alone may be negative
        contexts = [int(x) for x in rng.integers(1, 500, n)]
        rests = [int(rng.integers(-c + 1, 400)) for c in contexts]
        assert future_peak(contexts, rests) <= sum(contexts) + sum(rests)


def counted_peak_items(monkeypatch) -> list[int]:
    """Record the batch size of every `peak_items` the scheduler builds."""
    built: list[int] = []
    build = vtc.peak_items

    def counted(contexts, rests):
        built.append(len(contexts))
        return build(contexts, rests)

    monkeypatch.setattr(vtc, "peak_items", counted)
    return built


def test_a_batch_whose_reserves_fit_builds_no_peak_items(monkeypatch):
    built = counted_peak_items(monkeypatch)
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="vtc", fast_forward=False,
                                                params={"max_wait_tokens": 2})
    reqs = [make_request(i, 20, 6, arrival=0.01 * i, tenant="ab"[i % 2]) for i in range(6)]
    steps = run_logged(engine, loop, reqs)
    assert steps[0] == [(0, 20)]  # alone at an idle replica, then the others every 2 decode steps
    assert sorted(r.id for r in done) == list(range(6))
    assert sum(1 for s in steps if s[0][1] == 20) >= 2  # more than one mini-batch ran, with running requests
    assert built == []  # (every check settled by the sum: 6 x 26 tokens fit in 100 blocks)


def test_the_exact_check_still_admits_what_the_sum_alone_would_not(monkeypatch):
    # 5 blocks of 16: A (prompt 20, output 40) reserves 60 tokens, B (20, 4) 24: their sum needs
    # 6 blocks + 1 for rounding, but the peak is max(20 + 40, 41 + 2 x 3) = 60: 4 + 1 blocks.
    built = counted_peak_items(monkeypatch)
    engine, sched, kv, loop, done = make_engine(num_blocks=5, scheduler="vtc", fast_forward=False)
    steps = run_logged(engine, loop, [make_request(0, 20, 40), make_request(1, 20, 4)])
    assert steps[0] == [(0, 20), (1, 20)]
    assert built == [1]  # built once, for B, from the batch holding A
    assert all(r.num_preemptions == 0 for r in done)


@pytest.mark.parametrize("reserve", ["output_len", "max_tokens"])
def test_admissions_equal_the_exact_check_on_every_candidate(monkeypatch, reserve):
    """Random prompts and outputs in a tight cache: the run with the sum first equals the run
    whose every check goes to the sorted items (a sum that never fits)."""
    rng = np.random.default_rng(5 if reserve == "output_len" else 6)
    runs = []
    for bound_first in (True, False):
        if not bound_first:
            monkeypatch.setattr(vtc.VTCScheduler, "_reserved_sum", lambda self: 1 << 40)
        built = counted_peak_items(monkeypatch)
        engine, sched, kv, loop, done = make_engine(num_blocks=40, scheduler="vtc", fast_forward=False,
                                                    max_num_seqs=16, params={"max_wait_tokens": 3,
                                                                             "reserve": reserve})
        r = np.random.default_rng(rng.integers(1 << 30))
        reqs = [make_request(i, int(r.integers(4, 120)), int(r.integers(1, 90)), arrival=0.004 * i,
                             tenant="abc"[i % 3], max_tokens=int(r.integers(40, 200)))
                for i in range(60)]
        steps = run_logged(engine, loop, reqs)
        runs.append((steps, [(q.id, q.finish_s, q.num_preemptions) for q in sorted(done, key=lambda q: q.id)],
                     dict(sched.counters), len(built)))
        rng = np.random.default_rng(5 if reserve == "output_len" else 6)  # (the same requests again)
    (steps_a, reqs_a, counters_a, built_a), (steps_b, reqs_b, counters_b, built_b) = runs
    assert len(reqs_a) == 60 and steps_a == steps_b and reqs_a == reqs_b and counters_a == counters_b
    assert 0 < built_a < built_b  # the sum settled some checks, not all (the cache is tight)
