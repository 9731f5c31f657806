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
step's `max_prefill_tokens` is whole again), so the step after their prompts admits afresh:
`readmits_after_stall` runs this on the counts of that step, and if it admits there the stretch
takes its next boundary at that step, where this is asked again.

Not covered (None, the stretch ends): a ratio above its floor (it decays every decode step),
a request that is not fresh (no prefix keys, never computed), a prompt the chunk budget would
chunk.
"""

from __future__ import annotations

from servesim.replica.schedulers.arrival_joins import is_fresh
from servesim.replica.schedulers.batch_passes import CLIP_MAX_NEW_TOKENS
from servesim.replica.schedulers.outputs import SchedulerOutput
from servesim.workload.request import Request


def admits_at_finish(sched, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
    """`SGLangScheduler._prefill_batch` (fcfs, nothing chunked, the ratio at its floor) at a
    finish or just after a prompt-only step, `num_running` decoding and `free_blocks` free before
    their blocks: the (request, prompt tokens) it admits, each whole and fresh; None if that is not
    determined. With none admitted the head waits until the next finish; with some, the step after
    their prompts decides afresh (`SGLangScheduler.readmits_after_stall`)."""
    bs = sched.kv.block_size
    reserve = CLIP_MAX_NEW_TOKENS * sched.new_token_ratio  # (per running request: the floor's)
    rem_total = free_blocks * bs - 0 - sum([reserve] * num_running)  # (stepping's expression, `mixed` 0)
    rem_input, rem_chunk = sched.params.max_prefill_tokens, sched.chunk_size
    joins: list[tuple[Request, int]] = []
    for req in sched.waiting:
        running = num_running + len(joins)
        if running >= sched.max_running:
            break  # held by the cap: only a finish lowers it
        if not is_fresh(req):
            return None
        ext = req.num_tokens
        total = ext + min(max(sched.max_new(req) - req.num_output_tokens, 0), CLIP_MAX_NEW_TOKENS)
        if total >= rem_total and running:
            break  # its tokens do not fit: fewer yet over decode steps
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
        or an inbox, nothing chunked or transferred, every reserve clipped (the same amount per
        request), the ratio at its floor, nothing evictable in the tree (a finish's blocks are
        taken before any eviction when stepping) and a fresh head."""
        return (self.new_token_ratio == self.min_ratio and self.params.schedule_policy == "fcfs"
                and not (self.params.enable_mixed_chunk or self.chunked is not None or self._transferred
                         or self._inbox or self._unclipped or self.kv.evictable_blocks)
                and bool(self.waiting) and is_fresh(self.waiting[0]))

    def finish_admission(self) -> bool:
        return self._admits_at_finishes()

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        return admits_at_finish(self, num_running, free_blocks) if self._admits_at_finishes() else None

    def readmits_after_stall(self, num_running: int, free_blocks: int) -> bool:
        if not self.waiting:
            return False
        return not self._admits_at_finishes() or admits_at_finish(self, num_running, free_blocks) != []

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.join(joins, out)
        self._held = bool(self.waiting)  # (held to the next finish, or to the next step: `readmits_after_stall`)
