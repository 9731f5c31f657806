"""A fast-forwarded stretch of speculative decode steps (`num_speculative_tokens > 0`).

With speculative decoding each request emits 1 + accepted drafts a step, a random number, so
contexts, KV blocks and finishes differ per request and per step (a plain `Stretch` relies on
one token each). This stretch replays `speculate` step by step, per request in batch order,
without the engine or the scheduler: k = min(num_speculative_tokens, tokens left - 1)
lookahead slots (0 on the last token: a plain decode); blocks for ctx + 1 + k tokens; the next
row of `AcceptanceDraws`; min(accepted + 1, tokens left) tokens emitted; the step time of the
verify chunks and plain decodes plus the draft term. It stops before the first step whose
blocks would not fit in those free when it started (stepping would decode plainly or preempt
there), at the first finish or, when finishes may be processed late, once all have finished.
Acceptance rows are read with `peek` and taken only for the steps applied, so a cut leaves
them to stepping. Step 0 is the step the engine planned (it may finish prompts); acceptances
go by batch order, so only schedulers that know the order of the repeated steps
(`Scheduler.repeat_order`: step 0's, or a re-sort by a key decodes do not change, for as long
as `Scheduler.repeat_order_limit` says it holds) fast-forward. Exact as
stepping one by one: tests/replica/test_spec_fast_forward.py, tests/cluster/test_spec_exactness.py.
The steps are priced by `SpecStretchPricing` (`replica/spec_stretch_pricing.py`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Callable

from servesim.replica.spec_stretch_joins import SpecStretchJoins
from servesim.replica.spec_stretch_pricing import SpecStretchPricing
from servesim.workload.request import Request

if TYPE_CHECKING:
    from servesim.replica.spec_decode import AcceptanceDraws


# With several replicas a speculative stretch is priced this many arrival gaps ahead (one
# replica: up to its next arrival, which is its own). An arrival elsewhere does not touch it,
# and each time it reaches its priced end uncut an event extends it; an arrival here cuts it
# and drops the steps priced past it. Measured on the spec-decode cells at 8 replicas (orca,
# 4,000 requests): 1 gap 9,775 pricing calls, 663 steps dropped; 4 gaps 6,028 and 3,589.
SPEC_LOOKAHEAD = 4


def spec_env(engine) -> tuple:
    """What every speculative stretch of `engine` reads of the engine, its perf model and its
    speculation settings, in `SpecStretch.__init__`'s order: built once per perf model and
    kept in `Engine._spec_env` (a stretch is planned every few steps; these getattr calls and
    memo look-ups were a tenth of its set-up)."""
    cfg, perf = engine.config, engine.perf
    decode_fn = engine._decode_fn  # the scalar decode step time by batch size (False: none)
    # the block path's forms (None: the perf model has none, or sliding windows: step by step)
    affine = getattr(perf, "decode_affine", None)
    verify_fn = getattr(perf, "verify_step_times_s", None) if affine is not None and decode_fn(1) is not False else None
    verify_time_fn = getattr(perf, "verify_time_fn", None)  # (scalar, for `_step_time_s`)
    sums = getattr(perf, "verify_sums_time_fn", None)  # (any other verify step, `_verify_s`)
    return (perf, SPEC_LOOKAHEAD if engine.lookahead > 1 else 1, decode_fn, affine, verify_fn, verify_time_fn,
            sums() if sums is not None else None, cfg.spec_acceptance_rate, engine.spec_draws,
            cfg.num_speculative_tokens, cfg.spec_draft_cost_ratio, engine.kv.block_size,
            {})  # (batch size -> the draft term's and a regular verify pass's forms: `_forms`)


class SpecStretch(SpecStretchPricing, SpecStretchJoins):
    """Speculative decode steps of a fixed batch, priced lazily; applied at `end_s`."""

    # what the engine's generic stretch code reads (`FastForwarding._limit`): nothing to limit here
    first_new: list = []
    remaining: list = []
    keyed: list = []
    grows = False
    kept = None  # (its finishes free their blocks: `spec_decode.py` plans none through a finish that pins)

    # (slots: with its 50-odd attributes in a dict, past CPython 3.11's 30 inline values, every
    # attribute its pricing loops and apply read took the dict's slower look-up; `spends_budget`
    # is read by `Engine.arrival_keeps`)
    __slots__ = ("start_s", "out", "reqs", "prefills", "through", "num_running", "num_waiting", "waiting_from",
                 "final", "gen", "_next_event_s", "_loop", "_perf", "_ahead", "_decode_fn", "_affine", "_verify_fn",
                 "_verify_time_fn", "_sums_form", "_acceptance_rate", "_draws", "_k_max", "_draft_ratio", "_bs",
                 "_fns", "prompt", "chunk", "_extra0", "spends_budget", "_cached0", "_chunk_form", "free_blocks",
                 "_used0", "_adv0", "_ctx", "_rem", "_held", "_active", "ends", "sizes", "_runs", "_emits", "_grants",
                 "_alloc", "_rows", "_finishes", "_free_at", "_extra_step", "kmax", "_until_s", "_num0", "_joined",
                 "_join_blocks", "_stalled", "held_arrivals", "_waiting_to", "_dropped")

    def __init__(self, engine, start_s: float, out: Any, step0: list[tuple[Request, int, int, int]], order: list[int],
                 dt0_s: float, through: bool, until_s: float = math.inf, max_steps: int = 1 << 62,
                 prompt: tuple[Request, int, int] | None = None) -> None:
        """`step0`: per request in step 0's batch order, (request, tokens it computes in step 0,
        tokens it emits then, 0 plain decode / 1 prompt chunk / 2 speculative decode); `order`:
        the indices of those requests in the order of the later steps' batches; `until_s`,
        `max_steps`: how long that order holds (`Scheduler.repeat_order_limit`: the steps
        that start before `until_s`, at most `max_steps` of them); `prompt`: (a prompt in
        progress, its chunk, how many more tokens its chunk in step 0 has) run in every step
        beside the decodes, first in the verify pass as `speculate` lists it
        (`Scheduler.repeats_chunk`, or `shares_chunk`: more in step 0, beside a prompt's last
        chunk; `max_steps` stops before its last chunk, `through` is False), or None."""
        sched = engine.scheduler
        # (no decodes: a prompt's chunks alone)
        batch, adv0, emits0, kinds = map(list, zip(*step0)) if step0 else ([], [], [], [])
        self.start_s = start_s
        self.out = out
        self.reqs = batch  # in step 0's batch order (`_active` holds the later steps' order)
        # prompt chunks finished in step 0
        self.prefills = [(r, c) for r, c, kind in zip(batch, adv0, kinds) if kind == 1] if 1 in kinds else []
        self.through = through
        self.num_running = sched.num_running  # the scheduler's counts when step 0 was scheduled
        self.num_waiting = sched.num_waiting
        self.waiting_from: list[int] = []  # steps from which one more request waits (arrivals kept or held)
        self.final = False  # cut, or nothing more to price: never extended again
        self.gen = 0  # bumped whenever the pending end event is replaced
        self._next_event_s = engine.next_event_s
        self._loop = engine.loop  # (its `now_s`: the next arrival's gap from now, `price`)
        env = engine._spec_env
        if env is None or env[0] is not engine.perf:
            env = engine._spec_env = spec_env(engine)
        (self._perf, self._ahead, self._decode_fn, self._affine, self._verify_fn, self._verify_time_fn,
         self._sums_form, self._acceptance_rate, self._draws, self._k_max, self._draft_ratio, self._bs, self._fns) = env
        self.prompt, self.chunk, self._extra0 = prompt if prompt is not None else (None, 0, 0)
        self.spends_budget = prompt is not None  # (its steps give the prompt the budget the decodes leave)
        if prompt is not None:  # (steps with a chunk: priced one by one, `_chunk_step_time_s`)
            self._verify_fn = None
            # the prompt's tokens in KV when step 0 starts, as if its chunk there were `chunk`
            # (step j >= 1 runs over `_cached0 + j * chunk`)
            self._cached0 = prompt[0].num_computed_tokens + self._extra0
            self._chunk_form: Any = False  # `PerfModel.chunk_verify_time_fn` of the batch (None: none; False: not yet)
        kv = engine.kv
        self.free_blocks = kv.num_free_blocks  # after step 0's allocations
        self._used0 = kv.num_gpu_blocks - kv.num_free_blocks
        # the running state after the last priced step, per request (index into `reqs`)
        self._adv0 = adv0
        self._ctx = [r.num_computed_tokens + c for r, c in zip(batch, adv0)]
        rem = self._rem = [r.output_len - r.num_output_tokens - e for r, e in zip(batch, emits0)]
        self._held = kv.num_blocks_list(batch)
        n = len(batch)
        # step 0's finishes as stepping lists them: plain decodes, prompts, speculative decodes
        gone = sorted((i for i in range(n) if not rem[i]), key=kinds.__getitem__) if 0 in rem else []
        self._active = [i for i in order if rem[i]] if through and gone else list(order)  # (in batch order)
        # per step: end time, tokens emitted, requests run, their emitted tokens, blocks granted
        self.ends = [start_s + dt0_s]
        self.sizes = [sum(emits0)]  # tokens emitted in each step
        self._runs: list[list[int]] = [list(range(n))]
        self._emits: list[list[int]] = [emits0]
        self._grants: list[list[tuple[int, int]]] = [[]]  # (step 0's blocks are allocated already)
        self._alloc = [0]  # blocks granted in steps 1..j
        self._rows = [0]  # acceptance rows read by steps 1..j
        self._finishes: list[tuple[int, int]] = [(0, i) for i in gone]  # (step, request) in finish order
        self._free_at: list[tuple[int, int]] = []  # (first step after a finish, blocks it frees)
        self._extra_step = False  # `truncate` by a crash: the step in flight had taken its rows
        self.kmax = max_steps  # (else unknown: `final` says when the stretch is done)
        self._until_s = until_s
        self._num0 = n  # requests of step 0 (those that joined come after them in `reqs`)
        self._joined: list[tuple[int, int, int]] = []  # (step, index, prompt tokens) of requests that joined
        self._join_blocks: list[tuple[int, int]] = []  # (step, blocks the joining prompts took then)
        self._stalled: list[tuple[int, int]] = []  # (step, decodes stalled) of prompt-only join steps
        self.held_arrivals = 0  # waiting requests held to step `kmax`, where they may join (`hold`)
        self._waiting_to: list[int] = []  # steps from which one fewer waits (a held request joined)
        self._dropped: tuple[list, list, list] = ([], [], [])  # (runs, emits, grants) of the steps cut off
        if gone:
            self._done_with(0, gone)

    @property
    def k(self) -> int:
        """Steps in the stretch."""
        return len(self.ends)

    @property
    def end_s(self) -> float:
        return self.ends[-1]

    # ---------------------------------------------------------------- cutting and reading
    def steps_before(self, t: float) -> int:
        """Steps that ended before `t` (events at `t` come before a step ending at `t`)."""
        return bisect_left(self.ends, t)

    def step_in_flight(self, t: float) -> int:
        """The step running at `t` (the last one if `t` is at or after the end)."""
        j, last = bisect_left(self.ends, t), len(self.ends) - 1
        return last if last < j else j

    def add_waiting(self, t: float) -> None:
        """A request joined the waiting queue at `t` without cutting the stretch (as `Stretch`)."""
        self.waiting_from.append(bisect_left(self.ends, t) + 1)

    def cut(self, t: float) -> bool:
        """Keep the steps that started before `t`; True if steps were dropped (their
        acceptance rows stay untaken)."""
        self.final = True
        k = bisect_left(self.ends, t) + 1
        if k < len(self.ends):
            self._keep(k)
            return True
        return False

    def truncate(self, k: int) -> None:
        """Keep the first k steps, step k having started (a crash during it): its acceptance
        rows were drawn when it started, so they stay taken."""
        self._extra_step = k < len(self.ends)
        self._keep(k)

    def _keep(self, k: int) -> None:
        self.final = True
        if k < len(self.ends):  # (the running state stays the last priced step's: a join rewinds it)
            runs, emits, grants = self._dropped
            self._dropped = (self._runs[k:] + runs, self._emits[k:] + emits, self._grants[k:] + grants)
        for lst in (self.ends, self.sizes, self._runs, self._emits, self._grants):
            del lst[k:]
        del self._alloc[k:], self._rows[k + 1:]  # (a crash's step in flight took its rows)
        # (each list is in step order: filtered only when its last entry is past the cut)
        if self._finishes and self._finishes[-1][0] >= k:
            self._finishes = [(j, i) for j, i in self._finishes if j < k]
        if self._free_at and self._free_at[-1][0] > k:
            self._free_at = [(j, b) for j, b in self._free_at if j <= k]
        if self._joined and self._joined[-1][0] >= k:
            self._joined = [x for x in self._joined if x[0] < k]  # (a crash during a join step: admitted, not run)
        if self._join_blocks and self._join_blocks[-1][0] > k:
            self._join_blocks = [x for x in self._join_blocks if x[0] <= k]
        if self._stalled and self._stalled[-1][0] >= k:
            self._stalled = [x for x in self._stalled if x[0] < k]

    def finished_before(self, j: int) -> int:
        """How many requests emitted their last token in steps 0..j-1."""
        return bisect_left(self._finishes, (j, -1))

    def departed(self, n: int) -> list:
        """The first `n` requests to leave (`finished_by`'s count), in finish order."""
        return [self.reqs[i] for _, i in self._finishes[:n]]

    def finished_by(self, t: float) -> int:
        """How many requests emitted their last token in steps that ended before `t`."""
        return self.finished_before(self.step_in_flight(t)) if self._finishes else 0

    def finished_until(self, t: float) -> tuple[int, float]:
        """`finished_by(t)`, and up to when it stays that without an event here, as
        `Stretch.finished_until`: the end of the next finish's step, which counts once a later
        step is in flight; never (inf) when that step is the last priced one or no finish is
        priced yet (an extension, a cut and the end are events here). A router keeps this
        replica's count between arrivals by it (`cluster/counts.py`) instead of reading it at each."""
        fin = self._finishes
        n = self.finished_by(t)
        if n >= len(fin):
            return n, math.inf
        j = fin[n][0]
        ends = self.ends
        return n, (ends[j] if j < len(ends) - 1 else math.inf)

    def prompt_tokens_before(self, j: int) -> int:
        """As `Stretch.prompt_tokens_before`: prompts finished in step 0 (or when joining)
        leave one token each; a prompt in progress has computed a chunk in each of steps 0..j-1
        (`_extra0` more in step 0)."""
        joined = sum(n - 1 for s, _, n in self._joined if s < j) if self._joined else 0
        return sum(n - 1 for _, n in self.prefills) + (j * self.chunk + self._extra0 if j else 0) + joined

    def tokens_before(self, j: int) -> int:
        """Tokens emitted by steps 0..j-1."""
        return sum(self.sizes[:j])

    def blocks_added(self, j: int, block_size: int, blocks_held: Callable[[Any], int]) -> int:
        """KV blocks the stretch has added by step j (granted at steps 1..j), less those of
        requests that finished before step j."""
        return self._alloc[min(j, len(self._alloc) - 1)] - sum(b for s, b in self._free_at if s <= j)

    # ---------------------------------------------------------------- applying
    def apply(self, engine) -> list[Request]:
        """Advance the requests, KV blocks, acceptance draws and step log by the stretch's
        steps; returns the requests that finished in it, in finish order."""
        k, reqs = len(self.ends), self.reqs
        s = engine.recorder.num_steps  # (the first step's number)
        total = [0] * len(reqs)
        token_steps = [r.token_steps for r in reqs]
        for act, emits in zip(self._runs[:k], self._emits):
            before = s - 1
            for i, n in zip(act, emits):
                total[i] += n
                runs = token_steps[i]  # as `Engine.emit`, then one single-step run per extra token
                if runs and runs[-1] == before:
                    runs[-1] = s
                else:
                    runs += (s, s)
                if n > 1:
                    runs += (s, s) * (n - 1)
            s += 1
        for req, adv0, e0, n in zip(reqs, self._adv0, self._emits[0], total):
            req.num_computed_tokens += adv0 + n - e0  # (a prompt chunk computes its tokens, emits one)
            req.num_output_tokens += n
        for req, _ in self.prefills:
            if req.first_token_s is None:
                req.first_token_s = self.ends[0]
        for j, i, n in self._joined:  # (their prompts computed in step j, each emitting one token)
            req = reqs[i]
            req.num_computed_tokens += n + total[i] - 1
            req.num_output_tokens += total[i]
            if req.first_token_s is None:
                req.first_token_s = self.ends[j]
        if self.prompt is not None:
            self.prompt.num_computed_tokens += k * self.chunk + self._extra0
        grants = [0] * len(reqs)
        for step in self._grants[1:k]:
            for i, nb in step:
                grants[i] += nb
        engine.kv.allocate_plain_many([(reqs[i], nb) for i, nb in enumerate(grants) if nb])
        self._draws.skip(self._rows[min(k, len(self._rows) - 1)] if self._extra_step else self._rows[k - 1])
        done = [reqs[i] for _, i in self._finishes]
        for j, i in self._finishes:
            reqs[i].finish_s = self.ends[j]
        self._log(engine, k)
        engine.num_steps += k
        engine.num_fast_forwarded_steps += k
        return done

    def _log(self, engine, k: int) -> None:
        """One step-log entry per step (tokens emitted differ from the batch size), logged at
        once (`Recorder.log_steps`)."""
        n0, run0 = self._num0, self.num_running
        running = [run0] + [run0 - n0 + len(act) for act in self._runs[1:k]]
        for j, n in self._stalled:  # (a prompt-only step runs the joiners alone: the decodes it stalled run too)
            running[j] += n
        waiting = [self.num_waiting] * k
        if self.waiting_from:  # one more waits from each step listed on (one fewer from each `_waiting_to`)
            more = [0] * (k + 1)
            for j in self.waiting_from:
                more[min(j, k)] += 1
            for j in self._waiting_to:
                more[min(j, k)] -= 1
            waiting = [w + m for w, m in zip(waiting, accumulate(more))]
        kv = [self._used0 + a for a in self._alloc[:k]]
        if self._free_at:  # (blocks of requests that finished before step j)
            freed = [0] * (k + 1)
            for j, blocks in self._free_at:
                freed[j] += blocks  # (j <= k: `_keep` drops the later ones)
            kv = [u - f for u, f in zip(kv, accumulate(freed))]
        prefill = sum(n for _, n in self.prefills)
        if self.prompt is not None:  # (its chunks, step 0's beside the prompts finished there)
            prefill = [prefill + self.chunk + self._extra0] + [self.chunk] * (k - 1)
        if self._joined:  # the joining prompts' tokens at their steps, their blocks in use from then on
            prefill = [prefill] + [0] * (k - 1)
            for j, _, n in self._joined:
                prefill[j] += n
            taken = [0] * (k + 1)
            for j, blocks in self._join_blocks:
                taken[min(j, k)] += blocks
            kv = [u + t for u, t in zip(kv, accumulate(taken))]
        engine.recorder.log_steps(self.start_s, self.ends[:k], prefill, self.sizes[:k], running, waiting, kv)
