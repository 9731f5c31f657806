"""Sarathi-Serve driven step by step: token budget, stall-free decodes, whole-prompt allocation."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request, serve
from tests.replica.test_vllm_scheduler import run_logged


def _engine(**kw):
    params = {"chunk_size": kw.pop("chunk_size", 64)}
    return make_engine(scheduler="sarathi", params=params, fast_forward=False, **kw)


def test_chunks_fill_the_budget_and_prompt_blocks_are_allocated_at_admission():
    engine, sched, kv, loop, done = _engine(num_blocks=100)
    a, b = make_request(0, 100, 3), make_request(1, 30, 2)
    seen = []
    schedule = sched.schedule

    def spy(now_s):
        out = schedule(now_s)
        seen.append(kv.num_blocks_of(0))
        return out

    sched.schedule = spy
    steps = run_logged(engine, loop, [a, b])
    assert steps[0] == [(0, 64)]
    assert seen[0] == 7  # all 100 prompt tokens' blocks, though only 64 run now
    assert steps[1] == [(0, 36), (1, 28)]  # the rest of A, then B gets the budget left
    assert steps[2] == [(0, 1), (1, 2)]
    assert steps[3] == [(0, 1), (1, 1)]
    assert len(steps) == 4 and kv.num_free_blocks == 100


def test_decodes_are_never_stalled_by_a_long_prompt():
    engine, sched, kv, loop, done = _engine(num_blocks=100)
    steps = run_logged(engine, loop, [make_request(0, 10, 8), make_request(1, 200, 1, arrival=0.005)])
    assert steps[0] == [(0, 10)]
    # B's 200-token prompt is spread over steps of 63 tokens next to A's decode.
    assert steps[1] == [(0, 1), (1, 63)]
    assert steps[2] == [(0, 1), (1, 63)]
    assert steps[3] == [(0, 1), (1, 63)]
    assert steps[4] == [(0, 1), (1, 11)]


def test_lifo_preemption_and_whole_prompt_readmission():
    engine, sched, kv, loop, done = _engine(num_blocks=10, chunk_size=128)
    a, b = make_request(0, 64, 30), make_request(1, 48, 30)
    steps = run_logged(engine, loop, [a, b])
    assert steps[0] == [(0, 64), (1, 48)]
    assert steps[16] == [(0, 1), (1, 1)]
    # Step 17: A needs its 6th block (81 tokens) while B holds 5: B (the later) is preempted.
    assert steps[17] == [(0, 1)]
    # B must fit all of its 48 + 17 tokens at once, so it waits until A finishes (no thrashing).
    assert all(s == [(0, 1)] for s in steps[18:30])
    assert steps[30] == [(1, 65)]
    assert b.num_preemptions == 1 and a.num_preemptions == 0
    assert a.state == b.state == RequestState.FINISHED and kv.num_free_blocks == 10


def test_watermark_blocks_admission():
    engine, sched, kv, loop, done = _engine(num_blocks=100, chunk_size=1024)
    sched.params = sched.Params(chunk_size=1024, watermark=0.5)  # 50 blocks kept free
    reqs = [make_request(0, 640, 2), make_request(1, 320, 1)]  # 40 + 20 blocks
    steps = run_logged(engine, loop, reqs)
    assert steps[0] == [(0, 640)]  # B would leave 100 - 60 = 40 < 50 blocks free
    assert steps[1] == [(0, 1)]
    assert steps[2] == [(1, 320)]


def test_repeats_chunk_only_while_a_full_chunk_leaves_the_prompt_unfinished():
    """`repeats_chunk` (chunk stretches): decodes plus one prompt whose chunk spends the budget
    they leave and leaves it unfinished; not its last chunk, nor a step with two prompts."""
    engine, sched, kv, loop, done = _engine(num_blocks=100)
    answers = []
    schedule = sched.schedule

    def spy(now_s):
        out = schedule(now_s)
        answers.append((out.num_known_decodes, [(r.id, n) for r, n in out.scheduled], sched.repeats_chunk(out)))
        return out

    sched.schedule = spy
    run_logged(engine, loop, [make_request(0, 10, 8), make_request(1, 200, 1, arrival=0.005),
                              make_request(2, 30, 1, arrival=0.005)])
    assert answers[0] == (0, [(0, 10)], False)  # A's whole prompt: not a chunk
    assert answers[1] == (1, [(0, 1), (1, 63)], True)  # B: 63 of 200, then 137 left
    assert answers[2] == (1, [(0, 1), (1, 63)], True)  # 74 left
    assert answers[3] == (1, [(0, 1), (1, 63)], True)  # 11 left
    assert answers[4] == (1, [(0, 1), (1, 11), (2, 30)], False)  # B's last chunk, C admitted


@pytest.mark.parametrize("spec", [0, 3])
def test_an_arrival_waits_behind_a_chunk_stretch_and_cuts_a_decode_stretch(spec):
    """The engine's one rule (`Engine.arrival_keeps`; sarathi answers no arrival itself): C
    arriving while B's 1,000-token prompt runs chunks beside A's decode is queued and the chunk
    stretch goes on (a `ChunkStretch`, or a `SpecStretch` with the prompt when speculating);
    D arriving during A's decode stretch cuts it. Finish times as stepping's."""
    def run(fast_forward):
        kw = {"num_speculative_tokens": spec, "spec_acceptance_rate": 0.7, "rng": np.random.default_rng(7)}
        engine, sched, kv, loop, done = make_engine(num_blocks=200, scheduler="sarathi", params={"chunk_size": 64},
                                                    fast_forward=fast_forward, **(kw if spec else {}))
        seen, cuts = [], []

        class Spied(type(engine)):  # (the engine has slots, no instance dict: spied by its class)
            __slots__ = ()

            def interrupt(self, t):
                cuts.append(t)
                return super().interrupt(t)

            def add_request(self, req, t):
                st, n = self.stretch, len(cuts)
                super().add_request(req, t)
                seen.append((req.id, type(st).__name__ if st is not None else None,
                             st is not None and st.spends_budget, len(cuts) > n))

        engine.__class__ = Spied
        reqs = [make_request(0, 10, 80), make_request(1, 1000, 1, arrival=0.005),
                make_request(2, 30, 1, arrival=0.02), make_request(3, 20, 1, arrival=0.4 if spec else 0.6)]
        serve(engine, loop, reqs)
        return seen, [r.finish_s for r in reqs], engine

    seen, finishes, engine = run(True)
    stretch = "SpecStretch" if spec else "ChunkStretch"
    assert seen[2] == (2, stretch, True, False)  # kept: the chunks spend the budget
    assert seen[3][1] in ("Stretch", "SpecStretch") and seen[3][2:] == (False, True)  # a decode stretch: cut
    assert engine.num_fast_forwarded_steps > 0.5 * engine.num_steps
    assert finishes == run(False)[1]
