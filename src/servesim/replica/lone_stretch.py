"""A new prompt alone on its replica, planned as a stretch of one request.

At many replicas most arrivals find their replica idle (a least-requests router picks an idle
one whenever there is one): step 0 computes the prompt, and the stretch after it decodes that
one request to its last token. `Engine._fast_forward` plans it as any batch (lists of one
request, the finish and admission rules, pricing by chunks sized to the horizon); here the
shape is known, so the plan is what that path would make, made directly: the same `Stretch`
(joins, cuts and router reads treat it as any other), its whole run priced at once from the
forms' table of one request's step times (`StretchPricing.price_lone`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servesim.replica.block_keys import BlockKeys
from servesim.replica.schedulers.base import FastForward, SchedulerOutput
from servesim.replica.stretch import Stretch
from servesim.workload.request import Request

if TYPE_CHECKING:
    from servesim.replica.engine import Engine

LONGEST = 1 << 15  # (a longer run is priced chunk by chunk, as `_chunk` caps one)


def lone_fast_forward(engine: "Engine", now_s: float, out: SchedulerOutput, prefills: list[tuple[Request, int]],
                      ff: FastForward, dt0_s: float) -> bool | None:
    """`Engine._fast_forward` for `prefills`, one prompt that step 0 completes alone in its
    batch (`Engine._start_lone`), when its finish may be processed late (`through`: then that
    path admits nothing inside the stretch) and it has no prefix keys: the stretch that path
    would plan, in flight (True), or False where it would plan none. None, changing nothing:
    not this case (the general path decides)."""
    (req, n), = prefills
    keys = req.kv_block_keys
    if keys is not None and (keys.num_blocks if type(keys) is BlockKeys else keys):
        return None
    if not (engine.defer_finishes and ff.through_finishes) or (
            engine.notice is not None and engine.scheduler.arrival_reads_finishes) or (
            engine.kv.through_in_order and engine.kv.evictable_blocks):
        return None  # (evictable radix blocks: the general path's stretch applies its finishes in order)
    kmax = req.output_len  # its tokens to emit (none yet), step 0's included: its steps
    if ff.max_steps < kmax:
        kmax = ff.max_steps
    forms = engine._decode_forms(1)
    if not 2 <= kmax <= LONGEST or forms is None:
        return None
    end0 = now_s + dt0_s
    horizon_s = engine._stretch_horizon_s(now_s, end0)
    if horizon_s <= end0:
        return False  # step 1 would start at or after the horizon
    ctx1 = [req.num_computed_tokens + n]
    reqs = [req]
    st = Stretch(now_s, end0, out, [], prefills, reqs, ctx1, [req.output_len], True, engine._decode_fn, engine.perf,
                 engine.scheduler.num_waiting, engine._decode_forms, [])
    st.kmax = kmax
    st.price_lone(horizon_s)  # (k >= 2: step 1 starts at end0, before the horizon)
    return engine._launch(st, reqs, ctx1)
