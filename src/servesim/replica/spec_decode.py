"""Speculative decoding, applied by the engine to the decodes of any scheduler's batch.

Draft tokens are proposed for each decoding request, verified in one target pass, and the
accepted prefix plus the target's own token are emitted; rejected drafts are rolled back
(their KV slots are simply overwritten later). Parameters live in `EngineConfig`
(`num_speculative_tokens`, `spec_acceptance_rate`, `spec_draft_cost_ratio`). Steps that
repeat are fast-forwarded by `spec_fast_forward` (a `SpecStretch`, `replica/spec_stretch.py`),
except with an acceptance curve or drafts priced by their work (`spec_acceptance_curve`,
`spec_draft_layers`: `spec_stepped`), which are stepped one by one.
"""

from __future__ import annotations

import math

from servesim.perf.spec_price import spec_work_s
from servesim.replica.spec_acceptance import CurveDraws
from servesim.replica.spec_stretch import SpecStretch
from servesim.workload.request import Request

DRAW_BLOCK_ROWS = 1024  # acceptance rows drawn per generator call (any size gives the same numbers)


class AcceptanceDraws:
    """Accepted-draft counts for successive speculative decodes, drawn from the engine's
    generator a block of rows at a time and counted with one vectorised pass per block.

    Row i is k_max uniforms; its count is the number of leading ones below the acceptance rate
    (the first rejection ends the run). A generator yields its doubles in order whatever the
    shape asked for, so these are exactly the rows one `rng.random((n, k_max))` call per step
    would give; nothing else draws from this generator.
    """

    def __init__(self, rng, k_max: int, acceptance_rate: float) -> None:
        self._rng = rng
        self._k_max = k_max
        self._rate = acceptance_rate
        self._counts: list[int] = []
        self._pos = 0

    def take(self, n: int) -> list[int]:
        """The next `n` rows' counts."""
        pos = self._pos
        if pos + n > len(self._counts):
            self._refill(n)
            pos = 0
        self._pos = pos + n
        return self._counts[pos:pos + n]

    def peek(self, offset: int, n: int) -> list[int]:
        """Rows offset .. offset + n - 1 after the next one, without taking them: a
        fast-forwarded stretch reads its steps' rows ahead and takes (`skip`) only those of
        the steps it keeps, so a stretch cut early leaves the rest for stepping."""
        pos = self._pos + offset
        if pos + n > len(self._counts):
            self._refill(offset + n)
            pos = offset
        return self._counts[pos:pos + n]

    def window(self, offset: int, n: int) -> tuple[list[int], int]:
        """`peek` without the copy: (counts, i) such that counts[i:i + n] are those rows (the
        list is never changed in place: a refill replaces it)."""
        pos = self._pos + offset
        if pos + n > len(self._counts):
            self._refill(offset + n)
            pos = offset
        return self._counts, pos

    def skip(self, n: int) -> None:
        """Take the next `n` rows (read before with `peek`)."""
        if self._pos + n > len(self._counts):
            self._refill(n)
        self._pos += n

    def _refill(self, n: int) -> None:
        """Keep the rows not taken yet and draw at least enough blocks to have `n` of them."""
        rest = self._counts[self._pos:]
        u = self._rng.random((max(DRAW_BLOCK_ROWS, n - len(rest)), self._k_max))
        self._counts = rest + (u < self._rate).cumprod(axis=1).sum(axis=1).tolist()
        self._pos = 0


def acceptance_draws(rng, config):
    """The engine's acceptance draws: one i.i.d. rate, or the curve over output positions."""
    k, curve = config.num_speculative_tokens, config.spec_acceptance_curve
    return AcceptanceDraws(rng, k, config.spec_acceptance_rate) if curve is None else CurveDraws(rng, k, curve)


def spec_stepped(config) -> bool:
    """Must speculative steps be run one by one? The stretches read acceptances drawn against
    one rate and price drafts by the ratio, so a curve or work-priced drafts step."""
    return config.spec_acceptance_curve is not None or config.spec_draft_layers > 0


def speculate(engine, decodes, decode_ctxs, chunks, prefills, rank_batches=None):
    """Draft k tokens per decoding request and verify them in one target pass.

    Each decode gets k = min(num_speculative_tokens, tokens it still has to emit - 1)
    lookahead KV slots (none if the blocks are not free: it then decodes plainly). The
    target verifies 1 + k tokens per request like a prefill chunk over its context (but as a
    decode: no prompt-only term, `PerfModel.step_time_s`'s `num_verify`); the
    drafts cost `spec_draft_cost_ratio` of a plain decode step per draft token. The number
    of accepted drafts is drawn at once (i.i.d. acceptance `spec_acceptance_rate`; the
    first rejection ends the run; `AcceptanceDraws`), so the outcome depends only on the
    engine's generator.
    With attention data parallelism (`rank_batches`: the step's batch per rank) each rank verifies
    its own decodes and the ranks are priced in lock-step, as their plain steps are.
    Returns (step time, plain decodes, prefills + speculative decodes as (req, (1 + k, a))).
    """
    cfg = engine.config
    k_max = cfg.num_speculative_tokens
    plain, plain_ctxs, spec = [], [], []
    room = cfg.max_model_len - 2  # drafts stop one slot short of the model length
    allocate = engine.kv.allocate_slots  # (read once: this loop runs per decode per step)
    for req, ctx in zip(decodes, decode_ctxs):
        k = min(k_max, req.output_len - req.num_output_tokens - 1, room - ctx)
        if k > 0 and allocate(req, 1 + k):
            spec.append((req, k, ctx))
        else:
            plain.append(req)
            plain_ctxs.append(ctx)
    if not spec:
        return engine.perf.step_time_s(chunks, decode_ctxs), decodes, prefills
    draws = engine.spec_draws
    accepted = (draws.take(len(spec)) if type(draws) is AcceptanceDraws  # (one rate; else its curve)
                else draws.take_at([req.num_output_tokens for req, _, _ in spec]))
    if rank_batches is None:
        dt = engine.perf.step_time_s(chunks + [(1 + k, ctx) for _, k, ctx in spec], plain_ctxs, len(spec))
    else:
        rank_of = engine.scheduler.rank_of
        batches = [(list(p), []) for p, _ in rank_batches]  # (each rank's prompt chunks stay its own)
        for req, k, ctx in spec:
            batches[rank_of[req.id]][0].append((1 + k, ctx))
        for req, ctx in zip(plain, plain_ctxs):
            batches[rank_of[req.id]][1].append(ctx)
        dt = engine.perf.lockstep_step_time_s(batches, [len(p) - len(q) for (q, _), (p, _) in zip(rank_batches, batches)])
    if cfg.spec_draft_layers:  # priced by their work (`perf/spec_price.py`)
        if rank_batches is None:
            dt += spec_work_s(engine.perf, cfg.spec_draft_layers, k_max, len(chunks) + len(decodes),
                              sum(k for _, k, _ in spec), decode_ctxs)
        else:  # (the ranks in lock-step: the busiest rank's drafts and logits)
            dt += max(spec_work_s(engine.perf.rank, cfg.spec_draft_layers, k_max, len(p) + len(c),
                                  sum(t - 1 for t, _ in p[len(q):]), [ctx for _, ctx in p[len(q):]] + c)
                      for (q, _), (p, c) in zip(rank_batches, batches))
    else:  # (the decode step's scalar form where the perf model has one: bit-identical, no pass over lists)
        draft = engine._decode_fn(len(decode_ctxs))
        dt += cfg.spec_draft_cost_ratio * k_max * (draft(sum(decode_ctxs)) if draft
                                                   else engine.perf.step_time_s([], decode_ctxs))
    spec_items = [(req, (1 + k, a if a < k else k)) for (req, k, _), a in zip(spec, accepted)]
    return dt, plain, prefills + spec_items


def end_spec_decode(engine, req: Request, accepted: int, step: int, now_s: float) -> int:
    """Emit the accepted drafts plus the target's own token; roll back the rejected ones."""
    n = min(accepted + 1, req.output_len - req.num_output_tokens)
    req.num_computed_tokens += n  # the rejected drafts' KV slots are simply overwritten later
    engine.emit(req, step, now_s)
    runs = req.token_steps
    for _ in range(n - 1):  # several tokens at one step's end: one single-step run each
        runs.append(step)
        runs.append(step)
    req.num_output_tokens += n - 1
    return n


def spec_fast_forward(engine, now_s: float, out, dt0_s: float, plain: list[Request], prefills: list, ff,
                      chunk: int) -> bool:
    """Run step 0 (the step `speculate` just planned: `plain` decodes, then `prefills`: prompt
    chunks (req, tokens) and speculative decodes (req, (1 + k, accepted))) and the speculative
    decode steps that repeat it as one event. False, changing nothing, if the step is not one
    to repeat (a prompt not finished, a policy whose order may change, a prefix block still to
    register) or fewer than two steps would be safe. Step 0 keeps `scheduled`'s order, the
    later steps the policy's `repeat_order` (a re-sort by a key decodes do not change), up to
    its `repeat_order_limit`. A prompt in progress is repeated only where `chunk` gives its
    next chunks, the budget the decodes leave (`Engine._repeats_chunk`: the stretch then runs
    them beside the speculative decodes until its last chunk, `SpecStretch.prompt`); its chunk
    in step 0 may be larger, beside a prompt finishing there that decodes from step 1 (Sarathi's
    shared step, `Scheduler.shares_chunk`)."""
    bs = engine.kv.block_size
    for req, n in out.scheduled:  # a prefix block still to register would be registered by stepping only
        keys = req.kv_block_keys  # (a prompt in progress took its keys at admission: `Scheduler.repeats_chunk`)
        if (keys and len(keys) * bs > req.prompt_len + req.num_output_tokens
                and req.num_computed_tokens + n >= req.num_tokens):
            return False
    sched = engine.scheduler
    step0 = {id(r): (r, 1, 1, 0) for r in plain}
    prompt = None  # (the prompt in progress, its chunk) of a chunk stretch
    for req, n in prefills:
        left = req.output_len - req.num_output_tokens
        if type(n) is tuple:  # a speculative decode: it emits its accepted drafts + 1
            e = left if left < (e := n[1] + 1) else e
            step0[id(req)] = (req, e, e, 2)
        elif n == req.prompt_len + req.num_output_tokens - req.num_computed_tokens and (ff.after_prefill or chunk):
            step0[id(req)] = (req, n, 1, 1)  # (with `chunk`: the policy vouches it decodes from step 1)
        elif prompt is None and chunk:
            if req.num_computed_tokens + n + chunk >= req.num_tokens:
                return False  # (step 1 would run its last chunk: nothing to repeat)
            prompt = (req, chunk, n - chunk)  # (the policy vouches its chunks allocate and register nothing)
        else:
            return False  # a prompt still in progress gets a chunk, not a decode, next step
    step0_reqs = [r for r, _ in out.scheduled]
    if prompt is not None:
        step0_reqs = [r for r in step0_reqs if r is not prompt[0]]
    order = sched.repeat_order(out)  # (after the cheaper checks: a policy may sort here)
    if order is None:
        return False  # the repeated steps may list the batch in another order: another draw each
    if prompt is not None:
        order = [r for r in order if r is not prompt[0]]
    batch = [step0[id(r)] for r in step0_reqs]  # step 0's order (its finishes are listed in it)
    if order == step0_reqs:  # (the usual case: the same order, the same objects)
        order = range(len(batch))
    else:  # the later steps' order (`Scheduler.repeat_order`)
        index = {id(r): i for i, r in enumerate(step0_reqs)}
        order = [index.get(id(r)) for r in order]
        if len(order) != len(batch) or None in order:
            return False  # (not the batch's requests: nothing to repeat)
    # (a finish ends a chunk stretch: the next chunk takes the budget the finished decode left)
    through = (prompt is None and engine.defer_finishes and engine.notice is None and ff.through_finishes
               and ff.finish_timer_s == math.inf and not any(r.kv_block_keys for r, *_ in batch)
               and not (engine.kv.through_in_order and engine.kv.evictable_blocks))  # (radix finishes: in order)
    if not through and any(e == r.output_len - r.num_output_tokens for r, _, e, _ in batch):
        return False  # (a finish in step 0 would end the stretch there)
    if (engine.lookahead == 1 and engine.next_event_s() <= now_s + dt0_s
            and not engine.arrival_keeps(prompt is not None, None)):
        return False  # a lone replica's next arrival comes during step 0 and would cut there
    until_s, max_steps = sched.repeat_order_limit(out)
    max_steps = min(max_steps, ff.max_steps)  # (the policy's cap: `FastForward.max_steps`)
    if prompt is not None:  # steps 0 .. K - 1 give it full chunks (step 0 `extra0` more) and leave it unfinished
        req, chunk, extra0 = prompt
        max_steps = min(max_steps, -(-(req.num_tokens - req.num_computed_tokens - extra0) // chunk) - 1)
    st = SpecStretch(engine, now_s, out, batch, order, dt0_s, through, until_s, max_steps, prompt)
    st.price(engine._own_horizon_s())  # (up to the next event anywhere: `SpecStretch.price`)
    if st.k < 2:
        return False
    engine.stretch = st
    engine._schedule_stretch_end(st)
    return True
