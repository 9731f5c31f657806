"""`VLLMSteps.evict` finds the victim's entry in the step's output from its end first (an
admission's victim is among the last few entries) and in the rest otherwise: wherever the
entry is, or if the victim was not scheduled, the step's output, the refund and the known
decodes are those of a scan from the front, and the later runs of decodes stay on their
entries. It takes the victim out of `running` by the same lookup from the end
(`_tail_position`)."""

from __future__ import annotations

import pytest

from servesim.replica.schedulers import vllm_steps
from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request

NUM = 20  # requests scheduled in the step (more than `_TAIL`, so both searches are used)


def _step():
    engine, sched, kv, loop, _ = make_engine(num_blocks=200, scheduler="vllm", max_num_seqs=NUM + 1,
                                             max_num_batched_tokens=NUM * 8, fast_forward=False)
    reqs = [make_request(i, 8, 5) for i in range(NUM + 1)]
    for req in reqs:
        sched.add_request(req, 0.0)
    out = sched.schedule(0.0)
    return sched, out, reqs


@pytest.mark.parametrize("pos", [*range(NUM), None])
def test_evict_finds_the_victims_entry_wherever_it_is(pos):
    sched, out, reqs = _step()
    assert [r.id for r, _ in out.scheduled] == list(range(NUM))  # (the last one did not fit the budget)
    out.num_known_decodes = NUM // 2  # (a hint: the entries before it are the step's leading decodes)
    expected = [e for e in out.scheduled if pos is None or e[0] is not reqs[pos]]
    victim = reqs[NUM] if pos is None else reqs[pos]
    if pos is None:  # a victim with no entry (not scheduled in this step): running, as a waiting one
        sched.waiting.remove(victim)
        sched.running.append(victim)
    refund = sched.evict(victim, out)
    assert refund == (0 if pos is None else 8)
    assert out.scheduled == expected
    assert out.num_known_decodes == NUM // 2 - (pos is not None and pos < NUM // 2)
    assert victim not in sched.running and victim.state is RequestState.PREEMPTED
    assert sched.running == [r for r in reqs[:NUM] if r is not victim]  # the others, in order


def test_the_tail_and_the_rest_cover_every_entry_once():
    entries = [(object(), 1) for _ in range(vllm_steps._TAIL + 5)]
    for n in range(len(entries) + 1):
        scheduled = entries[:n]
        for j, (req, _) in enumerate(scheduled):
            in_tail = vllm_steps._tail_index(scheduled, req)
            assert in_tail == (j if j >= n - vllm_steps._TAIL else -1)


def test_the_tail_position_is_exact_and_only_in_the_tail():
    # `evict` deletes `running[i]` by this index: off by one, it would drop a neighbour and keep
    # the victim; a tail one entry too short or long would still be right through the fallback,
    # so the index itself is checked (and -1 before the tail, where `list.remove` takes over)
    reqs = [object() for _ in range(vllm_steps._TAIL + 5)]
    for n in range(len(reqs) + 1):
        running = reqs[:n]
        for j, req in enumerate(running):
            assert vllm_steps._tail_position(running, req) == (j if j >= n - vllm_steps._TAIL else -1)
        assert vllm_steps._tail_position(running, object()) == -1


@pytest.mark.parametrize("pos", [*range(NUM), None])
def test_evict_keeps_the_decode_runs_on_their_entries(pos):
    """`decode_runs` (index ranges of `scheduled`) cover the same entries, less the victim's,
    after its entry is taken out before, inside or after them (or when it had none)."""
    sched, out, reqs = _step()
    out.decode_runs = [[3, 7], [7, 8], [12, 16], [18, 18]]
    covered = [[e[0] for e in out.scheduled[a:b]] for a, b in out.decode_runs]
    victim = reqs[NUM] if pos is None else reqs[pos]
    if pos is None:
        sched.waiting.remove(victim)
        sched.running.append(victim)
    sched.evict(victim, out)
    assert [[e[0] for e in out.scheduled[a:b]] for a, b in out.decode_runs] == [
        [r for r in run if r is not victim] for run in covered]
