"""What SGLang's next `schedule` admits at a finish inside an admission stretch
(`Scheduler.finish_admits`, `replica/admission_stretch.py`), written for `sglang`, and the
scheduler's admission-stretch methods that ask it (`SGLangFinishAdmits`).

Under overload the queue head waits in SGLang's PrefillAdder: its prompt plus its clipped
`max_new` does not fit `rem_total`, the free tokens less every running request's reserve at
`new_token_ratio` (or the batch is at `max_running_requests`). Once the ratio has decayed to its
floor the reserve is a fixed amount per running request, so over decode steps `rem_total` only
falls (the decodes take blocks): the head waits until a finish returns blocks and a reserve.
There the adder's loop is run on the counts the stretch keeps (the decodes still running, the
blocks free before their allocation), each admitted prompt then running alone in a prompt-only
step (`Stretch.stall`). A head left waiting with nothing admitted waits until the next finish.
After admissions it may not: it was checked against the full `min(max_new, 4096)` of each
prompt admitted before it, but once they run they reserve only that times the ratio (and the
step's `max_prefill_tokens` is whole again), so the step after their prompts admits afresh.

Above the floor the ratio decays by one subtraction per decode step (stepping's floats:
`SGLangScheduler._ratio_after`), and under overload (many running requests) the reserve falls
faster than the decodes take blocks: a held head fits some steps later with nothing departing.
So after every boundary `admit_step` runs the adder's loop at each step up to the next
departure, on that step's ratio and free blocks (the step after a prompt-only step first), and
the first step where it admits is the stretch's next boundary, where this is asked again. At
the floor it stops after one step: from there only a finish lets the head in.

Not covered (None, the stretch ends): a request that is not fresh (no prefix keys, never
computed), a prompt the chunk budget would chunk.
"""

from __future__ import annotations

from bisect import bisect_right

from servesim.replica.schedulers.arrival_joins import is_fresh
from servesim.replica.schedulers.batch_passes import CLIP_MAX_NEW_TOKENS
from servesim.replica.schedulers.outputs import SchedulerOutput
from servesim.sums import left_sum
from servesim.workload.request import Request


def admits_at_finish(sched, num_running: int, free_blocks: int, ratio: float) -> list[tuple[Request, int]] | None:
    """`SGLangScheduler._prefill_batch` (fcfs, nothing chunked, `new_token_ratio` `ratio`) at a
    boundary of an admission stretch, `num_running` decoding and `free_blocks` free before
    their blocks: the (request, prompt tokens) it admits, each whole and fresh; None if that is not
    determined. With none admitted the head waits until the next finish (or `admit_step`'s step);
    with some, the step after their prompts decides afresh (`readmits_after_stall`)."""
    bs = sched.kv.block_size
    reserve = CLIP_MAX_NEW_TOKENS * ratio  # (per running request: every reserve is clipped)
    rem_total = free_blocks * bs - 0 - left_sum([reserve] * num_running)  # (stepping's expression, `mixed` 0)
    rem_input, rem_chunk = sched.params.max_prefill_tokens, sched.chunk_size
    joins: list[tuple[Request, int]] = []
    for req in sched.waiting:
        running = num_running + len(joins)
        if running >= sched.max_running:
            break  # held by the cap: only a finish lowers it
        if not is_fresh(req):
            return None
        ext = req.num_tokens
        left = sched.max_new(req) - req.num_output_tokens
        left = 0 if 0 > left else left
        total = ext + (CLIP_MAX_NEW_TOKENS if CLIP_MAX_NEW_TOKENS < left else left)
        if total >= rem_total and running:
            break  # its tokens do not fit: at the floor, fewer yet over decode steps
        if ext >= rem_input and joins:
            break  # (SGLang's `real_input_tokens >= rem_input_tokens`: the next step's budget)
        if ext > rem_chunk:
            return None  # a first chunk: stepping decides
        need = -(-ext // bs)
        if need > free_blocks:
            break  # its blocks are not free: fewer yet over decode steps
        joins.append((req, ext))
        free_blocks -= need
        rem_total -= total
        rem_input -= ext
        rem_chunk -= ext
    return joins


class SGLangFinishAdmits:
    """The admission-stretch methods of `SGLangScheduler` (which holds the state they use)."""

    def _admits_at_finishes(self) -> bool:
        """May finishes admit inside a stretch (`sglang_admits.py`)? FCFS without mixed chunks
        or the recv skipper (a prompt step restarts its count, which a join would not),
        nothing chunked or transferred, every reserve clipped (the same amount per
        request), nothing evictable in the tree (a finish's blocks are taken before any eviction
        when stepping) and a fresh head."""
        return (self.params.schedule_policy == "fcfs" and self.params.scheduler_recv_interval == 1
                and not (self.params.enable_mixed_chunk or self.chunked is not None or self._transferred
                         or self._inbox or self._unclipped or self.kv.evictable_blocks
                         or self.params.consecutive_prefill_launch_share)  # (as `arrivals_join`)
                and bool(self.waiting) and is_fresh(self.waiting[0]))

    def finish_admission(self) -> bool:
        return self._admits_at_finishes()

    def _ratio_at(self, s: int) -> float:
        """`new_token_ratio` at the start of step s of the stretch in flight: decayed once per
        decode step before it (the stretch's steps less its prompt-only ones, which `join`
        counts into `_mark`), as `on_step_end` would have left it stepping."""
        return self._ratio_after(self.num_engine_steps + s - self._mark)

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        if not self._admits_at_finishes():
            return None
        return admits_at_finish(self, num_running, free_blocks, self._ratio_at(self._stretch.k))

    def readmits_after_stall(self, num_running: int, free_blocks: int) -> bool:
        # not determined there (a head no longer fresh, a reserve unclipped): stepping decides;
        # else `admit_step` asks from that step on
        return bool(self.waiting) and not self._admits_at_finishes()

    def admit_step(self, st, s: int, kmax: int) -> int:
        """The first step j in [s, kmax) at which `admits_at_finish` admits on step j's ratio
        and free blocks (the decodes' growth before j counted), else kmax. Remembers `st` for the
        ratio at its boundaries (`finish_admits`)."""
        self._stretch = st
        if not self.waiting or not self._admits_at_finishes():
            return kmax
        rem = st._sorted_rem
        num_running = len(rem) - bisect_right(rem, s)  # (the same up to the next departure, kmax at most)
        bs = self.kv.block_size
        free = st.free_blocks - st.join_blocks  # (less the decodes' blocks before step j)
        for j in range(s, kmax):
            ratio = self._ratio_at(j)
            if admits_at_finish(self, num_running, free - st.blocks_needed(j, bs), ratio) != []:
                return j
            if ratio == self.min_ratio:
                break  # (from here the reserve stays and the free blocks only fall)
        return kmax

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.join(joins, out)
        self._held = bool(self.waiting)  # (held to the next finish, or to the next step: `readmits_after_stall`)
