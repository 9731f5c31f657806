"""A fast-forwarded chunk stretch: steps that run the same decodes beside the successive
chunks of one prompt, as one event.

Sarathi-Serve splits a long prompt over many steps under its token budget: while the prompt is
in progress every step runs all decoding requests (one token each) and the prompt's next
chunk, which takes the whole budget they leave, so nothing is admitted whatever arrives. Such
runs are most of its steps on long-prompt workloads (Mooncake: 89 % of the steps, in runs of
16). When the scheduler says a step repeats like that (`Scheduler.repeats_chunk`), the engine
plans a `ChunkStretch`: step j (step 0 is the scheduled step) runs the same decodes with
contexts ctx + j and the chunk `c` over the prompt's first `computed + j * c` tokens, so its
time is a known function of j, priced a run of steps at a time with the perf model's scalar form of such
steps (`PerfModel.chunk_run_fn`: the same floats in the same order as `step_time_s`, so as
stepping), or `step_time_s` itself for a model without it. The stretch stops before the prompt's last
chunk (its end step admits or finishes the prompt; with nothing waiting, sarathi's prompt is
planned with its rest and the decode steps after it as one plain stretch instead:
`replica/chunk_rest.py`), at the first decode's finish (sarathi's run
on through it, told at its time on a closed-loop workload: `replica/chunk_through.py`), at the step
whose decode blocks would not fit in the free ones, at a policy timer or the end of the run,
and at any cut (a clock change, a crash); its step 0 may also finish the prompt before
(`replica/shared_chunk.py`); an arrival does not cut it (the budget is spent), it
joins the waiting count from the step after the one in flight. Sarathi's chunks allocate and
register no KV block (the policy took the prompt's blocks and prefix keys at admission), so the
blocks, cuts and views of the stretch are those of a decode stretch over the decodes
(`Stretch`), plus the prompt's progress (`prompt_tokens_before`).

vLLM's running pass allocates each chunk's blocks and registers the prompt's keyed blocks it
completes (`Scheduler.chunks_allocate`): the stretch counts the prompt's blocks at each step
(`prompt_blocks`) in its KV limit, its views and its step log, allocates and registers them
when it ends (one `allocate_slots`: the pops come from the blocks free when it was planned, so
their order among the decodes' does not matter), and is planned only if none of the prompt's
keys up to its longest run is cached or registered by a decode too (`chunk_keys_conflict`).
A router reading the prefix index inside it (`Replica.cached_blocks`) first has the prompt's
blocks of the steps so far allocated and registered (`settle`), as stepping has them then.
Exact as stepping one by one: tests/replica/test_chunk_stretch.py, test_vllm_chunk_stretch.py,
tests/cluster/test_exactness.py.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

from servesim.metrics.recorder import BlockGrowth
from servesim.replica.block_keys import keyed_pairs
from servesim.replica.chunk_rest import chunks_then_decodes
from servesim.replica.chunk_through import ChunkThrough, chunks_through, log_chunk_steps
from servesim.replica.token_advance import advance_decodes_by
from servesim.replica.stretch import Stretch
from servesim.workload.request import Request


class ChunkStretch(Stretch):
    """Steps of fixed decodes plus one prompt's next full chunks, priced lazily; applied at `end_s`."""

    spends_budget = True  # (arrivals wait: `Engine.arrival_keeps`)
    __slots__ = ("prompt", "chunk", "num_running", "_ctxs", "_ctx_sum0", "_form", "grows", "_c0", "_held0", "_bs",
                 "_settled", "extra0", "shared")

    def __init__(self, engine, start_s: float, end0_s: float, out: Any, decodes: list[Request],
                 decode_ctxs: list[int], prompt: Request, chunk: int, kmax: int, extra0: int = 0,
                 shared: tuple[Request, int] | None = None, remaining: list[int] | None = None) -> None:
        sched = engine.scheduler
        self.start_s = start_s
        self.out = out
        self.decodes = self.reqs = decodes
        self.prefills = []  # (`Stretch.prefills` finish in step 0: here only `shared`'s, one of `decodes`)
        self.prompt = prompt  # the prompt in progress, its chunk each step (tokens)
        self.chunk = chunk
        # a shared step 0 (`shared_chunk.py`): the prompt's chunk there less `chunk`, and the
        # prompt whose last chunk (tokens) ran there, among `decodes` from step 1 on
        self.extra0 = extra0
        self.shared = shared
        self.ctx1 = [c + 1 for c in decode_ctxs]
        # (each decode's tokens left: the caller's list, which found the first finish in it, or made here)
        self.remaining = [r.output_len - r.num_output_tokens for r in decodes] if remaining is None else remaining
        self.through = False
        self.keyed = keyed_pairs(decodes, self.ctx1)
        self._nothing_late()  # (not through finishes)
        # vLLM's steps allocate the prompt's blocks for each chunk and register its keyed ones
        # (`Scheduler.chunks_allocate`); sarathi's took them all at admission
        self.grows = sched.chunks_allocate
        self._c0 = prompt.num_computed_tokens  # (before step 0's chunk)
        self._held0 = engine.kv.num_blocks_of(prompt.id)  # (step 0's allocation included)
        self._bs = engine.kv.block_size
        self._settled = 0  # steps whose prompt allocation `settle` took before the stretch ends
        self.num_running = sched.num_running  # the scheduler's counts when step 0 was scheduled
        self.num_waiting = sched.num_waiting
        self.waiting_from = []
        self.first_new = []
        self.free_blocks = 0
        self._no_joins(len(decodes))
        self.kmax = kmax
        self._step_zero(end0_s)  # (its ends a list throughout: its scalar loop prices every step)
        self._perf = engine.perf
        self._order = self._sorted_rem = self.rank = None  # (nobody leaves before the last step)
        self.ahead = 0
        self._fin = 0  # (`finished_by`'s last count: `ThroughChunkStretch` sets `_sorted_rem`)
        self._ctxs = decode_ctxs
        self._ctx_sum0 = sum(decode_ctxs)
        # the perf model's scalar form of these steps, a run at a time (`PerfModel.chunk_run_fn`;
        # None: none, e.g. sliding windows; then `step_time_s` with every context)
        form = getattr(engine.perf, "chunk_run_fn", None)
        self._form = form(len(decodes), chunk) if form else None

    def prompt_blocks(self, j: int) -> int:
        """The blocks the prompt holds once step j is scheduled (`grows`: as many as its
        tokens after step j's chunk need)."""
        if not self.grows:
            return self._held0
        return max(self._held0, -(-(self._c0 + (j + 1) * self.chunk) // self._bs))

    def blocks_needed(self, steps: int, block_size: int) -> int:
        """The decodes' growth over the first `steps` steps (`Stretch`'s) and the prompt's."""
        return Stretch.blocks_needed(self, steps, block_size) + self.prompt_blocks(steps - 1) - self._held0

    def blocks_bound(self, steps: int, block_size: int) -> int:
        return Stretch.blocks_bound(self, steps, block_size) + self.prompt_blocks(steps - 1) - self._held0

    def blocks_added(self, j: int, block_size: int, blocks_held) -> int:
        """`Stretch.blocks_added` and the prompt's blocks from the steps after those `settle` took."""
        settled = self.prompt_blocks(self._settled)
        return Stretch.blocks_added(self, j, block_size, blocks_held) + self.prompt_blocks(j) - settled

    def settle(self, kv, t: float) -> None:
        """Allocate and register the prompt's blocks as the steps up to the one in flight at
        `t` have (`grows`), before the stretch ends: for a router reading the prefix index
        (`Replica.cached_blocks`) as stepping would leave it. Its pops come from the blocks free
        when the stretch was planned, as the rest of its allocations at the end."""
        j = self.step_in_flight(t)
        if self.grows and j > self._settled:
            if not kv.allocate_slots(self.prompt, (j + 1) * self.chunk):
                raise AssertionError("a chunk stretch's prompt blocks do not fit")
            self._settled = j

    def prompt_tokens_before(self, j: int) -> int:
        """Prompt tokens computed by steps 0..j-1 beyond what the requests show (the views)."""
        if self.shared is None or not j:
            return j * self.chunk
        # (a shared step 0 also finished the other prompt, left with its first token to compute)
        return j * self.chunk + self.extra0 + self.shared[1] - 1

    def price(self, horizon: float) -> None:
        """Take steps until one would start at or after `horizon`, or `kmax` steps."""
        k, t = self.k, self.end_s
        if k >= self.kmax or t >= horizon:
            return
        ends = self._ends
        del ends[self._priced:]  # (what a truncation dropped)
        if self.through:  # (decodes leave at their last tokens: `ThroughChunkStretch`)
            return self.price_through(k, t, ends, horizon)
        c, n, f = self.chunk, len(self.decodes), self._form
        cached = self.prompt.num_computed_tokens + self.extra0 + k * c  # the prompt's tokens in KV when step k starts
        if f is not None:  # (the steps up to kmax or the horizon in one call)
            taken, t = f(t, cached, self._ctx_sum0 + k * n, self.kmax - k, horizon, ends)
            k += taken
        else:
            step_time_s, ctxs0 = self._perf.step_time_s, self._ctxs
            while k < self.kmax and t < horizon:
                t += step_time_s([(c, cached)], [x + k for x in ctxs0])
                ends.append(t)
                k += 1
                cached += c
        self._priced = k
        self._take(k)

    def apply(self, engine) -> list[Request]:
        """Advance the decodes, the prompt, the KV blocks and the step log by the stretch's
        steps; returns the decodes that finished in its last step (in batch order, as stepping)."""
        if self.through:  # (its decodes finished at their own steps: `ThroughChunkStretch`)
            return self.apply_through(engine)
        k, decodes = self.k, self.decodes
        kv, rec = engine.kv, engine.recorder
        bs = kv.block_size
        first = rec.num_steps
        tokens = [self.chunk] * k
        if self.shared is not None:  # its last chunk and first token in step 0, then decodes
            req, r = self.shared
            tokens[0] += self.extra0 + r
            req.num_computed_tokens += r - 1  # (its k tokens, as a decode's, end at prompt_len + k - 1)
            if req.first_token_s is None:  # (as `Engine.emit`; no deliver: `shared_fast_forward`)
                req.first_token_s = self._ends[0]
            if not req.token_steps:
                req.token_steps += (first, first - 1)  # (extended to its k steps just below)
        advance_decodes_by(decodes, k, first)
        grants = [(req, (k - f - 1) // bs + 1) for req, f in zip(decodes, self.first_new) if f < k]
        kv.allocate_plain_many(grants, self.ahead)
        kv.cache_full_blocks_many(self.keyed, k - 1)
        ends = self._ends[:k]
        used0 = kv.num_gpu_blocks - self.free_blocks  # (in use before the stretch: step 0 adds none)
        if self.grows:  # the prompt's chunks: allocated and registered as the running pass does
            if not kv.allocate_slots(self.prompt, k * self.chunk):
                raise AssertionError("a chunk stretch's prompt blocks do not fit")
            self._log_growing(rec, ends, tokens, used0, bs)
        else:
            log_chunk_steps(rec, self, ends, tokens,
                            BlockGrowth(used0, self.first_new, [k] * len(decodes), bs, []))
        self.prompt.num_computed_tokens += k * self.chunk + self.extra0
        done = [req for req, r in zip(decodes, self.remaining) if r <= k]
        for req in done:
            req.finish_s = ends[k - 1]
        engine.num_steps += k
        engine.num_fast_forwarded_steps += k
        return done

    def _log_growing(self, rec, ends: list[float], tokens: list[int], used0: int, bs: int) -> None:
        """The step log of a stretch whose chunks allocate the prompt's blocks, each step as
        `_end_step` logs it: blocks in use after each step's allocations (a decode takes a
        block at f, f + bs, ..., the prompt those its next chunk needs), waiting counts growing
        from the steps listed in `waiting_from`."""
        k = len(ends)
        added = [0] * k
        for f in self.first_new:
            for j in range(f, k, bs):
                added[j] += 1
        held = list(map(self.prompt_blocks, range(k)))
        for j in range(1, k):
            added[j] += held[j] - held[j - 1]
        waits = [0] * k
        for j in self.waiting_from:
            if j < k:
                waits[j] += 1
        used = list(accumulate(added, initial=used0))[1:]
        waiting = list(accumulate(waits, initial=self.num_waiting))[1:]
        rec.log_steps(self.start_s, ends, tokens, [len(self.decodes)] * k, [self.num_running] * k, waiting, used)


class ThroughChunkStretch(ChunkThrough, ChunkStretch):
    """A `ChunkStretch` through its decodes' finishes (`replica/chunk_through.py`)."""

    __slots__ = ("_held_fn", "_formf")


def chunk_fast_forward(engine, now_s: float, out: Any, decodes: list[Request], decode_ctxs: list[int],
                       prefills: list[tuple[Request, int]], ff: Any = None) -> bool:
    """Run the step just scheduled (`decodes` and one prompt chunk) and the steps that repeat
    it as a `ChunkStretch`, if the scheduler says they repeat and enough steps are safe
    (or with the prompt's rest and the decode steps after it as one stretch, where the policy's
    answer `ff` allows: `replica/chunk_rest.py`); False, changing nothing, otherwise."""
    if len(prefills) != 1 or not engine.scheduler.repeats_chunk(out):
        return False
    (prompt, chunk), = prefills
    if ff is not None and chunks_then_decodes(engine, now_s, out, decodes, decode_ctxs, prompt, chunk, ff):
        return True
    # steps 0, 1, ... give the prompt a full chunk and leave it unfinished; the decodes run
    # until the first of them emits its last token (or on through it: `chunk_through.py`)
    kmax = -(-(prompt.num_tokens - prompt.num_computed_tokens) // chunk) - 1
    least = min_chunk_steps(engine.scheduler)
    if kmax < least:
        return False  # (the decodes' departures only lower it: no pass over them)
    rem = [r.output_len - r.num_output_tokens for r in decodes]
    kd = min(rem, default=kmax)
    through = kd < kmax and chunks_through(engine, decodes)
    if not through:
        kmax = min(kmax, kd)
    if kmax < least:
        return False
    end0 = now_s + engine.perf.step_time_s([(chunk, prompt.num_computed_tokens)], decode_ctxs)
    return plan_chunk_stretch(engine, chunk_stretch(engine, now_s, end0, out, decodes, decode_ctxs, prompt, chunk,
                                                    kmax, through, remaining=rem))


def chunk_stretch(engine, start_s: float, end0_s: float, out: Any, decodes: list[Request], decode_ctxs: list[int],
                  prompt: Request, chunk: int, kmax: int, through: bool, extra0: int = 0,
                  shared: tuple[Request, int] | None = None, remaining: list[int] | None = None) -> ChunkStretch:
    """A `ChunkStretch` of these steps, or (`through`) a `ThroughChunkStretch` whose `kmax`
    (here the prompt's bound at the fixed chunk) counts the chunks its departures grow."""
    cls = ThroughChunkStretch if through else ChunkStretch
    st = cls(engine, start_s, end0_s, out, decodes, decode_ctxs, prompt, chunk, kmax, extra0, shared, remaining)
    if not through:
        return st
    st._go_through(engine, kmax)
    return st


def min_chunk_steps(sched) -> int:
    """The fewest steps a chunk stretch is planned for: three where its chunks allocate and
    register the prompt's blocks (`chunks_allocate`, vLLM's running pass), two otherwise
    (Sarathi's). Planning and applying a vLLM chunk stretch beside a hundred decodes with prefix
    keys (Mooncake at 1 replica) costs more than stepping two of its steps: with three, vllm
    runs 1.6 % fewer instructions there, start-up aside, with the same results. Sarathi's,
    which allocate nothing, cost less than two stepped steps."""
    return 3 if sched.chunks_allocate else 2


def plan_chunk_stretch(engine, st: ChunkStretch) -> bool:
    """Price the chunk stretch `st` and make it the engine's, if at least `min_chunk_steps` of
    its steps fit before the horizon and two are safe (time, KV blocks, prefix keys); False,
    changing nothing, otherwise."""
    least = min_chunk_steps(engine.scheduler)
    if st.kmax < least:
        return False  # (through finishes: the grown chunks reach the prompt's last within that many steps)
    st.price(engine._own_horizon_s())
    if st.k < least:
        return False
    kv, decodes, prompt = engine.kv, st.decodes, st.prompt
    st.first_new = kv.first_new_block_steps(decodes, st.ctx1)
    st.free_blocks = kv.num_free_blocks
    if not engine._limit(st, 1):
        return False
    if st.grows and kv.chunk_keys_conflict(prompt, prompt.num_computed_tokens + st.kmax * st.chunk, st.keyed,
                                           st.kmax - 1):
        return False  # (the prompt's keys, registered chunk by chunk, could meet a cached or another's)
    engine.stretch = st
    engine._schedule_stretch_end(st)
    return True
