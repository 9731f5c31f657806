"""What a speculative decoding step's drafts and verify pass cost, priced by the work they do
(`EngineConfig.spec_draft_layers` > 0; pure functions of a `PerfModel`).

The verify pass itself is `step_time_s` over (1 + k)-token chunks: the target's layers over every
verified token and attention over 1 + k query tokens per sequence. Two things it does not count:
- the logits: the target computes them for every verified token (each draft is checked against
  its own position's distribution), not one per sequence as a plain step (TensorRT-LLM's MTP
  verifies all draft positions in one target forward: its "DeepSeek R1 MTP Implementation and
  Optimization" blog; vLLM's and SGLang's verify likewise sample from every position);
- the drafts: an MTP / EAGLE head is one (or a few) transformer layers of the target's shape run
  once per draft token over the batch, plus the shared LM head (DeepSeek-V3's MTP module is one
  decoder layer sharing the embedding and output head: the DeepSeek-V3 technical report, §2.2).
Drafting is priced as `draft_layers` average layers of the target (its linear work, per-layer
floor and all-reduces: `_token_s / num_layers`), their attention over the batch's contexts, and
one LM head GEMM, per draft token. With attention data parallelism the ranks draft in lock-step: the
busiest rank's drafts and logits, on the rank's model (the MTP layer's experts priced as its own).
The CPU side of the step is unchanged (the drafts run in the
same graph), so these add to the step time as the ratio's draft term does.
"""

from __future__ import annotations

from typing import Sequence


def verify_logits_s(pm, num_seqs: int, extra_rows: int) -> float:
    """The LM head's extra time for `extra_rows` verified drafts beyond one row per sequence."""
    if extra_rows <= 0:
        return 0.0
    t = pm.terms
    return t.lm_head_gemm_s(num_seqs + extra_rows) - t.lm_head_gemm_s(num_seqs)


def draft_s(pm, draft_layers: int, k: int, ctxs: Sequence[int]) -> float:
    """`k` draft passes of a `draft_layers`-layer head over a batch with contexts `ctxs`."""
    n = len(ctxs)
    if n == 0 or k <= 0:
        return 0.0
    t = pm.terms
    per_layer = pm._token_s(n) / t.model.num_layers + t.decode_s_per_ctx_token() * sum(ctxs)
    return k * (draft_layers * per_layer + t.lm_head_gemm_s(n))


def spec_work_s(pm, draft_layers: int, k_max: int, num_seqs: int, drafts: int, ctxs: Sequence[int]) -> float:
    """What a speculative step adds to its verify pass: the logits of its `drafts` verified drafts
    beside `num_seqs` sequences, and `k_max` draft passes over the decodes with contexts `ctxs`."""
    return verify_logits_s(pm, num_seqs, drafts) + draft_s(pm, draft_layers, k_max, ctxs)
