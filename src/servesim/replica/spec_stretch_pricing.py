"""Pricing a `SpecStretch`: its speculative decode steps, priced lazily up to a horizon.

`SpecStretch` owns the stretch's state and what the engine reads and applies of it (cutting,
counting, applying the steps); this mixin owns how its steps are priced: blocks of regular
steps with numpy (`spec_blocks`), the rest one by one by `speculate`'s rules, and the step time
of each. Separate because pricing is the one part that follows the perf model's forms and the
acceptance draws, and it is the longest; both halves share the stretch's running state
(`_ctx`, `_rem`, `_held`, the per-step lists), hence a mixin rather than functions.
"""

from __future__ import annotations

import math

import numpy as np

from servesim.replica.spec_blocks import block_step_times, block_steps, least_block_steps, regular_block


class SpecStretchPricing:
    """`SpecStretch`'s pricing methods (state set by `SpecStretch.__init__`)."""

    __slots__ = ()

    # ---------------------------------------------------------------- pricing
    def price(self, horizon: float) -> None:
        """Take steps until one would start at or after `horizon` or the next event anywhere
        (at least one step), or the stretch is done. Pricing a step costs about what applying
        it does, so steps are not priced far ahead of an event that may cut them: an uncut
        stretch is extended from its end instead (an event, cheaper than the steps wasted)."""
        ends = self.ends
        if self.prompt is None:  # (a chunk stretch is not cut by arrivals: priced to the end at once)
            next_s = self._next_event_s()
            if self._ahead > 1:  # (several replicas: the next arrival is more likely another's)
                now_s = self._loop.now_s
                next_s = now_s + (next_s - now_s) * self._ahead
            b = math.nextafter(ends[-1], math.inf)
            if b > next_s:
                next_s = b
            if next_s < horizon:
                horizon = next_s
        if horizon >= self._until_s:  # (the policy's order holds only so far)
            horizon = self._until_s
        # (a block pays only past `least_block_steps` steps before the horizon: mostly not, at
        # many replicas, where a call to learn so was 3-5 % of a cell)
        if self._verify_fn is not None and self._block_due(horizon):
            while not self.final and ends[-1] < horizon and len(ends) < self.kmax:
                if not self._block(horizon):
                    break  # (declined now, it would be at the later steps too)
        self._steps(horizon)
        if self.ends[-1] >= self._until_s or len(self.ends) >= self.kmax:
            self.final = True  # (not extended past the policy's limit)

    def _block_due(self, horizon: float) -> bool:
        """Are enough steps expected before `horizon` (at the last step's time) for a block?"""
        ends = self.ends
        span = ends[-1] - (ends[-2] if len(ends) > 1 else self.start_s)  # (step 0's may include prompts: longer)
        return span <= 0 or (horizon - ends[-1]) / span >= least_block_steps(len(self._active))  # (`block_steps`' test)

    def _block(self, horizon: float) -> bool:
        """Price a block of regular steps with numpy (`spec_blocks.regular_block`) when enough
        of them are expected: before the horizon (guessed from the last step's time) and
        before a request gets down to its last k + 1 tokens (at the mean tokens per step).
        True if it priced steps and more regular ones may follow."""
        act, rem, k_max, ends = self._active, self._rem, self._k_max, self.ends
        n = len(act)
        span = ends[-1] - (ends[-2] if len(ends) > 1 else self.start_s)  # (step 0's may include prompts: longer)
        steps = block_steps(n, (horizon - ends[-1]) / span if span > 0 else math.inf,
                            lambda: min([rem[i] for i in act]) - k_max - 1, self._acceptance_rate, k_max)
        steps = min(steps, self.kmax - len(ends))
        if steps <= 0:
            return False
        rows = self._rows[-1]
        acc = np.array(self._draws.peek(rows, steps * n), dtype=np.int64).reshape(steps, n)
        ctx, held = self._ctx, self._held
        b = regular_block(acc, act, [ctx[i] for i in act], [rem[i] for i in act], [held[i] for i in act], k_max,
                          self._bs, self._alloc[-1], self.free_blocks, ends[-1], horizon,
                          block_step_times(self._verify_fn, self._affine, n, k_max, self._draft_ratio))
        m = b.m
        if b.out_of_blocks:
            self.final = True
        if not m:
            return False
        ends += b.ends_s
        self.sizes += b.sizes
        self._runs += [act] * m
        self._emits += b.emits
        self._grants += b.grants
        self._alloc += b.alloc
        self._rows += range(rows + n, rows + n * m + 1, n)
        for i, t, h in zip(act, b.tokens, b.held):
            ctx[i] += t
            rem[i] -= t
            held[i] = h
        return m == steps and not self.final

    def _steps(self, horizon: float) -> None:
        """Price steps one by one while one would start before `horizon` (and `kmax`), until
        the stretch is done or a step's blocks do not fit.

        `speculate`'s rules, with two simplifications that are exact here: the `max_model_len`
        bound on k never binds (a decode's context + tokens left < max_model_len, so
        tokens left - 1 is the tighter bound), and k = 0 only on a request's last token."""
        if len(self._active) == 1 and self.prompt is None:
            self._lone_steps(horizon)
            if self.final or self.ends[-1] >= horizon or len(self.ends) >= self.kmax:
                return  # (the loop below would take no step: not its set-up either)
        ctx, rem, held = self._ctx, self._rem, self._held
        k_max, bs, kmax = self._k_max, self._bs, self.kmax
        ends, sizes, runs, emits_of, grants_of, allocs, rows_of = (
            self.ends, self.sizes, self._runs, self._emits, self._grants, self._alloc, self._rows)
        window = self._draws.window
        chunked = self.prompt is not None
        draft_k = self._draft_ratio * k_max  # (the draft term's factor, as `speculate` multiplies it)
        fns_n, draft_fn, verify_fn = -1, None, None  # the batch size whose scalar forms are bound
        t = ends[-1]
        rows = rows_of[-1]  # acceptance rows read so far
        # acc[u], acc[u + 1], ...: the next rows (`window`'s list, asked again only when a step
        # would read past its end: nothing else reads the draws while the steps are priced)
        acc, u = (), 0
        while not self.final and t < horizon and len(ends) < kmax:
            act = self._active
            n = len(act)
            if u + n > len(acc):
                acc, u = window(rows, n)
            u0 = u
            emits, grants, done_plain, done_spec = [], [], [], []  # (finishes: plain decodes first)
            need = ctx_sum = 0
            regular = True  # every request verifies 1 + k_max tokens
            for i in act:
                c = ctx[i]
                r = rem[i]
                ctx_sum += c
                if r > k_max:  # k_max lookahead slots: blocks for c + 1 + k_max tokens
                    e = acc[u] + 1  # accepted drafts + the target's token
                    u += 1
                    nb = (c + k_max) // bs + 1 - held[i]
                    if e == r:
                        done_spec.append(i)
                elif r > 1:  # k = r - 1 slots; emits at most r
                    k = r - 1
                    a = acc[u]
                    u += 1
                    e = a + 1 if a < k else r
                    nb = (c + k) // bs + 1 - held[i]
                    regular = False
                    if e == r:
                        done_spec.append(i)
                else:  # its last token: a plain decode
                    e = 1
                    nb = c // bs + 1 - held[i]
                    regular = False
                    done_plain.append(i)
                emits.append(e)
                if nb > 0:
                    grants.append((i, nb))
                    need += nb
            used = u - u0
            alloc = allocs[-1] + need
            if alloc > self.free_blocks:  # (frees inside the stretch are not counted on)
                self.final = True
                return
            dt = None
            if not chunked:  # (`_step_time_s` inlined for the usual steps: one that speculates, with scalar forms)
                if n != fns_n:
                    fns_n = n
                    draft_fn, verify_fn = self._forms(n)
                if draft_fn and (regular or used):
                    dt = verify_fn(ctx_sum) if regular and verify_fn is not None else self._verify_s((), act)
                    if dt is not None:
                        dt += draft_k * draft_fn(ctx_sum)
            if dt is None:
                dt = (self._step_time_s(act, ctx_sum, used, regular) if not chunked
                      else self._chunk_step_time_s(act, ctx_sum, used, len(ends), regular))
            for i, e in zip(act, emits):
                ctx[i] += e
                rem[i] -= e
            for i, nb in grants:
                held[i] += nb
            j = len(ends)
            t += dt
            ends.append(t)
            sizes.append(sum(emits))
            runs.append(act)
            emits_of.append(emits)
            grants_of.append(grants)
            allocs.append(alloc)
            rows += used
            rows_of.append(rows)
            if done_plain or done_spec:
                done = done_plain + done_spec
                self._finishes += [(j, i) for i in done]
                self._done_with(j, done)
                if len(self._active) == 1 and not chunked:  # (one left: `_lone_steps` from here)
                    self._steps(horizon)
                    return

    def _lone_steps(self, horizon: float) -> None:
        """`_steps` for a lone request with more than k_max + 1 tokens left, the usual step
        at a lightly loaded replica (two thirds of those priced in the spec-decode cells at 8
        replicas, about half at 1): its rules and floats for a batch of one (a regular verify pass,
        by the scalar forms), without a batch's lists. Leaves to `_steps` the steps where its
        other rules apply (the request's last k_max + 1 tokens, a form that does not cover the
        step)."""
        draft_fn, verify_fn = self._forms(1)
        if not draft_fn or verify_fn is None:
            return
        act = self._active
        i = act[0]
        ctx, rem, held = self._ctx, self._rem, self._held
        k_max, bs, kmax, free = self._k_max, self._bs, self.kmax, self.free_blocks
        ends, sizes, runs, emits_of, grants_of, allocs, rows_of = (
            self.ends, self.sizes, self._runs, self._emits, self._grants, self._alloc, self._rows)
        window = self._draws.window
        draft_k = self._draft_ratio * k_max
        c, r, h = ctx[i], rem[i], held[i]
        t, rows, alloc = ends[-1], rows_of[-1], allocs[-1]
        acc, u = (), 0
        while not self.final and t < horizon and len(ends) < kmax and r > k_max:
            if u >= len(acc):
                acc, u = window(rows, 1)
            nb = (c + k_max) // bs + 1 - h  # (blocks for c + 1 + k_max tokens)
            need = nb if nb > 0 else 0
            if alloc + need > free:  # (frees inside the stretch are not counted on)
                self.final = True
                break
            dt = verify_fn(c)
            if dt is None:
                break
            dt += draft_k * draft_fn(c)
            e = acc[u] + 1  # accepted drafts + the target's token
            u += 1
            rows += 1
            alloc += need
            c += e
            h += need
            j = len(ends)
            t += dt
            ends.append(t)
            sizes.append(e)
            runs.append(act)
            emits_of.append([e])
            grants_of.append([(i, nb)] if nb > 0 else [])
            allocs.append(alloc)
            rows_of.append(rows)
            if e == r:
                r = 0
                ctx[i], rem[i], held[i] = c, r, h
                self._finishes.append((j, i))
                self._done_with(j, [i])
                return
            r -= e
        ctx[i], rem[i], held[i] = c, r, h

    def _forms(self, n: int) -> tuple:
        """(the draft term's scalar form, a regular verify pass's) for batch size `n`, memoised
        (False / None: the perf model has none)."""
        fns = self._fns.get(n)
        if fns is None:
            verify = self._verify_time_fn(n, 1 + self._k_max) if self._verify_time_fn is not None else None
            fns = self._fns[n] = (self._decode_fn(n), verify)
        return fns

    def _step_time_s(self, act: list[int], ctx_sum: int, num_spec: int, regular: bool) -> float:
        """The step's time as `speculate` prices it (verify pass + draft term), from the
        contexts before it: by the context sum alone when the perf model has the forms."""
        draft_fn, verify_fn = self._forms(len(act))
        ctx = self._ctx
        draft_s = draft_fn(ctx_sum) if draft_fn else self._perf.step_time_s([], [ctx[i] for i in act])
        if not num_spec:  # every request on its last token: a plain decode step
            return draft_s
        dt = verify_fn(ctx_sum) if regular and verify_fn is not None else None
        if dt is None:
            dt = self._verify_s((), act)
        dt += self._draft_ratio * self._k_max * draft_s  # (as `speculate`, term for term)
        return dt

    def _chunk_step_time_s(self, act: list[int], ctx_sum: int, num_spec: int, j: int, regular: bool) -> float:
        """Step j's time as `speculate` prices it with the prompt's chunk first in the verify
        pass (over its first `cached0 + j * chunk` tokens), term for term: by the perf model's
        scalar form when every decode verifies 1 + k tokens (`regular`)."""
        k_max, perf = self._k_max, self._perf
        cached = self._cached0 + j * self.chunk
        draft_fn = self._decode_fn(len(act))
        if regular and draft_fn:
            form = self._chunk_form
            if form is False:  # (once: the decodes do not change in a chunk stretch)
                fn = getattr(perf, "chunk_verify_time_fn", None)
                form = self._chunk_form = fn(len(act), 1 + k_max, self.chunk) if fn else None
            dt = form(cached, ctx_sum) if form is not None else None
            if dt is not None:
                return dt + self._draft_ratio * k_max * draft_fn(ctx_sum)
        return self._prompts_step_time_s([(self.chunk, cached)], act, ctx_sum, num_spec)

    def _prompts_step_time_s(self, prompts: list[tuple[int, int]], act: list[int], ctx_sum: int,
                             num_spec: int) -> float:
        """A step's time as `speculate` prices it with `prompts` ((tokens, tokens cached) each)
        first in the verify pass beside the decodes of `act`, term for term (a prompt's chunk,
        or the prompts that join the stretch)."""
        ctx, k_max, perf = self._ctx, self._k_max, self._perf
        decode_ctxs = [ctx[i] for i in act]
        if not num_spec:  # every request on its last token: no speculation, plain decodes
            return perf.step_time_s(prompts, decode_ctxs)
        dt = self._verify_s(prompts, act)
        draft_fn = self._decode_fn(len(act))
        dt += self._draft_ratio * k_max * (draft_fn(ctx_sum) if draft_fn else perf.step_time_s([], decode_ctxs))
        return dt

    def _verify_s(self, prompts, act: list[int]) -> float:
        """The verify pass of a step that speculates (at least one request verifies): step_time_s
        of `prompts` ((tokens, tokens cached) each), then a verify chunk of 1 + min(k, tokens left - 1)
        tokens for each of `act`'s requests with more than one token left, beside the plain decodes
        of those on their last. From sums by the perf model's `verify_sums_time_fn` (a step's lists
        cost about ten times as much), else from the lists."""
        ctx, rem, k_max = self._ctx, self._rem, self._k_max
        form = self._sums_form
        if form is not None:
            tokens = pairs2 = cached = plain = plain_sum = 0
            for n, c in prompts:
                tokens += n
                pairs2 += n * (2 * c + n)
                cached += c
            prompt_tokens = tokens
            for i in act:
                c, r = ctx[i], rem[i]
                if r > 1:
                    t = k_max + 1 if r > k_max else r
                    tokens += t
                    pairs2 += t * (2 * c + t)
                    cached += c
                else:
                    plain += 1
                    plain_sum += c
            dt = form(len(prompts) + len(act), tokens + plain, pairs2, cached, plain_sum, prompt_tokens)
            if dt is not None:
                return dt
        verify = [*prompts, *((1 + (k_max if rem[i] > k_max else rem[i] - 1), ctx[i]) for i in act if rem[i] > 1)]
        return self._perf.step_time_s(verify, [ctx[i] for i in act if rem[i] <= 1], len(verify) - len(prompts))

    def _done_with(self, j: int, done: list[int]) -> None:
        """Requests that emitted their last token in step j: the stretch ends there, or they
        leave the batch (their blocks free from step j + 1 on, for the views)."""
        if not self.through:
            self.final = True
            return
        gone = set(done)
        self._active = [i for i in self._active if i not in gone]
        self._free_at.append((j + 1, sum(self._held[i] for i in done)))
        if not self._active:
            self.final = True
