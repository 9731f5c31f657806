"""FastSwitch's chunk stretches (`FastSwitchScheduler.repeats_chunk`): with one tenant held its
walk is vLLM's running pass in arrival order, so a prompt's repeated chunks beside the same
decodes fast-forward as vLLM's do. Against stepping, step log included, where its own rules
bite: refreshes crossed inside the stretches (the snapshot rebuilt at their end counts the
prompt's chunks before the refresh), a second tenant arriving (cut at its arrival, counted
and lifted as stepping does), KV pressure (none while a request is swapped), prices that
forbid deferral (none at all)."""

from __future__ import annotations

import pytest

from tests.factories import assert_same_run, make_engine, serve
from tests.replica.test_chunk_stretch import chunk_steps  # noqa: F401  (fixture)
from tests.replica.test_vllm_chunk_stretch import long_prompts

FIELDS = ("finish_s", "first_token_s", "token_steps", "num_preemptions", "num_cached_tokens", "state")


def run(reqs, params: dict, fast_forward: bool, num_blocks: int):
    """The engine, and every priority snapshot the run took, by the step it was taken at (a
    stretch takes the last of those it crosses, rebuilt at its end)."""
    engine, sched, kv, loop, _ = make_engine(num_blocks=num_blocks, scheduler="fastswitch", params=params,
                                             max_num_batched_tokens=256, max_num_seqs=16, fast_forward=fast_forward)
    snapshots, step_end = {}, sched.on_step_end

    def noted(out, now_s):
        step_end(out, now_s)
        snapshots[sched._snap_step] = dict(sched._snapshot)

    sched.on_step_end = noted
    serve(engine, loop, reqs)
    kv.check_all_free()
    return engine, sched, snapshots


def second_tenant(reqs):
    for r in reqs[40:55]:  # another tenant's burst in the middle: two tenants held for a while
        r.tenant = "b"
    return reqs


CASES = {  # name: (params, tenants, KV blocks, least share of the steps in chunk stretches)
    "one-tenant": ({}, False, 3000, 0.05),
    "refreshes-inside": ({"priority_update_interval": 5}, False, 3000, 0.05),
    "second-tenant": ({"priority_update_interval": 5}, True, 3000, 0.05),
    "kv-pressure": ({"priority_update_interval": 7}, True, 300, 0.01),
    "fractional-prices": ({"output_price": 1.5}, False, 3000, 0.0),
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fastswitch_chunk_stretches_match_step_by_step(chunk_steps, case, seed):
    params, tenants, num_blocks, share = CASES[case]
    a_reqs, b_reqs = long_prompts(seed), long_prompts(seed)
    if tenants:
        second_tenant(a_reqs), second_tenant(b_reqs)
    a, fast, fast_snaps = run(a_reqs, params, True, num_blocks)
    fast_chunk_steps = sum(chunk_steps)
    b, slow, slow_snaps = run(b_reqs, params, False, num_blocks)
    assert sum(chunk_steps) == fast_chunk_steps  # (stepping plans none)
    if share:
        # (three steps at least, as vLLM's: `min_chunk_steps`)
        assert len(chunk_steps) >= 5 and fast_chunk_steps > share * a.num_steps, (len(chunk_steps), a.num_steps)
    else:  # fractional prices: counts are not deferrable, so no chunk step repeats
        assert chunk_steps == []
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    assert fast.counters == slow.counters
    assert fast_snaps == {step: slow_snaps[step] for step in fast_snaps}


def test_a_second_tenants_arrival_cuts_the_chunk_stretch(chunk_steps):
    """A chunk stretch runs only with one tenant held, and the other tenant's arrival inside
    one cuts it (`chunk_keeps_arrival`: stepping counts for it and lifts it at once); the
    stretches go on before and after the burst."""
    reqs = second_tenant(long_prompts(1))
    engine, sched, _, loop, _ = make_engine(num_blocks=3000, scheduler="fastswitch", max_num_batched_tokens=256,
                                            max_num_seqs=16, fast_forward=True)
    keeps, repeats = sched.chunk_keeps_arrival, sched.repeats_chunk
    asked, said = [], []

    def noted_keeps(req):
        asked.append((req.tenant, keeps(req)))
        return asked[-1][1]

    def noted_repeats(out):
        said.append((loop.now_s, len(sched._held), repeats(out)))
        return said[-1][2]

    sched.chunk_keeps_arrival, sched.repeats_chunk = noted_keeps, noted_repeats
    serve(engine, loop, reqs)
    burst = reqs[40].arrival_s, reqs[54].arrival_s
    assert ("b", False) in asked  # (a cut: the other tenant arrived while a chunk stretch ran)
    assert any(held == 2 for _, held, _ in said) and all(held == 1 for _, held, ok in said if ok)
    assert any(ok for t, _, ok in said if t < burst[0]) and any(ok for t, _, ok in said if t > burst[1])
    assert len(chunk_steps) >= 10

