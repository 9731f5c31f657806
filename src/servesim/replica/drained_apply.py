"""A stretch that arrivals joined and that every request left: applied without the general passes.

At many replicas an arrival at an idle replica starts a lone stretch, and the arrivals that
reach that replica while it runs join it (`replica/stretch_join.py`); when nothing else comes,
the stretch runs until its last request's last token (8 replicas, the Azure trace: 4,201 of the
11,206 stretches applied, every one of them this shape). `FastForwarding._apply_stretch` then
runs its general passes: each request's steps clipped to the stretch, the finishes picked out and
sorted, the blocks each frees read through `freed_blocks`' function, the decodes advanced, the
stalls', chunk joins' and registrations' branches asked. Here every request finished inside
the stretch, so each ran exactly its `remaining` steps and the finish order is the departure
order; the same updates are made in the same order, with the same floats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servesim.metrics.recorder import BlockGrowth
from servesim.replica.token_advance import apply_joins, apply_step0_prompts
from servesim.workload.request import Request

if TYPE_CHECKING:
    from servesim.replica.engine import Engine
    from servesim.replica.stretch import Stretch


def is_drained(st: "Stretch") -> bool:
    """Is `st` (a plain `Stretch`) that shape: one prompt from step 0 and requests that joined,
    no decodes, prefix keys, prompt-only steps, chunk joins or rests, every join step taken
    and every request's last token inside it (`through`)?"""
    return (st.through and st.joins and not (st.decodes or st.keyed or st.stalls or st.prompt_runs or st.rests
                                              or st.join_shared)
            and st._sorted_rem[-1] <= st.k and st.joins[-1][0] < st.k and len(st.prefills) == 1)


def apply_drained(engine: "Engine", st: "Stretch") -> list[Request]:
    """`_apply_stretch` for a stretch `is_drained` accepts: the requests advanced, their blocks
    grown and the step log written as that path does; returns them in finish order."""
    kv, recorder = engine.kv, engine.recorder
    ends, k, reqs, remaining, first_new = st.ends, st.k, st.reqs, st.remaining, st.first_new
    bs = kv.block_size
    first = recorder.num_steps
    # each request ran its `remaining` steps (all <= k): blocks at steps f, f + bs, ... below it
    new_blocks = [(req, (m - f - 1) // bs + 1) for req, f, m in zip(reqs, first_new, remaining) if f < m]
    order = sorted(range(len(reqs)), key=remaining.__getitem__)  # finish order (then running order), as stepping
    # a request that finished before the last step frees all it holds after its last step
    held = kv.num_blocks_of
    frees = [(m, held(reqs[i].id) + ((m - f - 1) // bs + 1 if (f := first_new[i]) < m else 0))
             for i in order if (m := remaining[i]) < k]
    joined = kv.num_blocks_list([req for _, req, _ in st.joins])
    prefill_tokens = apply_step0_prompts(st.prefills, remaining, first, ends)
    prefill_at = apply_joins(st, remaining, first, frees, joined)
    kv_used = BlockGrowth(kv.num_gpu_blocks - st.free_blocks, first_new, remaining, bs, frees)
    kv.allocate_plain_many(new_blocks)  # (no registration: nothing has prefix keys)
    done = [reqs[i] for i in order]
    for i in order:
        reqs[i].finish_s = float(ends[remaining[i] - 1])
    engine.num_steps += k
    engine.num_fast_forwarded_steps += k
    recorder.log_decode_steps(st.start_s, ends, st.batch_runs(), st.num_waiting, kv_used, prefill_tokens,
                              [j for j in st.waiting_from if j < k], prefill_at=prefill_at)
    return done
