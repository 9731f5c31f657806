"""The order of finishes in one step of a stretch.

Requests that emit their last token in the same step finish in the order the policy ran them
there, as stepping's `_end_step` takes them: on a closed-loop workload that order makes their
follow-ups (ids, lengths, think times drawn in turn), and it is the order their blocks return to
the free queue. A stretch lists its requests as step 0's decodes, then its prompts
(`Stretch.reqs`); where the policy runs the repeated steps in another order (FastSwitch's walk
can put a prompt admitted in step 0 before the decodes; a key order), `Stretch.rank` holds each
request's place in it, and ties of `remaining` go by it (`Stretch.finish_key`). A policy whose
order changes inside a stretch by its levels (`reorders_running`: Autellix) has its stretches
end before a step two requests leave together (`policy_stops.limit`); one whose `repeat_order`
is None is not covered. Exact as stepping: tests/cluster/test_finish_notices.py.
"""

from __future__ import annotations

from operator import is_, itemgetter

from servesim.replica.schedulers.base import SchedulerOutput
from servesim.workload.request import Request

_FIRST = itemgetter(0)


def policy_rank(sched, out: SchedulerOutput, reqs: list[Request], nd: int) -> list[int] | None:
    """Each of `reqs` (step 0's `nd` decodes, then its prompts) at its place in the order the
    policy runs the steps that repeat `out` (`Scheduler.repeat_order`), where that is not `reqs`'
    own (FastSwitch's walk, a key order); None where it is, or where the policy does not know it."""
    scheduled = out.scheduled
    if sched.stable_decode_order and all(map(is_, map(_FIRST, scheduled[nd:]), reqs[nd:])):
        return None  # (its order is `scheduled`'s, whose prompts come after the decodes: `reqs`')
    order = sched.repeat_order(out)
    if order is None or all(map(is_, order, reqs)):
        return None
    place = {id(r): i for i, r in enumerate(order)}
    return [place[id(r)] for r in reqs]
