"""Continuum: pin an agent turn's KV cache for a time-to-live while its tool call runs.

Li et al., "Continuum: Efficient and Robust Multi-Turn LLM Agent Scheduling with KV Cache
Time-to-Live" (arXiv 2511.02230), scheduling.md §7.1, following the public fork's mechanics
on top of the vLLM v1 scheduler (`vllm`):
- when a call of a program (or a turn of a session) finishes, its KV blocks stay allocated
  ("pinned") until `ttl_s` later instead of returning to the LRU free queue, so the program's
  next call finds its prefix on the GPU even under memory pressure. A request tagged
  `extra["last_call"] = True` is not pinned. A job keeps one pin (its latest finished call);
- pins expire at their deadline (a policy timer: `next_timer_s`), except while the job has a
  call waiting (it is about to use them), and are released when the job's next call is
  admitted (it then holds the prefix it hit; the fork waits for that call to finish: this
  frees the unused rest earlier). Under memory pressure pins give way only to avoid a
  deadlock, as in the public fork: when at most one request runs and it needs blocks, or
  nothing runs and the waiting head does not fit (the newest program's pin first);
- program-level FCFS: the waiting queue orders calls of jobs that hold a pin first, then by the
  arrival of the job's first call, then by arrival; the preemption victim is the running call
  whose job arrived last.
The TTL is fixed (the public fork's 2 s); the paper's cost-benefit TTL per tool (τ* = argmax
P(tool <= τ)·B − τ) needs tool identities the workload does not carry yet.
"""

from __future__ import annotations

import heapq
from operator import attrgetter
from typing import Iterator

from pydantic import Field

from servesim.replica.schedulers import register
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_THROUGH, FastForward, SchedulerOutput, SchedulerParams,
)
from servesim.replica.schedulers.queues import ARRIVAL_ID, SortedWaiting
from servesim.replica.schedulers.vllm import VLLMScheduler
from servesim.workload.request import Request


class ContinuumParams(SchedulerParams):
    ttl_s: float = Field(2.0, ge=0.0)
    """How long a finished call's KV stays pinned for the job's next call (public fork: 2 s)."""


_PROGRAM_ID, _SESSION_ID = attrgetter("program_id"), attrgetter("session_id")


def job_of(req: Request):
    """The program or session a call belongs to (None: a standalone request)."""
    if req.program_id is not None:
        return ("program", req.program_id)
    if req.session_id is not None:
        return ("session", req.session_id)
    return None


class ProgramQueue:
    """Waiting calls in program-level FCFS order (pinned jobs first); same interface as FCFSQueue.

    A heap on (job's first arrival, arrival, id) with lazy deletion, plus the waiting calls of
    each job, so that the calls of pinned jobs are found without scanning the queue. `reqs`:
    the calls queued before (standalone ones: `arrival_queue`).
    """

    def __init__(self, sched: "ContinuumScheduler", reqs=()) -> None:
        self._sched = sched
        self._heap: list[tuple] = []
        self._live: dict[int, int] = {}  # request id -> sequence number of its valid heap entry
        self._by_job: dict = {}  # job -> {request id: request}
        self._seq = 0
        for req in reqs:
            self.append(req)

    def _order(self, req: Request) -> tuple:
        return (self._sched.first_entry_s.get(job_of(req), req.arrival_s), req.arrival_s, req.id)

    def append(self, req: Request) -> None:
        self._seq += 1
        self._live[req.id] = self._seq
        heapq.heappush(self._heap, (*self._order(req), self._seq, req))
        self._by_job.setdefault(job_of(req), {})[req.id] = req

    prepend = append  # a preempted call re-enters by its program's order

    def peek(self) -> Request:
        pinned = [r for job in self._sched.pins for r in self._by_job.get(job, {}).values()]
        if pinned:
            return min(pinned, key=self._order)
        heap = self._heap
        while self._live.get(heap[0][2]) != heap[0][3]:
            heapq.heappop(heap)
        return heap[0][4]

    def pop(self) -> Request:
        req = self.peek()
        self.remove(req)
        return req

    def remove(self, req: Request) -> None:
        del self._live[req.id]
        job = job_of(req)
        calls = self._by_job[job]
        del calls[req.id]
        if not calls:
            del self._by_job[job]
        if len(self._heap) > 2 * len(self._live) + 4:
            # Mostly entries of calls gone (lazy deletion): a walk of the queue in heap order
            # (`_in_heap_order`, every arrival's `arrivals_join`) would read them all. A new heap
            # of the live ones (a new list: a walk in progress keeps reading the old one) gives
            # the same order, the entries' keys being unique.
            live = self._live
            self._heap = [e for e in self._heap if live.get(e[2]) == e[3]]
            heapq.heapify(self._heap)

    def clear(self) -> None:
        self._heap.clear()
        self._live.clear()
        self._by_job.clear()

    def jobs(self):
        """Jobs with a call waiting."""
        return self._by_job.keys()

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Request]:
        pins = self._sched.pins
        if not pins:
            return self._in_heap_order()
        reqs = [r for calls in self._by_job.values() for r in calls.values()]
        return iter(sorted(reqs, key=lambda r: (job_of(r) not in pins, *self._order(r))))

    def _in_heap_order(self) -> Iterator[Request]:
        """The live calls in heap order, read lazily (best first from the root: a node's entry
        is never above its parent's): the order `pop` takes them with no pin, at a cost in the
        calls read, not the queue's length (an admission reads a few of thousands waiting).
        The heap must not change while this is read (nothing pushes during an admission walk)."""
        heap, live = self._heap, self._live
        n = len(heap)
        front = [(heap[0], 0)] if n else []
        while front:
            entry, i = heapq.heappop(front)  # (entries are unique by their sequence number)
            if live.get(entry[2]) == entry[3]:
                yield entry[4]
            for c in (2 * i + 1, 2 * i + 2):
                if c < n:
                    heapq.heappush(front, (heap[c], c))


def arrival_queue() -> SortedWaiting:
    """`ProgramQueue`'s order while every call is standalone (its key (arrival, arrival, id)):
    a deque kept in (arrival, id) order, whose length, truth and iteration are C calls, as
    vLLM's FCFS queue (a preempted call re-enters at its place, not at the front)."""
    queue = SortedWaiting(ARRIVAL_ID)
    queue.clean = True  # (the keys never change)
    return queue


@register("continuum")
class ContinuumScheduler(VLLMScheduler):
    Params = ContinuumParams

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.first_entry_s: dict = {}  # job -> arrival of its first call
        self.pins: dict = {}  # job -> (id of the finished call holding the blocks, deadline)
        # Until a job's first call comes in the queue is `arrival_queue` (the same order); then
        # a `ProgramQueue` (`_job_held`). Standalone runs (azure-conv) keep the deque: the
        # heap's Python-level walk and length cost continuum 20 % of its time there.
        self.waiting = arrival_queue()
        self._released = False
        # a stretch through finishes that pin (`fast_forward`): each keeps its blocks and sets
        # its pin's timer `ttl_s` after it
        self._through_pins = FastForward(repeat=True, after_prefill=True, through_finishes=True,
                                         finish_timer_s=self.params.ttl_s, through_timers=True)
        # ... through finishes that pin nothing: the pins held before still expire inside it
        self._through_expiries = FastForward(repeat=True, after_prefill=True, through_finishes=True,
                                             through_timers=True)

    def add_request(self, req: Request, now_s: float) -> None:
        if self._job_held(req):
            self.first_entry_s.setdefault(job_of(req), req.arrival_s)
        super().add_request(req, now_s)

    def add_transferred(self, req: Request, now_s: float) -> None:
        self._job_held(req)  # (its finish may pin: the queue's order)
        super().add_transferred(req, now_s)

    def _job_held(self, req: Request) -> bool:
        """Is `req`, coming in, a job's call? From the first on, the queue is the program queue."""
        if req.program_id is None and req.session_id is None:  # (`job_of`'s test, without its tuple)
            return False
        if type(self.waiting) is not ProgramQueue:
            self.waiting = ProgramQueue(self, self.waiting)
        return True

    def pins_on_finish(self, req: Request) -> bool:
        """Will `req`'s finish pin its blocks (rather than free them)?"""
        # (`job_of(req) is None` without the tuple: asked for every finish a stretch's views count)
        return not ((req.program_id is None and req.session_id is None) or self.params.ttl_s <= 0
                    or req.extra.get("last_call"))

    def finish(self, req: Request, now_s: float) -> None:
        self.running.remove(req)
        if not self.pins_on_finish(req):
            self.kv.free(req.id)
            return
        job = job_of(req)
        self._unpin(job)
        # (from its step's end: `now_s`, or earlier for a finish a stretch processes late; a
        # finish streamed later than the step, by the API server, counts from the step)
        t = req.finish_s if req.finish_s is not None and req.finish_s < now_s else now_s
        self.pins[job] = (req.id, t + self.params.ttl_s)

    def finish_all(self, reqs: list[Request], now_s: float) -> None:
        if len(reqs) < 2 or any(map(self.pins_on_finish, reqs)):
            for req in reqs:
                self.finish(req, now_s)
        else:
            self._finish_at_once(reqs)  # (none pins: each `finish` is vLLM's)

    keeps_blocks = pins_on_finish  # (a stretch through finishes counts no blocks freed by a pin)

    def finish_timer_key(self, req: Request):
        return job_of(req)  # (a pin's timer, `fire_timers`: its job's)

    # ---- pins ----------------------------------------------------------------------
    def _unpin(self, job) -> None:
        pin = self.pins.pop(job, None)
        if pin is not None:
            self.kv.free(pin[0])

    def _waiting_jobs(self):
        return self.waiting.jobs()

    def _expire(self, now_s: float) -> None:
        due = [job for job, (_, deadline) in self.pins.items() if deadline <= now_s]
        if due:
            busy = self._waiting_jobs()
            for job in due:
                if job not in busy:
                    self._unpin(job)

    def next_timer_s(self) -> float:
        t = VLLMScheduler.next_timer_s(self)  # (swap-ins and adapter loads, as vLLM's)
        if not self.pins:
            return t
        busy = self._waiting_jobs()
        return min(t, min((d for job, (_, d) in self.pins.items() if job not in busy), default=t))

    def stretch_timers(self) -> list | None:
        # With nothing waiting, the `schedule` of the first step starting at or after a pin's
        # deadline expires it (no job is busy) whatever else the stretch does: a pin whose
        # blocks no other request holds frees exactly its blocks there (counted now: nothing
        # takes a held block inside a stretch), so the stretch may run through that expiry.
        # A pin sharing a block (a prefix another request holds) frees what depends on the
        # order of the other frees: its deadline bounds the stretch as before.
        if not self.pins:
            return None
        kv = self.kv
        first_s, through = float("inf"), []
        for job, (rid, deadline) in self.pins.items():
            n = kv.num_blocks_of(rid)
            if kv.blocks_freed([rid], {})[0] == n:
                through.append((deadline, job, n))
            elif deadline < first_s:
                first_s = deadline
        return [first_s, through, [], None] if through else None

    def timers_only_free(self) -> bool:
        # (with nothing waiting, an expiry frees the pin's blocks and `schedule` goes on as
        # vLLM's; vLLM's own timers, swap-ins and adapter loads, change the batch)
        return VLLMScheduler.next_timer_s(self) == float("inf")

    def fire_timers(self, keys) -> None:
        for job in keys:  # (`_expire`'s, in its order: the engine lists them by step, then in `pins`' order)
            self._unpin(job)

    def reclaim(self, req: Request) -> bool:
        # Pins give way only to avoid a deadlock (the public fork): with other requests
        # running, the newest program's running call is preempted instead.
        if not self.pins or len(self.running) > 1:
            return False
        own = job_of(req)  # its own job's pin goes last: the request may be using those blocks
        self._unpin(max(self.pins, key=lambda j: (j != own, self.first_entry_s.get(j, 0.0))))
        return True

    def drain(self, now_s: float) -> list[Request]:
        for job in list(self.pins):
            self._unpin(job)
        return super().drain(now_s)

    # ---- the decision ------------------------------------------------------------------
    def schedule(self, now_s: float) -> SchedulerOutput:
        if self.pins:
            self._expire(now_s)
            if not self.running and self.waiting and self.pins:
                self._avoid_deadlock()
        out = super().schedule(now_s)
        self._released = False
        if self.pins:
            for req, _ in out.scheduled:  # the job's next call now holds the prefix it hit
                job = job_of(req)
                if job in self.pins:
                    self._unpin(job)
                    self._released = True  # blocks freed after admission: the next step may admit
        return out

    def plain(self) -> bool:
        """No call of a program or session has arrived and no adapter is loaded: nothing pins,
        the queue is in arrival order and `schedule` and `finish` are vLLM's FCFS ones (a
        standalone request's finish frees its blocks), so vLLM's answers to the fast-forward
        hooks hold, read in this queue's order (azure-conv's requests are all standalone)."""
        return not self.first_entry_s and self.lora is None

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # A call may jump the queue (its program's order) and an arrival changes which pins
        # may expire (the timers): with jobs every arrival cuts the stretch. Without, vLLM's
        # FCFS answer for a standalone newcomer, which must sort after the blocked head (a
        # preempted call re-enters by its arrival, so the head need not be the earliest).
        # (`plain` and `job_of` inlined: asked at every arrival)
        if self.first_entry_s or self.lora is not None or not self.waiting or (
                req is not None and (req.program_id is not None or req.session_id is not None
                                     or req.lora is not None)):
            return False
        if len(self.running) >= self.config.max_num_seqs:
            return True  # the admission loop does not run at all
        head = self.waiting.peek()
        return (self._head_blocked_by_kv and head is self._blocked_head
                and (req is None or ARRIVAL_ID(req) > ARRIVAL_ID(head)))  # (no job's first arrival: the queue's order)

    def joins_last(self, req: Request, now_s: float) -> bool:
        """May `req`, the one waiting call, join the stretch in flight as vLLM's next turns do
        (`replica/keyed_join.py`, which also checks that no pin's timer is due at the join
        step)? Its admission there is vLLM's (`schedule`'s queue holds it alone; nothing
        expires; calls are running, so no deadlock check) and it runs after the running calls
        (`stable_decode_order`), if its job holds no pin (stepping's `schedule` would release
        it after the admission) and no running call is its job's (a call that finished inside
        the stretch, processed late, pins at the join step: the admission would release that).
        The running calls' jobs hold no pin either (`_jobs_apart`, or no running call pins)."""
        job = job_of(req)
        if job is None:
            return True
        if job in self.pins:
            return False
        # (no running call of its job, read in C: a program's calls by their program id; a
        # session's by their session id, then by their jobs only if a program's call has it)
        kind, key = job
        if kind == "program":
            return key not in map(_PROGRAM_ID, self.running)
        return key not in map(_SESSION_ID, self.running) or job not in map(job_of, self.running)

    def vllm_admission(self) -> bool:
        return self.plain()

    def finish_admission(self) -> bool:
        return self.plain()

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # vLLM's answer (prompts finished this step decode with the rest), unless a pin was
        # released. Through finishes (vLLM's answer for its own `finish`): a finish that pins
        # nothing frees its blocks as vLLM's does; one that pins keeps them and adds a timer
        # (the engine fires it inside the stretch or stops there), while the jobs are apart.
        if self._released:
            return NO_FAST_FORWARD
        ff = super().fast_forward(output)
        if ff.repeat and not self.waiting:
            if self.plain():
                return REPEAT_THROUGH
            if not any(map(self.pins_on_finish, self.running)):
                return self._through_expiries if self.pins else REPEAT_THROUGH
            if self._jobs_apart():
                return self._through_pins
        return ff

    def _jobs_apart(self) -> bool:
        """May the running requests' finishes pin inside a stretch, nothing waiting? Then
        stepping's steps after a pinning finish decode the others as before (`schedule`'s
        release loop reads only the scheduled calls' jobs, and the new pin's timer fires inside
        the stretch or bounds it: `FastForward.finish_timer_s`) if no running call's job holds
        a pin (its finish would free the old one: `_unpin`) and no two share a job (a finish's
        pin would be released by its sibling's next step)."""
        jobs = [j for j in map(job_of, self.running) if j is not None]
        return len(set(jobs)) == len(jobs) and self.pins.keys().isdisjoint(jobs)

    def _avoid_deadlock(self) -> None:
        kv = self.kv
        head = self.waiting.peek()
        hits = kv.get_computed_blocks(head)
        n = min(head.num_tokens - len(hits) * kv.block_size, self.config.max_num_batched_tokens)
        while self.pins and kv.blocks_needed(head, n, hits) > kv.num_free_blocks:
            self.reclaim(head)
            hits = kv.get_computed_blocks(head)

    def pick_victim(self) -> Request:
        if not self.first_entry_s:  # (standalone calls: the key is their arrival, read in C)
            return max(self.running, key=attrgetter("arrival_s"))
        return max(self.running, key=lambda r: (self.first_entry_s.get(job_of(r), r.arrival_s), r.arrival_s))
