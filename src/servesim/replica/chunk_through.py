"""A chunk stretch that runs on through its decodes' finishes (Sarathi's prompt chunks).

A `ChunkStretch` stopped at the first decode's last token: on Mooncake, 2,694 of sarathi's 6,156
chunk stretches at 1 replica ended there, each costing an apply, a `schedule` and a new plan for
the same prompt's next chunks. When a decode leaves, stepping's next `schedule` runs the decodes
still running and gives the prompt the budget they leave, one token more per decode gone; as
the prompt already spends the whole budget nobody is admitted (`repeats_chunk`'s contract). So
step j runs the decodes whose `remaining` exceeds j and a chunk of `chunk + d(j)` tokens, d(j) the
decodes gone by step j (their last token was an earlier step's), until the step before the one
that would finish the prompt. Finishes are processed at the stretch's end with their times, as a
decode stretch through finishes processes them (`Stretch.through`): only when the policy says a
late finish changes none of its decisions (`Scheduler.chunk_finishes_late`), the prompt's chunks
allocate nothing (not `chunks_allocate`), and with prefix keys only with vLLM's cache, which counts
what each late finish frees (`KVCacheManager.blocks_freed`) and whose key checks read each request's
last step (`keyed_last`). On a closed-loop workload each finish is told at its time, as in a decode
stretch (`replica/finish_notices.py`: a conversation's next turn is made then), unless the policy's
admission reads what finishes change (`arrival_reads_finishes`); a follow-up arriving at once ends
the stretch at that step. Without the notices, sessions' chunk stretches stopped at every decode's
last token (sarathi sessions, 4,000 requests: 2,620 of 7,338 schedules at 1 replica were the same
prompt's next chunk after a finish).
Each step is priced with the perf model's scalar chunk form for its own batch (`chunk_time_fn`, a
new one at each departure) or `step_time_s` with the contexts of the decodes still running.
Exact as stepping one by one: tests/replica/test_chunk_through.py.
"""

from __future__ import annotations

from bisect import bisect_right

from servesim.metrics.recorder import BlockGrowth
from servesim.replica.token_advance import advance_decodes
from servesim.workload.request import Request


def chunks_through(engine, decodes: list[Request]) -> bool:
    """May a chunk stretch of `decodes` run on through their finishes on this engine?"""
    sched = engine.scheduler
    return (sched.chunk_finishes_late and not sched.chunks_allocate and engine.defer_finishes
            and not (engine.notice is not None and sched.arrival_reads_finishes)
            and (engine.keyed_through or not any(r.kv_block_keys for r in decodes)))


def log_chunk_steps(rec, st, ends: list[float], tokens: list[int], growth: BlockGrowth) -> None:
    """Log a chunk stretch's steps as a stretch (`Recorder.log_chunk_steps`): its decodes emit a
    token each in every step they run (`batch_runs`), KV use as their growth; the prompt's
    chunks are each step's prompt tokens (`tokens`), and the requests running in a step beyond
    those that emit (the prompt: the scheduler's count at step 0 less the batch then) silent
    ones. A few values per step, where `log_steps` packs a row of seven."""
    k = len(ends)
    batch = st.batch_runs()
    rec.log_chunk_steps(st.start_s, ends, batch, st.num_waiting, growth, tokens,
                        [j for j in st.waiting_from if j < k], st.num_running - batch.sizes[0])


class ChunkThrough:
    """`ChunkStretch`'s pricing, views and apply with decodes leaving at their last tokens (a
    mixin: `chunk_stretch.ThroughChunkStretch`)."""

    __slots__ = ()

    def _go_through(self, engine, kmax: int) -> None:
        """Turn the stretch just made into one through finishes; `kmax`: the steps the prompt's
        chunks allow at the fixed chunk (the chunks only grow as decodes leave)."""
        rem = self.remaining
        self.through = True
        self._sorted_rem = srt = sorted(rem)
        self._order = None
        self._held_fn = None
        if self.keyed:  # (each registers up to its own last step; frees counted by reference)
            self.keyed_last = [r.output_len - r.num_output_tokens - 1 for r, _ in self.keyed]
            self._held_fn = self.freed_blocks(engine.kv)
        self._formf = getattr(engine.perf, "chunk_run_fn", None)
        # the steps that leave the prompt unfinished, step j's chunk `chunk + d(j)` (once every
        # decode left, the prompt's chunks alone take the whole budget)
        left = self.prompt.num_tokens - self.prompt.num_computed_tokens - self.extra0
        n, c = len(srt), self.chunk
        k = p = 0
        while k < kmax:
            while p < n and srt[p] <= k:
                p += 1
            left -= c + p
            if left <= 0:
                break
            k += 1
        self.kmax = k

    def gone_by(self, j: int) -> int:
        """Decodes gone before step j runs: d(j), those whose last token was an earlier step's."""
        return bisect_right(self._sorted_rem, j)

    def prompt_tokens_before(self, j: int) -> int:
        """`ChunkStretch`'s count plus the tokens the departures added to the chunks of steps
        0..j-1 (`_gone_before`)."""
        return super().prompt_tokens_before(j) + self._gone_before(j)

    def _gone_before(self, j: int) -> int:
        """sum over i < j of d(i) = sum over departures r <= j of (j - r)."""
        srt = self._sorted_rem
        p = bisect_right(srt, j)
        return p * j - sum(srt[:p])

    def blocks_added(self, j: int, block_size: int, blocks_held) -> int:
        """With prefix keys a finish frees what `blocks_freed` counts (`freed_blocks`)."""
        return super().blocks_added(j, block_size, self._held_fn or blocks_held)

    def price_through(self, k: int, t: float, ends: list[float], horizon: float) -> None:
        """`ChunkStretch.price` from step k (starting at `t`) through finishes: each step's
        batch the decodes still running, its chunk the budget they leave."""
        srt, ctxs, rem = self._sorted_rem, self._ctxs, self.remaining
        order = self.departure_order()
        p, total = bisect_right(srt, k), len(srt)
        n, c = total - p, self.chunk + p
        # the prompt's tokens in KV when step k starts, the running decodes' contexts at step 0
        cached = self.prompt.num_computed_tokens + self.extra0 + k * self.chunk + p * k - sum(srt[:p])
        base = self._ctx_sum0 - sum(ctxs[i] for i in order[:p])
        formf = self._formf
        f = self._form if not p else (formf(n, c) if formf else None)
        step_time_s = self._perf.step_time_s
        while k < self.kmax and t < horizon:
            if f is not None:  # (the steps up to the next departure, kmax or the horizon, in one call)
                stop = min(self.kmax, srt[p]) if p < total else self.kmax
                taken, t = f(t, cached, base + k * n, stop - k, horizon, ends)
                k += taken
                cached += taken * c
            else:
                t += step_time_s([(c, cached)], [x + k for x, r in zip(ctxs, rem) if r > k])
                ends.append(t)
                k += 1
                cached += c
            if p < total and srt[p] <= k:  # decodes whose last token was the step just priced
                while p < total and srt[p] <= k:
                    base -= ctxs[order[p]]
                    p += 1
                n, c = total - p, self.chunk + p
                f = formf(n, c) if formf else None
        self._priced = k
        self._take(k)

    def _chunks_to(self, k: int) -> list[int]:
        """The prompt tokens of steps 0..k-1, `chunk + d(j)`: made run by run between departures
        (a list repeated per run, not a search per step)."""
        chunk, tokens, j = self.chunk, [], 0
        for p, r in enumerate(self._sorted_rem):  # (d(j) is p from step r on, for the p-th departure r)
            if r >= k:
                break
            if r > j:
                tokens += [chunk + p] * (r - j)
                j = r
        else:
            p = len(self._sorted_rem)
        if j < k:
            tokens += [chunk + p] * (k - j)
        return tokens

    def apply_through(self, engine) -> list[Request]:
        """`ChunkStretch.apply` through finishes: advance the decodes (each up to its last token), the prompt, the KV blocks and the
        step log by the stretch's steps; returns the decodes that finished in it, in finish
        order (then batch order, as stepping), each with its finish time."""
        k, decodes, rem = self.k, self.decodes, self.remaining
        kv, rec = engine.kv, engine.recorder
        bs = kv.block_size
        first = rec.num_steps
        steps_of = [r if r < k else k for r in rem]
        done = [i for i in self.departure_order() if rem[i] <= k]
        # the step log's blocks in use: a decode takes a block at f, f + bs, ... below its last
        # step; one that finished before the last step frees all it held before the next step
        held = self.freed_blocks(kv)  # (read before this stretch's allocations, as their base)
        first_new = self.first_new
        frees = []
        for i in done:
            if (m := steps_of[i]) < k:
                f = first_new[i]
                frees.append((m, held(decodes[i]) + ((m - f - 1) // bs + 1 if f < m else 0)))
        tokens = self._chunks_to(k)
        if self.shared is not None:  # its last chunk and first token in step 0, then decodes
            req, r = self.shared
            tokens[0] += self.extra0 + r
            req.num_computed_tokens += r - 1  # (its tokens, as a decode's, end at prompt_len + m - 1)
            if req.first_token_s is None:  # (as `Engine.emit`; no deliver: `shared_fast_forward`)
                req.first_token_s = self._ends[0]
            if not req.token_steps:
                req.token_steps += (first, first - 1)  # (extended to its steps just below)
        advance_decodes(decodes, steps_of, first)
        kv.allocate_plain_many([(req, (m - f - 1) // bs + 1) for req, f, m in zip(decodes, first_new, steps_of)
                                if f < m], self.ahead)
        kv.cache_full_blocks_many(self.keyed, k - 1, self.keyed_last)
        ends = self._ends[:k]
        self.prompt.num_computed_tokens += k * self.chunk + self._gone_before(k) + self.extra0
        log_chunk_steps(rec, self, ends, tokens,
                        BlockGrowth(kv.num_gpu_blocks - self.free_blocks, first_new, steps_of, bs, frees))
        finished = [decodes[i] for i in done]
        for i, req in zip(done, finished):
            req.finish_s = ends[rem[i] - 1]
        engine.num_steps += k
        engine.num_fast_forwarded_steps += k
        return finished

