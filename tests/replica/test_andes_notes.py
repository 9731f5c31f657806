"""Andes's lazy last-token notes (`andes_notes.py`) read, at every step of overloaded runs, the
same times as noting every scheduled request at every step's end (the reference below, the
scheduler's former `on_step_end`)."""

from __future__ import annotations

import pytest

from servesim.replica.schedulers import andes_notes
from servesim.workload.request import RequestState
from tests.factories import make_engine, serve
from tests.replica.test_andes_pending import overload

RUNNING = RequestState.RUNNING


def read(notes, req):
    """The note `notes` would give `req` if read now (without settling it)."""
    o = notes.outputs.get(req.id)
    if o is not None and o != req.num_output_tokens and req.state is RUNNING:
        return notes._ends[req.token_steps[-1] + 1]
    return notes.last_token_s.get(req.id)


@pytest.mark.parametrize("keep_ends", [andes_notes.KEEP_ENDS, 8])
@pytest.mark.parametrize("params,num_cpu_blocks", [
    ({}, None),
    ({"horizon_s": 1.0, "tds_exp": 3.0, "ttft_exp_s": 2.0, "util_threshold": 0.6}, 40),
    ({"solver_interval": 3, "sacrifice_percentile": 0.5, "unit_overhead_s": 1e-5}, 0),
])
def test_lazy_notes_read_as_noting_every_step(monkeypatch, keep_ends, params, num_cpu_blocks):
    monkeypatch.setattr(andes_notes, "KEEP_ENDS", keep_ends)
    engine, sched, kv, loop, done = make_engine(num_blocks=150, scheduler="andes", params=params,
                                                num_cpu_blocks=num_cpu_blocks, max_num_batched_tokens=256,
                                                max_num_seqs=16)
    ref_outputs, ref_last = {}, {}
    seen = {"reads": 0, "stale": 0}
    on_step_end, forget, schedule = sched.on_step_end, sched.forget, sched.schedule

    def noted(output, now_s):
        for req, _ in output.scheduled:  # the former rule
            n = req.num_output_tokens
            if ref_outputs.get(req.id, 0) != n and req.state is RUNNING:
                ref_outputs[req.id] = n
                ref_last[req.id] = now_s
        on_step_end(output, now_s)

    def forgotten(req):
        ref_outputs.pop(req.id, None)
        ref_last.pop(req.id, None)
        forget(req)

    def checked(now_s):
        notes = sched._notes
        for req in sched.running + list(sched.waiting) + sched.swapped:
            assert read(notes, req) == ref_last.get(req.id), req.id
            seen["reads"] += 1
            seen["stale"] += notes.outputs.get(req.id) not in (None, req.num_output_tokens)
        return schedule(now_s)

    sched.on_step_end, sched.forget, sched.schedule = noted, forgotten, checked
    serve(engine, loop, overload(11, 400, True))
    assert len(done) == 400 and not sched._notes.outputs and not sched._notes.last_token_s
    # the leading decodes were left stale, and read stale, many times (the lazy path ran)
    assert sched._notes.num_bulk > 1000 and seen["stale"] > 1000 and seen["reads"] > 10000
    assert engine.num_fast_forwarded_steps > 0 and len(sched._notes._ends) <= keep_ends
