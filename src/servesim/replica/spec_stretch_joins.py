"""Requests that join a speculative stretch in flight (`SpecStretch.join`): step s priced with
their prompts beside the decodes, and their place in the later steps. A mixin of `SpecStretch`,
which holds the state; `replica/stretch_join.py` decides when they may join (`spec_join_arrivals`)."""

from __future__ import annotations

from servesim.replica.schedulers.outputs import UNLIMITED_STEPS


class SpecStretchJoins:
    """`SpecStretch`'s methods for requests that join it (state set by `SpecStretch.__init__`:
    `_joined`, the (step, index, prompt tokens) of each, and `_join_blocks`, the (step, blocks)
    the prompts took)."""

    __slots__ = ()

    def rewind(self) -> None:
        """Bring the running state (contexts, tokens left, blocks held, the batch) back to
        the last step kept: a cut drops steps priced past it but leaves the state theirs."""
        runs, emits, grants = self._dropped
        if not runs:
            return
        ctx, rem, held = self._ctx, self._rem, self._held
        for act, es, gs in zip(runs, emits, grants):
            for i, e in zip(act, es):
                ctx[i] -= e
                rem[i] += e
            for i, nb in gs:
                held[i] -= nb
        self._active = runs[0]  # (the batch of the first step dropped: the next one's)
        self._dropped = ([], [], [])

    def _join_step(self, joins: list, blocks: int) -> tuple | None:
        """Step s (= k) as `speculate` runs it with the prompts of `joins` (none cached) first
        in the verify pass beside the decodes still running: (end time, emits, grants, blocks
        after it, acceptance rows read, finishes), or None if its decodes' blocks plus `blocks`
        (the prompts' and those the policy keeps free at admission) do not fit in those free
        when the stretch started. `_steps`' per-request rules (repeated there inline: it is the
        hot loop of speculative stretches), priced by `_prompts_step_time_s`."""
        act, ctx, rem, held = self._active, self._ctx, self._rem, self._held
        k_max, bs = self._k_max, self._bs
        rows = self._rows[len(self.ends) - 1]  # (a cut keeps one more entry: `SpecStretch._keep`)
        acc, u = self._draws.window(rows, len(act))
        u0 = u
        emits, grants, done_plain, done_spec = [], [], [], []
        need = ctx_sum = 0
        for i in act:
            c, r = ctx[i], rem[i]
            ctx_sum += c
            if r > 1:  # k = min(k_max, r - 1) lookahead slots: blocks for c + 1 + k tokens
                k = k_max if r > k_max else r - 1
                a = acc[u]
                u += 1
                e = (a if a < k else k) + 1  # accepted drafts + the target's token (k < r)
                nb = (c + k) // bs + 1 - held[i]
                if e == r:
                    done_spec.append(i)
            else:  # its last token: a plain decode
                e = 1
                nb = c // bs + 1 - held[i]
                done_plain.append(i)
            emits.append(e)
            if nb > 0:
                grants.append((i, nb))
                need += nb
        alloc = self._alloc[-1] + need
        if alloc + blocks > self.free_blocks:  # (frees inside the stretch are not counted on)
            return None
        used = u - u0
        dt = self._prompts_step_time_s([(n, 0) for _, n in joins], act, ctx_sum, used)
        return self.ends[-1] + dt, emits, grants, alloc, rows + used, done_plain + done_spec

    def _stall_step(self, joins: list, blocks: int) -> tuple | None:
        """Step s (= k) as stepping runs it for a prefill-first policy (`stalls_decodes`): the
        prompts of `joins` (none cached) alone, the decodes stalled (no token, block or
        acceptance row), priced as `Engine._start_step` prices a step without decodes; in
        `_join_step`'s form, or None if `blocks` do not fit beside the decodes' grants so far."""
        alloc = self._alloc[-1]
        if alloc + blocks > self.free_blocks:  # (frees inside the stretch are not counted on)
            return None
        dt = self._perf.step_time_s([(n, 0) for _, n in joins], [])
        return self.ends[-1] + dt, [], [], alloc, self._rows[len(self.ends) - 1], []

    def last_stall(self) -> int | None:
        """The step of its last prompt-only join step (None: none), as `Scheduler.stall_wait` asks."""
        return self._stalled[-1][0] if self._stalled else None

    def running_at(self) -> list:
        """The (request, tokens) of the requests running at the next step (`Scheduler.stall_admits`)."""
        reqs, ctx = self.reqs, self._ctx
        return [(reqs[i], ctx[i] + 1) for i in self._active]

    def free_at_boundary(self) -> int:
        """KV blocks free at the boundary of the next step, as stepping has them: those free at
        the start (less the joined prompts'), less the decodes' grants, plus the blocks of the
        requests that finished before it."""
        s = len(self.ends)
        return self.free_blocks - self._alloc[-1] + sum(b for j, b in self._free_at if j <= s)

    def hold(self, num_waiting: int, s2: int) -> bool:
        """The `num_waiting` requests waiting at the next step s (the first `held_arrivals` of
        them held already) wait up to step s2, where a policy that admits only every so many
        decode steps (vtc's `max_wait_tokens`: `Scheduler.stall_wait`) may admit them: the
        same decodes until then, priced no further (`kmax`), where the stretch's end asks again.
        False, changing nothing, if none runs at s; a stretch whose requests all leave before s2
        ends there (stepping's `schedule` then admits as soon as none runs)."""
        if not self._active:
            return False
        self._wait(num_waiting - self.held_arrivals)
        self.held_arrivals = num_waiting
        self.kmax = s2
        return True

    def hold_waiting(self, num_waiting: int) -> None:
        """Go on from the next step with `num_waiting` requests waiting behind a blocked head:
        the same decodes, up to the next finish (which may admit the head), as a stretch
        planned with them waiting (`through` False)."""
        self._wait(num_waiting)
        self.through = False

    def _wait(self, n: int) -> None:
        """Go on from the next step s, `n` more requests waiting from there (the step log's count)."""
        s = len(self.ends)
        del self._rows[s:]  # (the entry a cut kept for a crash's step in flight: priced again)
        self.waiting_from += [s] * n
        self.final = False

    def join(self, joins: list, blocks: int, step: tuple, order: list[int], kv, stall: bool = False) -> None:
        """Add step s (`_join_step`'s answer): the decodes of `_active` and the prompts of
        `joins` (admitted now, their `blocks` taken), each emitting its first token; from step
        s + 1 on the batch runs in `order` (indices into `reqs`, the newcomers appended). With
        `stall` (`_stall_step`'s answer) step s runs the prompts alone."""
        end_s, emits, grants, alloc, rows, done = step
        s = len(self.ends)
        if self.held_arrivals:  # (those held to this step: they wait no more, and the stretch goes on past it)
            self._waiting_to += [s] * self.held_arrivals
            self.held_arrivals = 0
            self.kmax = UNLIMITED_STEPS
        reqs, ctx, rem, held = self.reqs, self._ctx, self._rem, self._held
        act = self._active
        for i, e in zip(act, emits):
            ctx[i] += e
            rem[i] -= e
        for i, nb in grants:
            held[i] += nb
        new = list(range(len(reqs), len(reqs) + len(joins)))
        for req, n in joins:
            self._joined.append((s, len(reqs), n))
            reqs.append(req)
            ctx.append(n)
            rem.append(req.output_len - 1)
            held.append(kv.num_blocks_of(req.id))
        self._join_blocks.append((s, blocks))
        self.free_blocks -= blocks  # (the prompts' blocks: the later steps' grants fit in the rest)
        self.ends.append(end_s)
        self.sizes.append(sum(emits) + len(joins))
        if stall:
            self._stalled.append((s, len(act)))
        self._runs.append(new if stall else act + new)
        self._emits.append(emits + [1] * len(joins))
        self._grants.append(grants)
        self._alloc.append(alloc)
        del self._rows[s:]  # (the entry a cut kept for a crash's step in flight: step s's is this one)
        self._rows.append(rows)
        self._active = order
        self.final = False
        if done:
            self._finishes += [(s, i) for i in done]
            self._done_with(s, done)
