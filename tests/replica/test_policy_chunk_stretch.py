"""Chunk stretches for the policies built on vLLM's running pass (`repeats_chunk` of
`priority`, `edf`, `hygen` and `continuum`): each against stepping on a case where its own rule
bites (priority preemptions, deadlines, offline work, a program's pins), with the step log, and
each showing how many chunk steps its stretches covered."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import assert_same_run, make_engine, serve
from tests.replica.test_chunk_stretch import chunk_steps  # noqa: F401  (fixture)
from tests.replica.test_vllm_chunk_stretch import long_prompts

FIELDS = ("finish_s", "first_token_s", "token_steps", "num_preemptions", "num_cached_tokens", "state")


def run(scheduler: str, params: dict, reqs, fast_forward: bool, num_blocks: int = 3000, max_num_seqs: int = 16):
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, scheduler=scheduler, params=params,
                                         max_num_batched_tokens=256, max_num_seqs=max_num_seqs,
                                         fast_forward=fast_forward)
    serve(engine, loop, reqs)
    kv.check_all_free()
    return engine


def priorities(reqs, rng):
    for r in reqs:  # three classes: a smaller value arriving while the slots are full preempts
        r.priority = int(rng.integers(0, 3))


def slos(reqs, rng):
    for r in reqs[40:]:  # from the 40th on, a quarter carry their own targets: keys vary with time
        if rng.random() < 0.25:
            r.ttft_slo_s, r.tpot_slo_s = 0.5, 0.05


def offline(reqs, rng):
    for r in reqs[40:70]:  # a window of offline work: online alone before and after it
        r.is_offline = bool(rng.random() < 0.5)


def programs(reqs, rng):
    for r in reqs[60:]:  # the second half: calls of five programs, whose finishes pin blocks
        r.program_id = r.id % 5


CASES = {  # name: (scheduler, params, tweak, max_num_seqs, chunk stretches expected)
    "priority": ("priority", {}, priorities, 4, True),
    "priority-no-preemption": ("priority", {"preemption": False}, priorities, 4, True),
    "edf-own-slos": ("edf", {}, slos, 16, True),
    "edf-deadlines": ("edf", {"default_ttft_s": 1.0, "default_tpot_s": 0.1}, slos, 16, False),
    "hygen-offline": ("hygen", {"latency_budget_s": 0.05}, offline, 16, True),
    "continuum-programs": ("continuum", {}, programs, 16, True),
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_policy_chunk_stretches_match_step_by_step(chunk_steps, case, seed):
    scheduler, params, tweak, max_num_seqs, expected = CASES[case]
    a_reqs, b_reqs = long_prompts(seed), long_prompts(seed)
    for reqs in (a_reqs, b_reqs):
        tweak(reqs, np.random.default_rng(seed))
    a = run(scheduler, params, a_reqs, True, max_num_seqs=max_num_seqs)
    fast_chunk_steps = sum(chunk_steps)
    b = run(scheduler, params, b_reqs, False, max_num_seqs=max_num_seqs)
    assert sum(chunk_steps) == fast_chunk_steps  # (stepping plans none)
    if expected:
        # (prompts of at most six chunks; vLLM's chunk stretches run three steps at least:
        # `min_chunk_steps`, 7 to 21 of them here)
        assert len(chunk_steps) >= 5 and fast_chunk_steps > 0.03 * a.num_steps, (len(chunk_steps), a.num_steps)
    else:  # deadlines move with every step: the running order is not certain, nothing repeats
        assert chunk_steps == []
    assert_same_run(a, b, a_reqs, b_reqs, 3000, FIELDS)
    if scheduler == "priority":  # no KV shortage (3,000 blocks): preemptions are the waiting's
        assert (sum(r.num_preemptions for r in b_reqs) > 0) == params.get("preemption", True)


def test_continuum_repeats_chunks_only_before_its_first_program_call(chunk_steps):
    """`continuum` answers as vLLM while no program call has arrived (`plain`); the first one
    makes it pin blocks at finishes (timers, releases at admission): no chunk stretch after."""
    reqs = long_prompts(3)
    programs(reqs, None)
    first_call_s = reqs[60].arrival_s
    seen = []
    engine, sched, _, loop, _ = make_engine(num_blocks=3000, scheduler="continuum", max_num_batched_tokens=256,
                                            max_num_seqs=16, fast_forward=True)
    repeats = sched.repeats_chunk

    def noted(out):
        ok = repeats(out)
        seen.append((loop.now_s, ok))
        return ok

    sched.repeats_chunk = noted
    serve(engine, loop, reqs)
    assert any(ok for t, ok in seen if t < first_call_s) and sum(chunk_steps) > 0
    assert not any(ok for t, ok in seen if t >= first_call_s)
    assert sched.pins == {} and len([t for t, _ in seen if t >= first_call_s]) > 0
