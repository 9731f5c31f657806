"""A fast-forwarded stretch applied: its steps' tokens, KV blocks and step log, as stepping
would have left them (a mixin of `Engine`, beside `FastForwarding`, which plans and prices).

`_apply_stretch` runs when a stretch ends (or a crash or drain ends it early): every request
advances by the steps it ran, the finished ones in stepping's finish order; the blocks the
decodes grew into are allocated and the full ones registered in the prefix cache; and the
step log takes the stretch's steps as runs of a constant batch. A `SpecStretch` or a
`ChunkStretch` applies its own steps (`st.apply`); joins, stalls, prompt chunks and the
policy's timers inside a plain stretch are applied by the modules named where they are read.
"""

from __future__ import annotations

from servesim.metrics.recorder import BlockGrowth
from servesim.replica import moved_runs, policy_stops
from servesim.replica.chunk_join import apply_prompt_runs
from servesim.replica.keyed_chunk_join import apply_rests
from servesim.replica.ordered_frees import allocate_in_order
from servesim.replica.stretch import Stretch
from servesim.replica.stretch_stalls import apply_stalled, grown_blocks
from servesim.replica.token_advance import advance_decodes, advance_decodes_by, apply_joins, apply_step0_prompts
from servesim.workload.request import Request


class StretchApply:
    """The apply methods of `Engine` (which holds the state they use)."""

    __slots__ = ()

    def _apply_stretch(self, st: Stretch) -> list[Request]:
        """Advance the requests, KV blocks and step log by the stretch's steps; returns the
        requests that finished in it, in finish order."""
        done = self._apply_steps(st)
        if self.moved:  # (a moved request's first run here kept apart from its last before: `moved_runs.py`)
            moved_runs.split(self.moved)
        return done

    def _apply_steps(self, st: Stretch) -> list[Request]:
        if type(st) is not Stretch:  # (a `SpecStretch` or a `ChunkStretch`: steps of their own)
            return st.apply(self)
        ends, k, reqs = st.ends, st.k, st.reqs
        if len(reqs) == 1 and not (st.decodes or st.keyed or st.timers):
            return self._apply_lone(st)
        bs = self.kv.block_size
        first_new = st.first_new
        first = self.recorder.num_steps
        nd = len(st.decodes)
        pins = ()  # (the timers of pins set inside it that fire there: `_kept`)
        if k < st.first_finish and not st.stalls:  # nobody finished: every request ran all k steps
            steps_of = [k] * len(reqs)
            new_blocks = [(req, (k - f - 1) // bs + 1) for req, f in zip(reqs, first_new) if f < k]
            finished, frees = [], []
            advance_decodes_by(st.decodes, k, first)
        else:
            steps_of, new_blocks, finished, frees, grown, pins = self._departures(st, bs)
            if not st.stalls:
                advance_decodes(st.decodes, steps_of, first)
        if st.timers is not None or pins:  # (the policy's timers fired inside it: their blocks freed at their steps)
            frees = frees + policy_stops.late_timers(st, pins)
        joined = self.kv.num_blocks_list([req for _, req, _ in st.joins]) if st.joins else []
        if st.settled and joined:  # (a joiner settled since holds its growth already: logged at its steps)
            n0, settled = len(reqs) - len(joined), st.settled
            joined = [b - settled.get(n0 + j, 0) for j, b in enumerate(joined)]
        cut = ()  # (turns cut inside their chunk steps: `apply_rests`)
        if st.stalls:
            new_blocks += [(reqs[i], c) for i, c in grown.items()]
            prefill_tokens, prefill_at = apply_stalled(st, steps_of, first, frees, joined)
            # (the growth before each stall as an entry of its own; each stall's requests silent)
            first_new = first_new + [f for _, f, _ in st.grown]
            steps_of = steps_of + [m if (m := steps_of[i]) < s else s for i, _, s in st.grown]
            silent_at, silent_n = st.stalled_before(k)
        else:
            prefill_tokens = apply_step0_prompts(st.prefills, steps_of[nd:], first, st.ends_view)
            prefill_at = apply_joins(st, steps_of, first, frees, joined) if st.joins else ()
            silent_at = silent_n = ()  # (one request each without counts)
            if st.prompt_runs:  # (prompts that joined with chunks: `replica/chunk_join.py`)
                prefill_at, silent_at = apply_prompt_runs(st, frees, prefill_at)
                if st.rests:  # (next turns' rests: `replica/keyed_chunk_join.py`)
                    cut = apply_rests(st, steps_of, new_blocks, frees)
            if st.join_shared:  # (hits on held blocks, logged as in use from the join's first step: those already were)
                frees += [(s, c) for s, c in st.join_shared if s < k]
            if st.taken_back:  # (of those, the ones stepping freed at a finish before: free between)
                frees += [f for s, r, n in st.taken_back if s < k for f in ((r, n), (s, -n))]
        kv_used = BlockGrowth(self.kv.num_gpu_blocks - st.free_blocks, first_new, steps_of, bs, frees)
        if st.in_order and finished:  # (SGLang's radix cache: growth and releases in step order)
            allocate_in_order(self.kv, st, steps_of, finished, bs)
        else:
            self._apply_blocks(st, new_blocks, cut)
        done = [reqs[i] for i in finished]
        endv = st.ends_view  # (Python floats: no numpy scalar made per finish)
        for req in done:
            req.finish_s = endv[req.token_steps[-1] - first]
        self.num_steps += k
        self.num_fast_forwarded_steps += k
        self.recorder.log_decode_steps(st.start_s, ends, st.batch_runs(), st.num_waiting, kv_used, prefill_tokens,
                                       [j for j in st.waiting_from if j < k], prefill_at=prefill_at,
                                       waiting_to=[j for j in st.waiting_to if j < k] if st.waiting_to else (),
                                       silent_at=silent_at, silent_n=silent_n)
        return done

    def _departures(self, st: Stretch, bs: int) -> tuple[list[int], list, list[int], list, dict, list]:
        """For a stretch some requests left before its end: (the steps each request ran, the
        blocks each got, those that finished in finish order, the (step, blocks) their finishes
        freed before the last step, the blocks grown before prompt-only steps by request, the
        timers of pins set inside it that fire there: `_kept`)."""
        k, reqs, first_new = st.k, st.reqs, st.first_new
        steps_of = [r if r < k else k for r in st.remaining]  # steps each request runs in the stretch
        # blocks each request gets at steps f, f + bs, ... below m (the steps it runs)
        new_blocks = [(req, (m - f - 1) // bs + 1) for req, f, m in zip(reqs, first_new, steps_of) if f < m]
        finished = [i for i, r in enumerate(st.remaining) if r <= k]
        if len(finished) > 1:
            finished.sort(key=st.finish_key())  # in finish order (then the policy's), as stepping
        # a request that finished before the last step frees all its blocks after its last step
        held = st.freed_blocks(self.kv)
        grown = grown_blocks(st, steps_of, bs) if st.grown else {}  # (before prompt-only steps)
        before = [i for i in finished if steps_of[i] < k]  # (those whose finish frees before the last step)
        if before:  # (with prefix keys: all of them counted in one `blocks_freed` pass, read below one by one)
            held(reqs[before[-1]])
        frees = [(steps_of[i], held(reqs[i]) + (g if (g := (steps_of[i] - first_new[i] - 1) // bs + 1) > 0 else 0)
                  + grown.get(i, 0)) for i in before]
        if st.settled:  # (turns that left before a next turn's join got their growth then: `settle_departed`)
            settled = st.settled
            got = {id(reqs[i]) for i in settled}
            new_blocks = [grant for grant in new_blocks if id(grant[0]) not in got]
            frees = [(m, n - settled.get(i, 0)) for (m, n), i in zip(frees, before)]
        pins = ()
        if st.kept is not None:  # (finishes that keep their blocks, pins, and the timers they set inside it)
            frees, pins = self._kept(st, before, frees)
        return steps_of, new_blocks, finished, frees, grown, pins

    def _kept(self, st: Stretch, before: list[int], frees: list) -> tuple[list, list]:
        """`_departures`' frees (of the requests `before`, which left before the last step, in
        finish order; a finish that keeps its blocks listed with its growth alone) without those
        of finishes that keep their blocks (a pin frees none), and the (step, key, blocks) of the
        timers those set that fall inside the stretch, in finish order: each frees at its step
        what the request held at its finish (its blocks are its own: `policy_stops.first_shared_pin`)."""
        keeps, delay, key_of = st.kept
        k, reqs, endv = st.k, st.reqs, st.ends_view
        kept, pins = [], []
        for f, i in zip(frees, before):
            req = reqs[i]
            if not keeps(req):
                kept.append(f)
            elif (m := st.timer_step(endv[f[0] - 1] + delay)) < k:
                pins.append((m, key_of(req), self.kv.num_blocks_of(req.id) + f[1]))  # (its growth in `f`)
        return kept, pins

    def _apply_blocks(self, st: Stretch, new_blocks: list, cut) -> None:
        """The stretch's KV: the blocks its requests grew, and the full blocks of those with
        prefix keys (and of turns `cut` inside their chunk steps) registered."""
        k = st.k
        self.kv.allocate_plain_many(new_blocks, st.ahead)
        if st.keyed_last is None:
            self.kv.cache_full_blocks_many(st.keyed, k - 1)
        else:  # (through finishes: each up to its last step; only the vLLM cache's stretches)
            self.kv.cache_full_blocks_many(st.keyed, k - 1, st.keyed_last)
        for req in cut:  # (their chunks so far registered their full blocks, as the running pass did)
            self.kv.cache_full_blocks(req, req.num_computed_tokens)

    def _apply_lone(self, st: Stretch) -> list[Request]:
        """`_apply_stretch` for a stretch of one request, whose prompt finished in step 0 and
        which nothing joined (the commonest at many replicas: an arrival at an idle replica),
        without the passes over a batch: it runs all k steps (its `remaining` >= k, the stretch's
        `kmax`) and finished in the last if its remaining is k. Returns [it] or []."""
        (req, n), = st.prefills
        k, ends, bs = st.k, st.ends, self.kv.block_size
        first = self.recorder.num_steps
        f = st.first_new[0]
        if f < k:  # (blocks at steps f, f + bs, ... below k)
            self.kv.allocate_plain_many([(req, (k - f - 1) // bs + 1)], st.ahead)
        req.num_computed_tokens += n + k - 1
        req.num_output_tokens += k
        req.token_steps += (first, first + k - 1)
        endv = st.ends_view  # (Python floats: no numpy scalar made per read)
        if req.first_token_s is None:
            req.first_token_s = endv[0]
        done = []
        if st.remaining[0] == k:
            req.finish_s = endv[k - 1]
            done.append(req)
        self.num_steps += k
        self.num_fast_forwarded_steps += k
        self.recorder.log_lone(st.start_s, ends, n, st.num_waiting, self.kv.num_gpu_blocks - st.free_blocks, f, bs,
                               st.waiting_from)
        return done
