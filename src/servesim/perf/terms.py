"""Step-time terms precomputed from (model, GPU, dtype, parallelism, constants).

`StepTerms` turns the formulas of shared/specs/perf-model.md §4 into per-token and
per-sequence coefficients once, so the per-step work is a few multiplications and memo lookups.
Times cover the whole pipeline (all layers run one after the other on their stages).
"""

from __future__ import annotations

from dataclasses import dataclass

from servesim.errors import InputError
from servesim.perf import roofline
from servesim.perf.calibration import Constants
from servesim.perf.hardware import ACTIVATION_BYTES, DtypeSpec, GPUSpec
from servesim.perf.models import (ModelSpec, attention_params, dense_ffn_params, expert_params, kv_elements_per_token_layer,
                                  linear_attention_params, linear_state_bytes_per_seq)
from servesim.perf.roofline import smooth_roofline_sum_s
from servesim.sums import left_sum

LM_HEAD_BYTES = 2.0  # embeddings and LM head stay 16-bit in quantised checkpoints
DELTA_CHUNK = 64  # FLA's chunk for the chunked delta rule (chunk_gated_delta_rule, FLA_CHUNK_SIZE = 64)


@dataclass(frozen=True)
class Block:
    """A group of identical GEMM blocks: `count` layers each holding `weight_elems` weights per GPU."""

    count: int
    weight_elems: float  # per GPU, always read
    flops_per_token: float  # per GPU
    act_bytes_per_token: float  # activation traffic per token
    moe: bool = False  # weight reads depend on which experts the tokens touch


@dataclass(frozen=True)
class StepTerms:
    """Everything a step time needs that does not depend on the batch."""

    model: ModelSpec
    gpu: GPUSpec
    dtype: DtypeSpec
    kv_bytes: float  # KV element size
    tp: int
    pp: int
    c: Constants
    moe_ep: int = 1  # MoE expert-parallel ranks; each expert is split over moe_tp = tp // moe_ep ranks
    moe_a2a: bool = True  # expert parallelism dispatches tokens by all-to-all (else: all-reduce, as all-TP)

    @property
    def moe_tp(self) -> int:
        return self.tp // self.moe_ep

    # ---- linear layers -------------------------------------------------------------------
    def token_terms(self) -> "TokenTerms":
        """The per-token terms (`TokenTerms`), built once (a function of the frozen fields): `linear_s`,
        `other_s` and `PerfModel._token_s` read them at every token count the perf model has not
        priced yet, which a sessions turn is (its prompt beside the running decodes) and about one
        arrival in five at one replica, and building the GEMM blocks was about two thirds of
        `linear_s` (sess21)."""
        try:  # (not `self.__dict__.get`: on CPython 3.11 reading `__dict__` moves the attributes to a dict for good, reg32)
            return self._token_terms  # type: ignore[attr-defined]
        except AttributeError:
            memo = TokenTerms(self)
            object.__setattr__(self, "_token_terms", memo)  # (not a field: equality and `replace` ignore it)
            return memo

    def blocks(self) -> list[Block]:
        """The GEMM blocks of one GPU, attention first and the MoE block (at most one) last: the order
        `linear_s` sums them in (`TokenTerms` takes them once; `linear_compute_memory_s` for reports)."""
        m, t, a = self.model, self.tp, ACTIVATION_BYTES
        h = m.hidden_size
        attn = attention_params(m) / t
        out = [Block(m.num_attention_layers, attn, 2.0 * attn, a * (2 * h + attn / h))]
        if m.linear_attention is not None:  # the Gated DeltaNet layers' own projections
            lin = linear_attention_params(m) / t
            out.append(Block(m.num_linear_layers, lin, 2.0 * lin, a * (2 * h + lin / h)))
        if m.num_dense_ffn_layers:
            ffn = dense_ffn_params(m) / t
            out.append(Block(m.num_dense_ffn_layers, ffn, 2.0 * ffn, a * (2 * h + ffn / h)))
        if m.moe is not None:
            e = expert_params(m) / t
            active = (m.moe.top_k * self.c.moe_imbalance + m.moe.num_shared_experts) * e
            out.append(Block(m.num_moe_layers, m.moe.num_shared_experts * e + h * m.moe.num_experts / t,
                             2.0 * active, a * (2 * h + active / h), moe=True))
        return out

    def eta_compute_at(self, num_tokens: int) -> float:
        """Achieved share of peak FLOP/s by the step's GEMMs (M = num_tokens rows).

        eta_compute, or with eta_compute_large_m set: eta_compute + (large - eta_compute) * M / (M + M_half).
        Why: a GEMM's output tiles are spread over the SMs; with a few hundred rows most SMs idle or
        run one partial wave, with thousands every SM runs several full waves. The saturating form
        and its half point are a modelling choice (one constant per GPU and engine), not a tile model.
        """
        c = self.c
        if c.eta_compute_large_m <= 0.0:
            return c.eta_compute
        return c.eta_compute + (c.eta_compute_large_m - c.eta_compute) * num_tokens / (num_tokens + c.gemm_m_half_tokens)

    def linear_s(self, num_tokens: int, moe: bool | None = None) -> float:
        """GEMM time of all layers for `num_tokens` tokens (`TokenTerms.linear_s`).

        moe: None prices every block plus the per-layer floor; False only the attention and dense
        blocks plus the floor; True only the MoE blocks (attention data parallelism prices the two
        on different token counts: perf/attention_dp.py)."""
        return self.token_terms().linear_s(num_tokens, moe)

    def expert_weights_read(self, num_tokens: int) -> float:
        """Routed-expert weights (elements) one GPU reads in a MoE layer for `num_tokens` tokens.

        All-TP: every GPU reads its 1/tp slice of each touched expert. Expert parallelism: a GPU
        reads the whole-expert slices (1/moe_tp) of the touched experts it holds, and the layer
        waits for the busiest rank (`roofline.experts_touched_busiest_rank`), which at a few tokens
        per step draws well above the mean."""
        m = self.model
        assert m.moe is not None
        if self.moe_ep == 1:
            touched = roofline.experts_touched(m.moe.num_experts, m.moe.top_k, num_tokens)
            return touched * expert_params(m) / self.tp
        busiest = roofline.experts_touched_busiest_rank(m.moe.num_experts, m.moe.top_k, num_tokens, self.moe_ep)
        return busiest * expert_params(m) / self.moe_tp

    def moe_copy_s_per_token(self) -> float:
        """HBM time per step token of one MoE layer's expanded rows (`moe_copy_bytes`, 0.0 when off or
        for a dense model): top_k rows of hidden elements per token, divided over the expert-parallel
        ranks, not over the experts' TP split (each GPU's partial rows are hidden wide)."""
        m, c = self.model, self.c
        if m.moe is None or not c.moe_copy_bytes:
            return 0.0
        return m.moe.top_k * m.hidden_size * c.moe_copy_bytes / self.moe_ep / (c.eta_memory * self.gpu.hbm_bw_bytes_s)

    def linear_compute_memory_s(self, num_tokens: int) -> tuple[float, float]:
        """The compute and memory sides of `linear_s` (for reporting the regime)."""
        c, g = self.c, self.gpu
        peak_c = self.eta_compute_at(num_tokens) * g.peak_flops[self.dtype.compute]
        blocks = self.blocks()
        flops = left_sum(b.count * b.flops_per_token * num_tokens for b in blocks if not (b.moe and c.eta_moe_compute))
        moe_flops = left_sum(b.count * b.flops_per_token * num_tokens for b in blocks if b.moe and c.eta_moe_compute)
        compute_s = flops / peak_c + (moe_flops / (c.eta_moe_compute * g.peak_flops[self.dtype.compute]) if moe_flops else 0.0)
        bytes_ = left_sum(b.count * (b.weight_elems * self.dtype.weight_bytes + b.act_bytes_per_token * num_tokens)
                          for b in blocks)
        return compute_s, bytes_ / (c.eta_memory * g.hbm_bw_bytes_s)

    # ---- memory-bound element-wise work, KV writes, LM head ---------------------------------
    def ffn_width(self) -> float:
        """Per-GPU FFN activation width of a token (dense width, or top_k experts for MoE)."""
        m = self.model
        if m.moe is not None and not m.num_dense_ffn_layers:
            return (m.moe.top_k + m.moe.num_shared_experts) * m.moe.expert_intermediate_size / self.tp
        return m.intermediate_size / self.tp

    def other_s(self, num_tokens: int) -> float:
        """Norms, RoPE, activation function, residuals and the KV write of the new tokens
        (`TokenTerms.other_s`)."""
        return self.token_terms().other_s(num_tokens)

    # ---- linear-attention (Gated DeltaNet) layers ------------------------------------------
    def linear_state_s(self, num_seqs: int) -> float:
        """Reading and writing each sequence's recurrent and convolution state once per step in every
        linear-attention layer: a decode's recurrent update (fused_recurrent / fused_sigmoid_gating
        kernels) and a prompt chunk's initial and final state; at the KV read bandwidth. 0 without
        linear layers."""
        per_seq = linear_state_bytes_per_seq(self.model, self.tp, ACTIVATION_BYTES)
        return 2.0 * per_seq * num_seqs / (self.c.eta_attn_memory * self.gpu.hbm_bw_bytes_s)

    def linear_prefill_s_per_token(self) -> float:
        """All linear-attention layers' chunked delta rule (FLA's chunk_gated_delta_rule) per prompt
        token: work linear in the prompt, quadratic only inside a chunk of DELTA_CHUNK tokens.

        Per token and value head: FLOPs 2C(3 dk + 2 dv) inside the chunk (K K^T, Q K^T, the WY
        products A K and A V, the masked scores times the new values) and 6 dk dv against the chunk's
        state (W S, Q S, the state update K^T V); HBM bytes for q, k, v and the kernels' intermediates
        (w, u, the new values, the output, in 16 bit: 2 (6 dk + 6 dv); the chunk matrix A in fp32:
        3 x 4C) and the per-chunk states written then read (2 x 2 dk dv / C). Attention-kernel
        efficiencies: the same 16-bit tensor-core and memory shares as the attention layers."""
        m = self.model
        la = m.linear_attention
        if la is None:
            return 0.0
        dk, dv, cs = la.key_head_dim, la.value_head_dim, DELTA_CHUNK
        heads = la.num_value_heads / self.tp
        flops = heads * (2.0 * cs * (3 * dk + 2 * dv) + 6.0 * dk * dv)
        bytes_ = heads * (ACTIVATION_BYTES * (6 * dk + 6 * dv) + 3 * 4.0 * cs + 2 * ACTIVATION_BYTES * dk * dv / cs)
        per_layer = max(flops / self.attention_peak(), bytes_ / (self.c.eta_attn_memory * self.gpu.hbm_bw_bytes_s))
        return la.num_layers * per_layer

    def quantised_linears(self) -> int:
        """Linear layers of all layers that quantise their activation before the GEMM: the attention
        projections (MLA: the fused q_a / kv_a down-projection, q_b, kv_b and o, as TensorRT-LLM's
        DeepSeek runs them; else the fused QKV and o), a Gated DeltaNet layer's input and output
        projections, and the dense or shared-expert FFN's gate-up and down. The routed experts run in
        the fused MoE kernel, which quantises inside its own price."""
        m = self.model
        shared = m.moe is not None and m.moe.num_shared_experts > 0
        return (m.num_attention_layers * (4 if m.mla is not None else 2) + 2 * m.num_linear_layers
                + 2 * m.num_dense_ffn_layers + (2 * m.num_moe_layers if shared else 0))

    def act_quant_s_per_token(self) -> float:
        """Activation quantisation of every quantised linear per prompt token (`act_quant_token_s`; 0.0
        when off). Priced on prompt tokens only: the kernel tables it comes from show the cost at
        prefill sizes (a thousand tokens and up) and none at decode sizes (128 rows or fewer)."""
        return self.quantised_linears() * self.c.act_quant_token_s

    def prompt_token_gpu_s(self) -> float:
        """The flat GPU time per prompt token (`prompt_token_gpu_s`; 0.0 when off), the same whatever
        the model's layers and the TP."""
        return self.c.prompt_token_gpu_s

    def lm_head_s(self, num_logits: int) -> float:
        """LM head for the sequences that sample a token this step (16-bit, vocab split over TP), plus
        the GPU time per sequence `seq_gpu_s` (here so that every fast path that prices the step's
        sequences through this term keeps it; 0 by default, adding exactly nothing)."""
        if num_logits <= 0:
            return 0.0
        head = self.lm_head_gemm_s(num_logits)
        c = self.c
        if c.seq_gpu_s > 0.0:
            head += c.seq_gpu_s * num_logits
        return head

    def lm_head_gemm_s(self, rows: int) -> float:
        """The LM head's GEMM alone for `rows` hidden states (its kernel's floor included): what a
        speculative verify pays per extra verified token and a draft head per draft
        (`perf/spec_price.py`)."""
        m, c, g = self.model, self.c, self.gpu
        w = m.vocab_size * m.hidden_size / self.tp
        return roofline.smooth_roofline_s(2.0 * rows * w, w * LM_HEAD_BYTES, g.peak_flops["bf16"] if "bf16" in g.peak_flops else g.peak_flops["fp16"],
                                          g.hbm_bw_bytes_s, c.eta_compute, c.eta_memory, c.smoothing_k) + c.layer_floor_s

    # ---- communication -------------------------------------------------------------------
    def communication_s(self, num_tokens: int) -> float:
        """TP all-reduces (2 per layer, Megatron) or MoE all-to-alls, plus PP stage hand-offs."""
        m, c, g, t = self.model, self.c, self.gpu, self.tp
        msg = num_tokens * m.hidden_size * ACTIVATION_BYTES
        ar = allreduce_with_s(msg, t, g.scaleup_bw_bytes_s, g.scaleup_latency_s, c)
        total = m.num_layers * ar  # after attention
        if m.moe is not None and self.moe_ep > 1 and self.moe_a2a:
            total += m.num_dense_ffn_layers * ar + m.num_moe_layers * moe_communication_s(
                msg, m.moe.top_k, self.moe_tp, self.moe_ep, g.scaleup_bw_bytes_s, g.scaleup_latency_s, c)
        else:
            total += m.num_layers * ar  # after the FFN
        if self.pp > 1:
            total += (self.pp - 1) * roofline.p2p_s(msg, g.scaleup_bw_bytes_s * c.ar_bw_eff, g.scaleup_latency_s, c.ar_launch_s)
        return total

    # ---- attention -----------------------------------------------------------------------
    def attention_flops_per_pair(self) -> float:
        """Per layer per GPU: FLOPs of one query-key pair in prefill (QK^T and PV)."""
        m = self.model
        if m.mla is not None:
            qk, v = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim, m.mla.v_head_dim
        else:
            qk = v = m.head_dim
        return 2.0 * m.num_heads / self.tp * (qk + v)

    def attention_peak(self) -> float:
        # Attention kernels run in 16-bit in every supported precision.
        g = self.gpu
        return g.peak_flops.get("bf16", g.peak_flops.get("fp16", 0.0)) * self.c.eta_attn_compute

    def pair_s(self) -> float:
        """Prefill attention time per query-key pair, summed over the layers of one kind (per layer)."""
        return self.attention_flops_per_pair() / self.attention_peak()

    def kv_read_s_per_token(self) -> float:
        """Per layer: time to read one cached token's KV."""
        kv = kv_elements_per_token_layer(self.model, self.tp) * self.kv_bytes
        return kv / (self.c.eta_attn_memory * self.gpu.hbm_bw_bytes_s)

    def decode_s_per_ctx_token(self) -> float:
        """Per layer: decode attention time per context token (KV read or FLOPs, whichever binds).

        A decode kernel that is not GQA-aware reads each KV head once per query head of its group;
        `gqa_sharing` (1 = read once) is the engine's share of that reuse.
        """
        m = self.model
        if m.mla is not None:  # absorbed MLA: scores against the latent, then values from it
            flops = 2.0 * m.num_heads / self.tp * (2 * m.mla.kv_lora_rank + m.mla.qk_rope_head_dim)
            rereads = 1.0
        else:
            flops = 4.0 * m.num_heads / self.tp * m.head_dim
            rereads = 1.0 + (1.0 - self.c.gqa_sharing) * (m.num_heads // m.num_kv_heads - 1)
        return max(self.kv_read_s_per_token() * rereads, flops / self.attention_peak())

    def cpu_s(self, num_seqs: int, num_tokens: int) -> float:
        c = self.c
        return c.step_overhead_s + c.seq_overhead_s * num_seqs + c.token_overhead_s * num_tokens


class TokenTerms:
    """A step's per-token terms for one `StepTerms` (`StepTerms.token_terms()`, built once): `linear_s`
    and `other_s`, which `PerfModel._token_s` memoises with `communication_s` by token count. The
    only code that evaluates them: what does not depend on the token count is taken here once (the
    GEMM blocks' fields and weight bytes, the rooflines' denominators, the layers' floor, `other_s`'s
    bytes per token), so a token count the perf model has not priced yet (about one arrival in five
    at one replica) costs a few float operations. Slots, not a closure: a `PerfModel` still pickles."""

    __slots__ = ("_terms", "_peak", "_den_c", "_den_m", "_k", "_dense", "_moe", "_moe_den_c", "_copy", "_wb",
                 "_floor", "_other_layers", "_other_bytes", "_moe_floor")

    def __init__(self, t: StepTerms) -> None:
        m, c, g = t.model, t.c, t.gpu
        self._terms = t
        self._peak, self._k, self._wb = g.peak_flops[t.dtype.compute], c.smoothing_k, t.dtype.weight_bytes
        # The GEMMs' compute denominator: fixed, or per token count when the efficiency grows with it.
        self._den_c = c.eta_compute * self._peak if c.eta_compute_large_m <= 0.0 else None
        self._den_m = c.eta_memory * g.hbm_bw_bytes_s
        blocks = t.blocks()
        self._dense = tuple((b.count, b.flops_per_token, b.weight_elems * self._wb, b.act_bytes_per_token)
                            for b in blocks if not b.moe)
        self._moe = next((b for b in blocks if b.moe), None)  # (the last block: summed after the dense ones)
        # The MoE grouped GEMM's own efficiency when set (else the dense GEMMs'), and its finalize copy.
        self._moe_den_c = c.eta_moe_compute * self._peak if c.eta_moe_compute else None
        self._copy = t.moe_copy_s_per_token()
        self._moe_floor = c.moe_floor_s  # the fused MoE kernel's fixed time per layer (0.0: off)
        self._floor = m.num_layers * c.layer_floor_s
        kv_write = kv_elements_per_token_layer(m, t.tp) * t.kv_bytes
        elem_bytes = (10.0 * m.hidden_size + 3.0 * t.ffn_width()) * ACTIVATION_BYTES
        if m.linear_attention is not None:  # only the attention layers write KV (1 x n is n: main's n x bytes order)
            self._other_layers, self._other_bytes = 1, m.num_layers * elem_bytes + m.num_attention_layers * kv_write
        else:
            self._other_layers, self._other_bytes = m.num_layers, elem_bytes + kv_write

    def linear_s(self, n: int, moe: bool | None = None) -> float:
        """GEMM time of all layers for `n` tokens: a smoothed roofline per block (`StepTerms.linear_s`)."""
        dc = self._den_c
        if dc is None:  # (a GEMM efficiency growing with the token count)
            dc = self._terms.eta_compute_at(n) * self._peak
        total = 0.0 if moe else smooth_roofline_sum_s(self._dense, n, dc, self._den_m, self._k)
        b = self._moe
        if b is not None and moe is not False:
            weight_bytes = (b.weight_elems + self._terms.expert_weights_read(n)) * self._wb
            t_block = smooth_roofline_sum_s(((1, b.flops_per_token, weight_bytes, b.act_bytes_per_token),), n,
                                            self._moe_den_c or dc, self._den_m, self._k)
            if self._moe_floor:  # (only then: every deployment without it keeps its floats)
                t_block = (t_block**self._k + self._moe_floor**self._k) ** (1.0 / self._k)
            # The finalize copy is a separate kernel's traffic, so added to the GEMMs' roofline, not smoothed into it.
            total += b.count * (t_block + self._copy * n)
        return total if moe else total + self._floor

    def other_s(self, n: int) -> float:
        """Norms, RoPE, activation function, residuals and the KV write of `n` new tokens (`StepTerms.other_s`)."""
        return self._other_layers * n * self._other_bytes / self._den_m


def moe_split(tp: int, expert_parallel: bool, moe_tp_size: int | None, moe_ep_size: int | None) -> tuple[int, int]:
    """(moe_tp, moe_ep) of a MoE layer on a TP group of `tp` GPUs; InputError naming the allowed values.

    Unset sizes follow `expert_parallel` (all-EP: 1 x tp, else all-TP: tp x 1); one size set gives
    the other as tp // size (as TensorRT-LLM derives moe_tp_size); both set must multiply to tp.
    """
    if moe_tp_size is None and moe_ep_size is None:
        return (1, tp) if expert_parallel else (tp, 1)
    ep = moe_ep_size if moe_ep_size is not None else tp // moe_tp_size  # type: ignore[operator]
    mtp = moe_tp_size if moe_tp_size is not None else tp // ep
    divisors = [d for d in range(1, tp + 1) if tp % d == 0]
    if mtp < 1 or ep < 1 or mtp * ep != tp:
        got = " x ".join("unset" if v is None else str(v) for v in (moe_tp_size, moe_ep_size))
        raise InputError(f"moe_tp_size x moe_ep_size must equal tp {tp}, got {got}; "
                         f"allowed sizes: {', '.join(map(str, divisors))}")
    if expert_parallel and ep != tp:
        raise InputError(f"expert_parallel: true means moe_ep_size = tp ({tp}), got moe_ep_size {ep}; "
                         "drop expert_parallel or the MoE sizes")
    return mtp, ep


def allreduce_with_s(msg_bytes: float, ranks: int, link_bw_bytes_s: float, link_latency_s: float, c: Constants) -> float:
    """An all-reduce of `msg_bytes` over `ranks` GPUs with the deployment's all-reduce constants (launch, bandwidth
    efficiencies, one-shot custom all-reduce when `custom_allreduce` is on): the one place they are passed."""
    return roofline.allreduce_s(msg_bytes, ranks, link_bw_bytes_s, link_latency_s, c.ar_launch_s, c.ar_bw_eff,
                                one_shot=c.custom_allreduce >= 0.5, ring_bw_eff=c.ar_ring_bw_eff)


def moe_communication_s(msg_bytes: float, top_k: int, moe_tp: int, moe_ep: int, link_bw_bytes_s: float,
                        link_latency_s: float, c: Constants) -> float:
    """One MoE layer's communication on a moe_tp x moe_ep grid, every rank holding all tokens' hidden states.

    Dispatch and combine: an all-to-all of the tokens' top_k copies over the moe_ep ranks that hold
    different experts. Each expert's GEMMs are split over moe_tp ranks, whose partial outputs are
    summed by one all-reduce of the combined hidden states over those ranks (zero when moe_tp = 1,
    so 1 x N is exactly the all-EP term; N x 1 never reaches here: all-TP is the all-reduce path).
    """
    a2a = roofline.alltoall_s(msg_bytes * top_k, moe_ep, link_bw_bytes_s, link_latency_s, c.ar_launch_s, c.ar_bw_eff)
    ar = allreduce_with_s(msg_bytes, moe_tp, link_bw_bytes_s, link_latency_s, c)
    return 2.0 * a2a + ar  # dispatch + combine (+ the expert-TP all-reduce)
