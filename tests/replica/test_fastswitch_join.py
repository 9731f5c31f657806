"""FastSwitch's arrivals joining a stretch in flight (`FastSwitchScheduler.arrivals_join`), plain
and speculative: with one tenant held they are admitted at the boundary as stepping's walk
admits them, and a stretch's end rebuilds the refresh snapshot from the token log (the joined
requests start at their step, a speculative step emits several tokens). Every snapshot that
orders requests, the counters, the run and the step log are stepping's; and the joins happen."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf.build import build_perf_model
from tests.factories import REQUEST_OUTCOME, ToyPerf, assert_same_run, make_engine, make_request, serve

FIELDS = REQUEST_OUTCOME + ("num_computed_tokens", "first_scheduled_s")


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


def phased_load(seed: int, n: int = 260, gap_s: float = 0.25):
    """Light load (arrivals while others decode, no prefix keys) whose tenants come in phases:
    `a` alone, then `b` alone, `a` alone again (both now in the counters, so the snapshot of
    `a` orders it against `b` later), then both mixed."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_s, n))
    tenant = ["a" if i < 80 or 120 <= i < 200 else "b" if i < 120 else "ab"[i % 2] for i in range(n)]
    return [make_request(i, int(rng.integers(1, 200)), int(rng.integers(2, 300)), float(t[i]), tenant=tenant[i])
            for i in range(n)]


def speculating(k: int) -> dict:
    """The engine's settings for k drafts a step at 70 % (none when k = 0)."""
    return dict(num_speculative_tokens=k, spec_acceptance_rate=0.7, rng=np.random.default_rng(7)) if k else {}


def fast_and_stepped(make_load, run, *args, **kw):
    """(fast-forwarded requests, stepped requests, fast-forwarded run, stepped run) of one load."""
    fast_reqs, slow_reqs = make_load(), make_load()
    return fast_reqs, slow_reqs, run(fast_reqs, True, *args, **kw), run(slow_reqs, False, *args, **kw)


def joined_run(reqs, fast_forward: bool, perf, num_blocks: int = 2000, k: int = 0, interval: int = 7):
    """The run with every snapshot taken (by the step whose `schedule` saw it)."""
    spec = speculating(k)
    engine, sched, kv, loop, _ = make_engine(num_blocks=num_blocks, fast_forward=fast_forward, perf=perf,
                                             scheduler="fastswitch", defer_finishes=True,
                                             params={"priority_update_interval": interval},
                                             max_num_batched_tokens=256, max_num_seqs=16, **spec)
    schedule, snaps = sched.schedule, []

    def traced(now_s):
        out = schedule(now_s)
        snaps.append((sched.num_engine_steps, sched._snap_step, dict(sched._snapshot)))
        return out

    sched.schedule = traced
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine, snaps, dict(sched.counters)


def assert_same_as_stepping(fast, slow, fast_reqs, slow_reqs, num_blocks: int, spec: bool) -> None:
    (a, a_snaps, a_counters), (b, b_snaps, b_counters) = fast, slow
    assert_same_run(a, b, fast_reqs, slow_reqs, num_blocks, FIELDS)
    by_step = {step: (snap_step, snap) for step, snap_step, snap in b_snaps}
    assert all(by_step[step] == (snap_step, snap) for step, snap_step, snap in a_snaps)
    assert a_counters == b_counters and set(a_counters) == {"a", "b"}
    if spec:
        assert a.spec_draws.take(50) == b.spec_draws.take(50)  # the stretches took exactly their steps' rows
    assert b.num_joined_arrivals == 0


@pytest.mark.parametrize("perf_name", ["toy", "llama"])
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 300), (3, 120)])
@pytest.mark.parametrize("k", [0, 3])
def test_fastswitch_joins_match_stepping(perf_name, seed, num_blocks, k, llama):
    perf = ToyPerf() if perf_name == "toy" else llama
    fast_reqs, slow_reqs, fast, slow = fast_and_stepped(lambda: phased_load(seed), joined_run, perf, num_blocks, k)
    assert_same_as_stepping(fast, slow, fast_reqs, slow_reqs, num_blocks, k > 0)
    # most of the single-tenant phases' arrivals joined (fewer with 120 blocks: no room)
    assert fast[0].num_joined_arrivals > (0.4 if num_blocks > 120 else 0.15) * len(fast_reqs)


@pytest.mark.parametrize("k", [0, 3])
def test_joined_stretches_cross_refreshes_with_the_snapshot_stepping_takes(k, llama, monkeypatch):
    # A refresh every 3 steps: nearly every stretch with a join crosses one, and its end
    # rebuilds the snapshot with the joined requests' tokens from their join step on (a
    # rebuild counting them from the stretch's start, or one token per speculative step,
    # gives another snapshot, which the second tenant's keys then read)
    from servesim.replica.schedulers.fastswitch_fairness import FastSwitchFairness

    crossed = []
    on_step_end = FastSwitchFairness.on_step_end

    def counted(self, output, now_s):
        start, n = self._sched_step, self.num_engine_steps - self._sched_step
        late = any(r.token_steps and r.token_steps[0] > start + 1 for r, _ in output.scheduled)
        crossed.append(n > 1 and (start + n - 1) // 3 * 3 > start and late)
        on_step_end(self, output, now_s)

    monkeypatch.setattr(FastSwitchFairness, "on_step_end", counted)
    fast_reqs, slow_reqs = phased_load(4), phased_load(4)
    fast = joined_run(fast_reqs, True, llama, k=k, interval=3)
    assert sum(crossed) > 10  # stretches with requests that joined them crossed a refresh
    slow = joined_run(slow_reqs, False, llama, k=k, interval=3)
    assert_same_as_stepping(fast, slow, fast_reqs, slow_reqs, 2000, k > 0)
    assert fast[0].num_joined_arrivals > 0.4 * len(fast_reqs)


def test_a_second_tenant_held_stops_joins(llama):
    # two tenants held all along: the order follows their counters, and no arrival joins
    reqs = [phased_load(5) for _ in range(2)]
    for rs in reqs:
        for r in rs:
            r.tenant = "ab"[r.id % 2]
    fast = joined_run(reqs[0], True, llama)
    slow = joined_run(reqs[1], False, llama)
    assert_same_as_stepping(fast, slow, reqs[0], reqs[1], 2000, False)
    assert fast[0].num_joined_arrivals <= 2  # (only while one tenant's requests alone are held)
