"""Andes's last-token notes: when each request it holds last emitted a token, without a pass
over the running batch at every step.

The rule is the one Andes always had (`AndesScheduler.on_step_end`): at the end of each step
(or stretch) every scheduled request still running whose output count changed since its note
is noted with that count and the step's end. Under overload ~460 requests decode at every
stepped step and nearly all of them change count, so that pass was about 8 % of the 1-replica
azure-conv-10x cell, for notes read only when a request leaves the batch (its density while
pending) or, rarely, by the knapsack over the running batch.

So the leading decodes of a step (`SchedulerOutput.num_known_decodes`: each emitted at the
step's end, its last step) are not noted there: the end of every step is kept instead, by the
engine's step count, and a running request whose note is behind its output count is settled
when it is read or leaves the batch: its last token came at the end of its last emitting step,
`token_steps[-1]` (the engine's step count and the step log's index move together). Only
requests noted here before run stale, so one that arrives with tokens made elsewhere (a moved
or transferred request, whose `token_steps` index another replica's log) keeps the old rule.
The notes read are the same floats as noting every step (tests/replica/test_andes_notes.py).
"""

from __future__ import annotations

from typing import Iterable

from servesim.replica.schedulers.base import SchedulerOutput
from servesim.workload.request import Request, RequestState

RUNNING = RequestState.RUNNING
# Steps whose ends are kept before every stale running note is settled and the ends dropped:
# one pass over the batch per this many steps keeps the map small.
KEEP_ENDS = 1024


class LastTokenNotes:
    """Per request: its output count at its note and the time of its last token."""

    def __init__(self) -> None:
        self.outputs: dict[int, int] = {}  # output count when noted (possibly behind: stale)
        self.last_token_s: dict[int, float] = {}  # settled notes: what the policy reads
        self._ends: dict[int, float] = {}  # engine step count after a step -> that step's end
        self._since = 0  # the engine's step count at the previous note: later steps are this one's
        self.num_bulk = 0  # leading decodes left stale at a step's end (counted for tests)

    def note_step(self, output: SchedulerOutput, now_s: float, num_engine_steps: int,
                  running: list[Request]) -> None:
        """The steps up to `num_engine_steps` ended at `now_s` having run `output`."""
        ends = self._ends
        ends[num_engine_steps] = now_s
        since, self._since = self._since, num_engine_steps
        outputs, last_token = self.outputs, self.last_token_s
        known = output.num_known_decodes
        self.num_bulk += known
        for req, _ in (output.scheduled[known:] if known else output.scheduled):
            n = req.num_output_tokens
            o = outputs.get(req.id)
            if (0 if o is None else o) != n and req.state is RUNNING:
                outputs[req.id] = n
                # it emitted in this note's steps, or last at an earlier step's end as a leading decode
                last_token[req.id] = now_s if o is None or req.token_steps[-1] >= since else ends[
                    req.token_steps[-1] + 1]
        if len(ends) > KEEP_ENDS:
            self.settle_all(running)
            ends.clear()

    def settle(self, req: Request) -> None:
        """Bring `req`'s note up to date if it ran stale as a leading decode (before it is read,
        or leaves the batch and with it the rule that settles it)."""
        o = self.outputs.get(req.id)
        if o is not None and o != req.num_output_tokens and req.state is RUNNING:
            self.outputs[req.id] = req.num_output_tokens
            self.last_token_s[req.id] = self._ends[req.token_steps[-1] + 1]

    def settle_all(self, reqs: Iterable[Request]) -> None:
        for req in reqs:
            self.settle(req)

    def forget(self, req_id: int) -> None:
        self.outputs.pop(req_id, None)
        self.last_token_s.pop(req_id, None)
