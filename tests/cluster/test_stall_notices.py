"""On a closed loop (finishes told at their times, `replica/finish_notices.py`), requests without
prefix keys join a stretch as a prompt-only step (`stretch_join._stall_join`: vtc's mini-batch,
vLLM V0's and SGLang's prefill-first steps); finishes at the step before the join are told first
(`finish_notices.tell_last`), and no join of any kind is made where a follow-up of theirs arrives
at once (`join_arrivals`, `keyed_join`): stepping's `schedule` there sees it first. Fast-forwarded runs
equal stepping's (every request, every step, the summary, vtc's counters), and the joins ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import fast_forward, stretch_join
from servesim.replica.finish_notices import untold_by
from servesim.replica.schedulers.vtc import VTCScheduler

from .helpers import SESSIONS, assert_same_steps, count_tells, outcome

AGENTS = str(Path(SESSIONS).with_name("agent-programs.yaml"))


def _summary(result) -> str:
    s = result.summary()
    s.pop("wall_time_s")
    return json.dumps(s, sort_keys=True, default=str)


def _both(path: str, sets: list[str], monkeypatch) -> tuple:
    """(fast, slow, joins made under notices, refusals for a finish not told yet, vtc counters
    of each run)."""
    joined, refused = [], []
    stall, join = stretch_join._stall_join, fast_forward.join_arrivals

    def counted(engine, st, now_s, joins):
        ok = stall(engine, st, now_s, joins)
        if ok and engine.notice is not None:
            joined.append(st.k)
        return ok

    def refusals(engine, st, now_s):  # (`join_arrivals` refuses before its prompt-only join)
        untold = engine.notice is not None and untold_by(st, st.k)
        ok = join(engine, st, now_s)
        if untold and not ok:
            refused.append(st.k)
        return ok

    counters = []
    init = VTCScheduler.__init__

    def kept(self, *args):
        init(self, *args)
        counters.append(self.counters)

    monkeypatch.setattr(stretch_join, "_stall_join", counted)
    monkeypatch.setattr(fast_forward, "join_arrivals", refusals)
    monkeypatch.setattr(VTCScheduler, "__init__", kept)
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    n, fast_counters = len(joined), [dict(c) for c in counters]
    counters.clear()
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(joined) == n  # (stepping joins nothing)
    return fast, slow, n, len(refused), (fast_counters, [dict(c) for c in counters])


@pytest.mark.parametrize("path, sets, least", [
    (SESSIONS, ["scheduler.name=vtc", "workload.num_requests=400"], 300),
    (SESSIONS, ["scheduler.name=vtc", "workload.num_requests=400", "scheduler.max_wait_tokens=3"], 300),
    (SESSIONS, ["scheduler.name=vtc", "workload.num_requests=400", "replicas=8", "router.name=least-requests",
                "workload.arrival.rate_per_s=4"], 300),
    (SESSIONS, ["scheduler.name=vtc", "workload.num_requests=400", "engine.gpu_memory_utilization=0.25"], 10),
    (SESSIONS, ["scheduler.name=vllm-v0", "workload.num_requests=400", "engine.enable_prefix_caching=false"], 200),
    (SESSIONS, ["scheduler.name=sglang", "workload.num_requests=400", "engine.enable_prefix_caching=false"], 100),
    (AGENTS, ["scheduler.name=vtc", "workload.num_requests=500"], 50),
    (AGENTS, ["scheduler.name=vllm-v0", "workload.num_requests=500", "engine.enable_prefix_caching=false"], 50),
])
def test_prompt_only_joins_under_notices_match_stepping(path, sets, least, monkeypatch):
    fast, slow, joins, _, (fast_counters, slow_counters) = _both(path, sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert _summary(fast) == _summary(slow)
    assert fast_counters == slow_counters
    assert joins >= least, joins  # (before, every such arrival on a closed loop ended the stretch)


@pytest.mark.parametrize("sets, least", [(["scheduler.name=vtc"], 1),
                                         (["scheduler.name=vllm-v0", "engine.enable_prefix_caching=false"], 3)])
def test_a_finish_at_the_step_before_the_join_is_told_first(sets, least, monkeypatch):
    # Agent programs' next calls often follow at once: where a call's last token is the step
    # before the join, it is told first (`finish_notices.tell_last`, as stepping's step end), and
    # a follow-up arriving at once must be in that step's `schedule`: the join is refused there
    # (joining before it was told made the stretch end at its step with the newcomer admitted
    # but never run)
    told, refused = count_tells(monkeypatch, stretch_join)
    fast, slow, joins, _, _ = _both(AGENTS, [*sets, "workload.num_requests=500"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # (vtc: 10 told, 1 of them refused; vllm-v0: 7 and 5)
    assert len(told) >= len(refused) + 2 and len(refused) >= least and joins >= 50, (told, refused, joins)


def test_a_finish_not_told_before_a_keyed_prompt_only_join_is_refused(monkeypatch):
    # The same with prefix caching on: a next call with its parents' keys joins by
    # `keyed_join` (vLLM V0's prompt-only step). Joined before the finish at the step before was
    # told, its follow-up ended the stretch at the join's step: the call stayed admitted with
    # its prompt never run (7 s late on the first such call), until the refusal there too
    refused, joined = [], []
    join = fast_forward.keyed_join

    def counted(engine, st, now_s):
        untold = untold_by(st, st.k)
        ok = join(engine, st, now_s)
        (joined if ok else refused if untold else []).append(st.k)
        return ok

    monkeypatch.setattr(fast_forward, "keyed_join", counted)
    sets = ["scheduler.name=vllm-v0", "workload.num_requests=200", "workload.arrival.rate_per_s=3"]
    fast = simulate(load_scenario(AGENTS, sets), keep_steps=True)
    slow = simulate(load_scenario(AGENTS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(refused) >= 2 and len(joined) >= 20, (len(refused), len(joined))
