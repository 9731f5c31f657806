"""Attention data parallelism: `dp` attention ranks stepping in lock-step over one MoE.

vLLM (`--data-parallel-size N --enable-expert-parallel`), SGLang (`--enable-dp-attention`) and
TensorRT-LLM (`enable_attention_dp`) run a MoE model as `dp` attention ranks, each a TP group of
`tp` GPUs with its own scheduler and KV cache, while the routed experts are divided over all
`tp x dp` GPUs. Per layer, every rank runs attention and the dense parts on its own tokens, then
all ranks exchange hidden states and run the experts on every rank's tokens. So:

- weights per GPU: attention, dense FFN, shared experts and embeddings split over `tp` (replicated
  on every rank), the routed experts over `tp x dp`;
- KV per token per GPU: as at TP `tp` (heads split over the rank's TP group), holding only the
  rank's own requests;
- step time: the slowest rank's attention and dense time on its own batch, plus the MoE GEMMs on
  all ranks' tokens (experts over `tp x dp` GPUs) and the exchange; the ranks are in lock-step
  because every MoE layer is a collective. A rank with nothing scheduled still runs a one-token
  dummy batch so the collectives match (vLLM's `execute_dummy_batch`, TensorRT-LLM's attention-DP
  dummy requests).
- exchange: without a dedicated all-to-all library the engines all-gather the ranks' hidden
  states before the experts and reduce-scatter the outputs after them (vLLM's default
  `allgather_reducescatter` all2all backend, TensorRT-LLM's attention-DP all-gather /
  reduce-scatter): two collectives per MoE layer over the dp ranks, each a launch plus dp - 1
  ring hops and (dp - 1) / dp of all ranks' hidden states over the link (the TP ranks inside a
  rank hold the same tokens, so the ring is over the dp ranks: a modelling choice).
- padding: every rank runs the same token count through the MoE, the largest rank's (vLLM pads
  each DP rank to the maximum across ranks, `num_tokens_across_dp`, so that the collectives and
  CUDA graphs match; TensorRT-LLM's attention-DP CUDA graphs pad the same way), so the experts
  see dp x the largest rank's tokens.
- engine CPU time: every rank has its own engine core; the step's CPU time is the busiest rank's.
- fitted (constants `dp_step_s`, `dp_seq_s`; 0 by default): GPU time per lock-step step and per
  sequence of the padded batch (dp x the largest rank's sequences) that the terms above do not
  price (docs/fidelity-history.md).

`AttentionDPPerf` keeps the `PerfModel` interface the replica uses and holds no state between
calls (its memos are exact functions of their keys). The attention-DP scheduler
(replica/attention_dp.py) returns each step's per-rank split with the step
(`SchedulerOutput.rank_batches`) and the engine prices it with `lockstep_step_time_s(batches)`;
`step_time_s(prefills, decode_ctxs)`, which carries no rank (planning, estimates), deals the
sequences round robin over the ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from servesim.errors import InputError
from servesim.perf.hardware import ACTIVATION_BYTES
from servesim.perf.models import ModelSpec, embedding_params, expert_params, total_params
from servesim.perf.perf_model import PerfModel
from servesim.perf.terms import LM_HEAD_BYTES, StepTerms, allreduce_with_s

RankBatch = tuple[Sequence[tuple[int, int]], Sequence[int]]  # (prefill chunks, decode contexts) of one rank
DUMMY_BATCH: RankBatch = ((), (0,))  # an idle rank's one-token forward pass


def dp_weight_bytes_per_gpu(m: ModelSpec, weight_bytes: float, tp: int, dp: int) -> int:
    """Weights per GPU with attention DP: routed experts over tp x dp GPUs, the rest over tp."""
    routed = m.num_moe_layers * m.moe.num_experts * expert_params(m) if m.moe is not None else 0
    rest = total_params(m) - embedding_params(m) - routed
    return int((rest / tp + routed / (tp * dp)) * weight_bytes + embedding_params(m) / tp * LM_HEAD_BYTES)


def round_robin_split(prefills: Sequence[tuple[int, int]], decode_ctxs: Sequence[int], dp: int) -> list[RankBatch]:
    """Sequences dealt over `dp` ranks in turn (prefills first): the balanced split."""
    seqs = [("p", p) for p in prefills] + [("d", c) for c in decode_ctxs]
    out: list[RankBatch] = []
    for r in range(dp):
        mine = seqs[r::dp]
        out.append(([p for k, p in mine if k == "p"], [c for k, c in mine if k == "d"]))
    return out


def batch_tokens(batch: RankBatch) -> int:
    prefills, ctxs = batch
    return sum(n for n, _ in prefills) + len(ctxs)


@dataclass(eq=False)
class AttentionDPPerf:
    """Step times of a replica of `dp` attention ranks (see the module docstring).

    rank: the PerfModel of one rank (TP `tp`, weights per GPU as with DP, so its KV sizing is the
    rank's); moe_terms: the step terms at TP `tp x dp`, used for the routed experts only.
    Attributes not defined here (KV sizing, byte counts, names) are the rank model's.
    """

    rank: PerfModel
    moe_terms: StepTerms
    data_parallel_size: int
    data_parallel_balance: str = "auto"  # PerfConfig.data_parallel_balance (read by replica/attention_dp.py)
    _rank_tok: dict[int, float] = field(default_factory=dict, repr=False)  # exact memo: rank tokens -> time
    _moe_tok: dict[int, float] = field(default_factory=dict, repr=False)  # exact memo: all tokens -> time

    def __getattr__(self, name: str):
        if name.startswith("_") or name == "rank":
            raise AttributeError(name)
        return getattr(self.rank, name)

    # ---- the lock-step step --------------------------------------------------------------
    def step_time_s(self, prefills: Sequence[tuple[int, int]], decode_ctxs: Sequence[int], num_verify: int = 0) -> float:
        """A step of these sequences dealt round robin over the ranks (no split known: planning,
        estimates); the engine prices its steps' real split with `lockstep_step_time_s`. The last
        `num_verify` prefills are verify chunks (`PerfModel.step_time_s`): each rank's count of them."""
        dp = self.data_parallel_size
        batches = round_robin_split(prefills, decode_ctxs, dp)
        first = len(prefills) - num_verify  # (prefills are dealt first: rank r gets indices r, r + dp, ...)
        verify = [sum(1 for i in range(r, len(prefills), dp) if i >= first) for r in range(dp)] if num_verify else None
        return self.lockstep_step_time_s(batches, verify)

    def lockstep_step_time_s(self, batches: Sequence[RankBatch], verify: Sequence[int] | None = None) -> float:
        """One lock-step iteration: the slowest rank's own part, then the MoE on all tokens.
        verify: per rank, how many of its last prefill chunks are speculative verify chunks (they pay
        no prompt-only term, as in `PerfModel.step_time_s`); None: none."""
        if len(batches) != self.data_parallel_size:
            raise ValueError(f"{len(batches)} rank batches for data_parallel_size {self.data_parallel_size}")
        if not any(p or c for p, c in batches):
            return 0.0
        rank, t = self.rank, self.rank.terms
        slowest = cpu = 0.0
        largest = most_seqs = 0
        for r, batch in enumerate(batches):
            prefills, ctxs = batch if (batch[0] or batch[1]) else DUMMY_BATCH
            n = batch_tokens((prefills, ctxs))
            seqs = len(prefills) + len(ctxs)
            gpu = self._rank_token_s(n) + rank._logits_s(seqs) + rank._g_full * sum(ctxs)
            if verify is not None and verify[r]:
                gpu += rank._verify_chunks_s(prefills, verify[r], len(ctxs))
            elif prefills:
                gpu += rank._prefill_attention_s(prefills, n - len(ctxs)) + rank._mixed_s(n - len(ctxs), len(ctxs))
            if rank._window is not None:
                gpu += rank._g_win * sum(min(c, rank._window) for c in ctxs)
            slowest = max(slowest, gpu)
            cpu = max(cpu, t.cpu_s(seqs, n))
            largest, most_seqs = max(largest, n), max(most_seqs, seqs)
        c, dp = t.c, self.data_parallel_size
        gpu = slowest + self._moe_token_s(largest * dp) + c.dp_step_s + c.dp_seq_s * dp * most_seqs
        return max(gpu, cpu) if rank._overlap else gpu + cpu

    def _rank_token_s(self, n: int) -> float:
        """A rank's own per-token work: attention and dense GEMMs, element-wise ops, TP all-reduces."""
        v = self._rank_tok.get(n)
        if v is None:
            t = self.rank.terms
            m = t.model
            v = t.linear_s(n, moe=False) + t.other_s(n)
            if t.tp > 1:  # after attention in every layer, after the FFN in the dense layers
                ar = allreduce_with_s(n * m.hidden_size * ACTIVATION_BYTES, t.tp, t.gpu.scaleup_bw_bytes_s,
                                      t.gpu.scaleup_latency_s, t.c)
                v += (m.num_layers + m.num_dense_ffn_layers) * ar
            self._rank_tok[n] = v
        return v

    def _moe_token_s(self, n: int) -> float:
        """The routed experts on `n` tokens (all ranks', padded) and their all-gather / reduce-scatter."""
        v = self._moe_tok.get(n)
        if v is None:
            t = self.moe_terms
            m, c, g = t.model, t.c, t.gpu
            dp = self.data_parallel_size
            one = c.ar_launch_s + (dp - 1) * g.scaleup_latency_s + (dp - 1) / dp * n * m.hidden_size * ACTIVATION_BYTES \
                / (c.ar_bw_eff * g.scaleup_bw_bytes_s)  # the all-gather, or the reduce-scatter
            v = self._moe_tok[n] = t.linear_s(n, moe=True) + m.num_moe_layers * 2.0 * one
        return v

    def step_breakdown(self, prefills, decode_ctxs):
        """Not split by term with attention DP (the rank model's breakdown would not be this step's)."""
        raise InputError("a step-time breakdown is not available with attention data parallelism (data_parallel_size > 1)")

    # ---- the PerfModel fast paths: none (the step depends on the split, not the sums) -----
    def decode_step_times_s(self, ctxs: np.ndarray, k: int) -> np.ndarray:
        ctxs = [int(c) for c in np.asarray(ctxs)]
        return np.array([self.step_time_s([], [c + j for c in ctxs]) for j in range(max(k, 0))], dtype=np.float64)

    def decode_time_fn(self, num_seqs: int):
        return None

    def decode_affine(self, num_seqs: int):
        return None

    def verify_step_times_s(self, num_seqs: int, tokens_per_seq: int, ctx_sums: np.ndarray):
        return None

    def verify_time_fn(self, num_seqs: int, tokens_per_seq: int):
        return None

    def verify_sums_time_fn(self):
        return None

    def chunk_verify_time_fn(self, num_seqs: int, tokens_per_seq: int, chunk: int):
        return None  # (not the rank's form, which `__getattr__` would hand out: the ranks' split decides)


def build_attention_dp(rank: PerfModel, weight_bytes: float, dp: int, moe_ep: int, balance: str = "auto") -> AttentionDPPerf:
    """The DP replica's model from one rank's PerfModel (TP `tp`); InputError for what it cannot be."""
    t = rank.terms
    m = t.model
    if m.moe is None:
        raise InputError(f"data_parallel_size {dp} needs a MoE model ({m.name} is dense: use replicas instead)")
    if rank.pp != 1:
        raise InputError(f"data_parallel_size {dp} with pp {rank.pp}: pipeline parallelism with attention DP is not modelled")
    ranked = replace(rank, weight_bytes_per_gpu=dp_weight_bytes_per_gpu(m, weight_bytes, rank.tp, dp), _tok={}, _logit={})
    moe_terms = replace(t, tp=t.tp * dp, moe_ep=moe_ep)
    return AttentionDPPerf(ranked, moe_terms, dp, balance)
