"""`PerfModel`: step time, KV capacity and swap time for one (model, GPU, TP/PP, dtype, engine).

The step-time methods are here; KV capacity and data-movement times are inherited from
perf/memory.py, the forms of a prompt chunk's step beside decodes from perf/chunk_forms.py, the
speculative verify steps' forms from perf/spec_forms.py; building a model from names is perf/build.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from servesim.perf.calibration import Constants
from servesim.perf.chunk_forms import ChunkFormsMixin
from servesim.perf.hardware import GPUSpec
from servesim.perf.memory import MemoryMixin
from servesim.perf.models import ModelSpec
from servesim.perf.roofline import causal_attention_pairs
from servesim.perf.spec_forms import VerifyFormsMixin
from servesim.perf.terms import StepTerms


@dataclass(frozen=True)
class StepTime:
    """One iteration's time and where it goes (seconds)."""

    total_s: float  # == PerfModel.step_time_s for the same batch
    gpu_s: float  # linear + attention + communication + other
    linear_s: float  # GEMMs of all layers incl. the per-layer floor
    attention_s: float  # prefill attention FLOPs, cached-context reads, decode KV reads
    communication_s: float  # TP all-reduces / EP all-to-alls / PP hand-offs
    other_s: float  # element-wise ops, KV writes, LM head
    overhead_s: float  # engine CPU time (hidden behind the GPU when the engine overlaps)
    regime: str  # the dominant cost: compute, memory, attention, communication or overhead


@dataclass(frozen=True, eq=False)
class PerfModel(MemoryMixin, ChunkFormsMixin, VerifyFormsMixin):
    """Step-time model for one deployment; build it with `build_perf_model`. No I/O, no globals."""

    model_name: str
    gpu_name: str
    tp: int
    dtype: str
    pp: int
    engine: str
    kv_cache_dtype: str
    kv_bytes_per_token: int  # per GPU, all layers of the (largest) stage, after TP split/replication
    weight_bytes_per_gpu: int
    hbm_bytes: int
    constants: Constants
    terms: StepTerms = field(repr=False)
    misc_bytes: int = 1 << 30
    max_model_len: int | None = None  # the model's max_position_embeddings (None when the config omits it)
    graph_max_tokens: int = 0  # PerfConfig.cudagraph_max_tokens: steps above it run without CUDA graphs (0: not modelled)
    _tok: dict[int, float] = field(default_factory=dict, repr=False)  # exact memo: tokens -> time
    _logit: dict[int, float] = field(default_factory=dict, repr=False)  # exact memo: rows -> time

    def __post_init__(self) -> None:
        t = self.terms
        win_layers = t.model.num_window_layers if t.model.sliding_window else 0
        full_layers = t.model.num_attention_layers - win_layers  # (linear-attention layers keep no KV)
        per = t.decode_s_per_ctx_token()
        object.__setattr__(self, "_window", t.model.sliding_window if win_layers else None)
        object.__setattr__(self, "_g_full", full_layers * per)
        object.__setattr__(self, "_g_win", win_layers * per)
        object.__setattr__(self, "_pair_full", full_layers * t.pair_s())
        object.__setattr__(self, "_pair_win", win_layers * t.pair_s())
        object.__setattr__(self, "_kv_read", t.kv_read_s_per_token())
        object.__setattr__(self, "_layers", (full_layers, win_layers))
        # Per prompt token (0.0: none): the linear-attention layers' chunked prefill, the quantised linears'
        # activation quantisation and the flat `prompt_token_gpu_s` (x + 0.0 is x, so any alone keeps its floats).
        object.__setattr__(self, "_lin_tok", t.linear_prefill_s_per_token() + t.act_quant_s_per_token()
                           + t.prompt_token_gpu_s())
        object.__setattr__(self, "_hybrid", t.model.linear_attention is not None)
        object.__setattr__(self, "_overlap", t.c.overlap_cpu >= 0.5)
        eager = t.model.num_layers * t.c.eager_layer_s  # per step with prompt tokens
        if t.model.gated_deltanet and t.c.gdn_compile_s:  # (only then: every other model keeps its floats)
            eager += t.c.gdn_compile_s  # the DeltaNet l2norm kernel compiled for the step's new token count
        object.__setattr__(self, "_eager", eager)
        # A step of more than graph_max_tokens tokens runs without CUDA graphs: its GPU time is at least the
        # launches of its kernels (0.0: off, and then no path below changes a float). The scalar fast paths
        # (decode, chunk, prompt and verify forms) return None while it is on, so callers price such steps here.
        floor = t.model.num_layers * t.c.eager_floor_layer_s if self.graph_max_tokens > 0 else 0.0
        add = t.model.num_layers * t.c.graphless_layer_s if self.graph_max_tokens > 0 else 0.0
        object.__setattr__(self, "_floor", floor)
        object.__setattr__(self, "_graphless_add", add)  # added to such a step's GPU time (graphless_layer_s)
        object.__setattr__(self, "_graphless", bool(floor or add))  # either on: the fast paths defer
        object.__setattr__(self, "_mixed", t.c.mixed_prefill_slowdown)  # share of the prompt tokens' time, beside decodes
        # `StepTerms.cpu_s`'s constants (step, per sequence, per token), for `prompt_step_s`'s form
        object.__setattr__(self, "_cpu_terms", (t.c.step_overhead_s, t.c.seq_overhead_s, t.c.token_overhead_s))
        object.__setattr__(self, "_verify_fns", {})  # exact memo: (seqs, tokens each[, chunk]) -> verify forms
        object.__setattr__(self, "_chunk_runs", {})  # exact memo: (decodes, chunk) -> `chunk_run_fn`'s run (or None)
        object.__setattr__(self, "_chunk_fns", {})  # exact memo: (decodes, chunk) -> `chunk_time_fn`'s form (bounded)
        object.__setattr__(self, "_token_terms", t.token_terms())  # `_token_s`'s linear_s and other_s on a miss
        # TP 1 and PP 1: no all-reduce, no hand-off, so communication_s is L x 0.0 + L x 0.0 (and v + 0.0 is v).
        object.__setattr__(self, "_communicates", t.tp > 1 or t.pp > 1)

    # ---- memoised exact terms ------------------------------------------------------------
    def _token_s(self, num_tokens: int) -> float:
        v = self._tok.get(num_tokens)
        if v is None:
            tt = self._token_terms
            v = tt.linear_s(num_tokens) + tt.other_s(num_tokens)
            if self._communicates:
                v = v + self.terms.communication_s(num_tokens)
            self._tok[num_tokens] = v
        return v

    def _logits_s(self, num_logits: int) -> float:
        """GPU time per sequence of the step: the LM head (and `seq_gpu_s`), plus for hybrid models
        each sequence's linear-attention state read and written (a function of the count alone, so
        every fast path that prices the step's sequences here keeps it)."""
        v = self._logit.get(num_logits)
        if v is None:
            v = self.terms.lm_head_s(num_logits)
            if self._hybrid:
                v = v + self.terms.linear_state_s(num_logits)
            self._logit[num_logits] = v
        return v

    def _prefill_attention_s(self, prefills: Sequence[tuple[int, int]], prompt_tokens: int) -> float:
        """GPU work only a step with prompt tokens does: attention over the new tokens plus the
        per-step part `_prompt_fixed_s`."""
        return self._prefill_pairs_s(prefills) + (self._lin_tok * prompt_tokens + self._eager)  # (`_prompt_fixed_s`, inline)

    def _prompt_fixed_s(self, prompt_tokens: int) -> float:
        """The linear-attention layers' chunked prefill of the step's prompt tokens, the quantised
        linears' activation quantisation of them (`act_quant_token_s`), the flat GPU time per prompt
        token (`prompt_token_gpu_s`; the three in `_lin_tok`) and the
        eager launch time (`eager_layer_s` per layer, plus `gdn_compile_s` for Gated DeltaNet models).
        All are 0 by default, and 0.0 x n + eager is eager exactly, so models without them keep main's
        floats; the fast paths add this one term where step_time_s adds it, so they keep its floats too."""
        return self._lin_tok * prompt_tokens + self._eager

    def _verify_chunks_s(self, prefills: Sequence[tuple[int, int]], num_verify: int, num_decode: int) -> float:
        """`_prefill_attention_s` + `_mixed_s` of a speculative step whose last `num_verify` chunks are
        verify chunks (1 + k tokens of a decoding sequence): the attention over every chunk's new
        tokens, but the prompt-only terms (`_prompt_fixed_s`, `_mixed_s`) for the prompt chunks
        alone, the verify chunks counting as the decodes they are. The engines run a generation
        step with drafts as a decode step: TensorRT-LLM's MTP generation steps and vLLM V1's
        uniform decode batches replay CUDA graphs captured for 1 + k tokens a sequence
        (docs/fidelity-history.md, verify21), so no eager launches, no prompt-size
        activation quantisation and no chunked delta rule. The float operations are
        `step_time_s`'s with the terms that are 0.0 left out (x + 0.0 is x)."""
        pairs = self._prefill_pairs_s(prefills)
        prompt = sum(new for new, _ in prefills[:len(prefills) - num_verify])
        if prompt:
            pairs = pairs + self._prompt_fixed_s(prompt)
        return pairs + self._mixed_s(prompt, num_decode + num_verify)

    def _mixed_s(self, prompt_tokens: int, num_decode: int) -> float:
        """`mixed_prefill_slowdown` x the prompt tokens' own per-token time in a step that also
        decodes; exactly 0.0 when off or for a prefill-only step (added to the attention sum:
        x + 0.0 leaves x bit for bit)."""
        return self._mixed * self._token_s(prompt_tokens) if num_decode > 0 and self._mixed > 0.0 and prompt_tokens else 0.0

    def _prefill_pairs_s(self, prefills: Sequence[tuple[int, int]]) -> float:
        full_layers, win_layers = self._layers
        w = self._window
        pairs_full = pairs_win = 0.0
        cached_full = cached_win = 0
        for new, cached in prefills:
            pairs_full += causal_attention_pairs(new, cached, None)
            cached_full += cached
            if w is not None:
                pairs_win += causal_attention_pairs(new, cached, w)
                cached_win += min(cached, w)
        return (self._pair_full * pairs_full + self._pair_win * pairs_win
                + self._kv_read * (full_layers * cached_full + win_layers * cached_win))

    # ---- public API ----------------------------------------------------------------------
    def step_time_s(self, prefills: Sequence[tuple[int, int]], decode_ctxs: Sequence[int], num_verify: int = 0) -> float:
        """Time of one engine iteration.

        prefills: (new_tokens, cached_context_tokens) per prefill chunk; decode_ctxs: tokens already
        in the KV cache for each decoding sequence (each decodes one token); num_verify: how many of
        the last `prefills` are speculative verify chunks (decodes of 1 + k tokens, which pay no
        prompt-only term: `_verify_chunks_s`).
        """
        num_decode = len(decode_ctxs)
        num_tokens = num_decode
        for new, _ in prefills:
            num_tokens += new
        if num_tokens == 0:
            return 0.0
        num_seqs = len(prefills) + num_decode
        gpu = self._token_s(num_tokens) + self._logits_s(num_seqs)
        if num_verify:
            gpu = gpu + self._verify_chunks_s(prefills, num_verify, num_decode)
        elif prefills:
            gpu = gpu + (self._prefill_attention_s(prefills, num_tokens - num_decode)
                         + self._mixed_s(num_tokens - num_decode, num_decode))
        # The ctx-dependent part is kept as `gpu + g * sum` so decode_step_times_s can reproduce it bit for bit.
        gpu = gpu + self._g_full * sum(decode_ctxs)
        if self._window is not None:
            w = self._window
            gpu = gpu + self._g_win * sum(min(ctx, w) for ctx in decode_ctxs)
        if self._graphless and num_tokens > self.graph_max_tokens:  # no graph: the kernels' launches
            gpu = max(gpu + self._graphless_add, self._floor)  # (x + 0.0 is x: a floor alone keeps its floats)
        cpu = self.terms.cpu_s(num_seqs, num_tokens)
        return max(gpu, cpu) if self._overlap else gpu + cpu

    def decode_step_times_s(self, ctxs: np.ndarray, k: int) -> np.ndarray:
        """Times of k consecutive decode-only steps of the batch with contexts ctxs, ctxs+1, ...

        Bit-identical to [step_time_s([], list(ctxs + j)) for j in range(k)].
        """
        ctxs = np.asarray(ctxs, dtype=np.int64)
        n = int(ctxs.shape[0])
        if n == 0 or k <= 0:
            return np.zeros(max(k, 0), dtype=np.float64)
        steps = np.arange(k, dtype=np.int64)
        base = self._token_s(n) + self._logits_s(n)
        gpu = base + self._g_full * (int(ctxs.sum()) + n * steps)
        if self._window is not None:
            w = self._window
            win_sums = np.array([np.minimum(ctxs + j, w).sum() for j in range(k)], dtype=np.int64) if n * k > 4_000_000 \
                else np.minimum(ctxs[None, :] + steps[:, None], w).sum(axis=1)
            gpu = gpu + self._g_win * win_sums
        if self._graphless and n > self.graph_max_tokens:
            gpu = np.maximum(gpu + self._graphless_add, self._floor)
        cpu = self.terms.cpu_s(n, n)
        return np.maximum(gpu, cpu) if self._overlap else gpu + cpu

    def decode_time_fn(self, num_seqs: int) -> Callable[[int], float] | None:
        """For a decode-only batch of `num_seqs` sequences: ctx_sum -> step time.

        Bit-identical to step_time_s([], ctxs) for any ctxs with sum(ctxs) == ctx_sum (the same
        float operations in the same order). None when the time is not a function of the sum
        alone (sliding-window layers); use decode_step_times_s then.
        """
        aff = self.decode_affine(num_seqs)
        if aff is None:
            return None
        base, g, cpu, overlap = aff
        if overlap:
            return lambda ctx_sum: max(base + g * ctx_sum, cpu)
        return lambda ctx_sum: base + g * ctx_sum + cpu

    def decode_affine(self, num_seqs: int) -> tuple[float, float, float, bool] | None:
        """The decode step time's form for `num_seqs` sequences: (base, g, cpu, overlap) with
        time = max(base + g * ctx_sum, cpu) if overlap else base + g * ctx_sum + cpu, evaluated
        in that order (so numpy over many ctx sums gives the scalar form's exact floats)."""
        if self._window is not None or num_seqs <= 0 or self._graphless:
            return None
        return (self._token_s(num_seqs) + self._logits_s(num_seqs), self._g_full,
                self.terms.cpu_s(num_seqs, num_seqs), bool(self._overlap))

    def step_breakdown(self, prefills: Sequence[tuple[int, int]], decode_ctxs: Sequence[int]) -> StepTime:
        """step_time_s split into its terms (not on the hot path)."""
        t = self.terms
        num_tokens = sum(new for new, _ in prefills) + len(decode_ctxs)
        num_seqs = len(prefills) + len(decode_ctxs)
        total = self.step_time_s(prefills, decode_ctxs)
        if num_tokens == 0:
            return StepTime(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "overhead")
        prompt = num_tokens - len(decode_ctxs)
        linear = t.linear_s(num_tokens) + t.act_quant_s_per_token() * prompt
        comm = t.communication_s(num_tokens)
        other = t.other_s(num_tokens) + t.lm_head_s(num_seqs) + (self._eager if prefills else 0.0)
        other += t.prompt_token_gpu_s() * prompt
        other += self._mixed_s(num_tokens - len(decode_ctxs), len(decode_ctxs))
        attn = self._prefill_pairs_s(prefills) + t.linear_prefill_s_per_token() * prompt + self._g_full * sum(decode_ctxs)
        if self._hybrid:  # the linear-attention states, priced per sequence with the LM head
            attn += t.linear_state_s(num_seqs)
        if self._window is not None:
            attn += self._g_win * sum(min(c, self._window) for c in decode_ctxs)
        if self._graphless and num_tokens > self.graph_max_tokens:  # the launches, beside the element-wise work
            other += self._graphless_add
            other += max(0.0, self._floor - (linear + attn + comm + other))
        cpu = t.cpu_s(num_seqs, num_tokens)
        compute_s, memory_s = t.linear_compute_memory_s(num_tokens)
        parts = {"compute" if compute_s >= memory_s else "memory": linear, "attention": attn,
                 "communication": comm, "overhead": cpu}
        gpu = linear + attn + comm + other
        return StepTime(total, gpu, linear, attn, comm, other, cpu, max(parts, key=parts.__getitem__))

    @property
    def gpu_spec(self) -> GPUSpec:
        """The catalogue entry of the GPU (TDP and price for energy and cost reports)."""
        return self.terms.gpu

    @property
    def model_spec(self) -> ModelSpec:
        return self.terms.model
