"""What a `PerfModel` says about memory: KV capacity and the time to move bytes.

Kept apart from perf_model.py, whose methods price engine steps (called on the hot path):
these size the KV cache once per replica (vLLM's memory profile: weights, activation peak,
misc) and price the data movements that are not steps (weights loaded at a cold start, KV sent
to another replica or swapped to host memory). `PerfModel` inherits them from `MemoryMixin`;
they read its resolved fields (terms, constants, byte counts), so they live on the object.
"""

from __future__ import annotations

import math

from servesim.errors import InputError
from servesim.perf.hardware import ACTIVATION_BYTES
from servesim.perf.models import linear_state_bytes_per_seq

# vLLM's memory profile samples this many sequences' logits (its default max_num_seqs).
PROFILE_LOGIT_ROWS = 256


class MemoryMixin:
    """KV capacity and data-movement times of a `PerfModel` (see the module docstring)."""

    def activation_peak_bytes(self, max_num_batched_tokens: int) -> int:
        """Peak transient memory of a forward pass over `max_num_batched_tokens` tokens.

        Model (as vLLM's profiling run sees it): per token, the hidden state, residual, normed input
        and attention output (4*h) plus the FFN's gate/up output and activation (3*ffn_width), all
        16-bit; plus FP32 logits for up to PROFILE_LOGIT_ROWS sequences over the local vocabulary.
        """
        m = self.terms.model
        tokens = max(0, int(max_num_batched_tokens))
        per_token = (4.0 * m.hidden_size + 3.0 * self.terms.ffn_width()) * ACTIVATION_BYTES
        logits = min(tokens, PROFILE_LOGIT_ROWS) * (m.vocab_size / self.tp) * 4.0
        return int(tokens * per_token + logits)

    def state_bytes_per_seq(self) -> float:
        """Fixed state a running sequence holds on one GPU besides its KV blocks: the recurrent and
        convolution state of a hybrid model's linear-attention layers (0 for other models)."""
        return linear_state_bytes_per_seq(self.terms.model, self.tp, ACTIVATION_BYTES)

    def num_gpu_blocks(self, block_size: int, gpu_memory_utilization: float, max_num_batched_tokens: int,
                       max_num_seqs: int = 0) -> int:
        """KV blocks per GPU, vLLM style:
        floor((util*HBM - weights - activation_peak(max_num_batched_tokens) - misc - states) / (block_size*kv_bytes_per_token)).

        states: `max_num_seqs` x `state_bytes_per_seq` (0 for models without linear-attention layers).
        Hybrid models keep a fixed state per running sequence outside the KV blocks, held for every
        running request (SGLang's mamba pool, one slot per running request; vLLM's hybrid manager,
        one state page per request), so the running cap's states come off the KV budget.
        """
        if block_size <= 0:
            raise InputError(f"block_size must be a positive integer, got {block_size}")
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise InputError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        free = (gpu_memory_utilization * self.hbm_bytes - self.weight_bytes_per_gpu
                - self.activation_peak_bytes(max_num_batched_tokens) - self.misc_bytes)
        if self.terms.model.linear_attention is not None:
            free -= max(0, int(max_num_seqs)) * self.state_bytes_per_seq()
        return max(0, math.floor(free / (block_size * self.kv_bytes_per_token)))

    def model_load_time_s(self) -> float:
        """Loading this GPU's weights from host memory over PCIe (a lower bound for a cold start)."""
        return self.weight_bytes_per_gpu / (self.constants.pcie_eff * self.terms.gpu.pcie_bw_bytes_s)

    def kv_transfer_time_s(self, num_tokens: int, link_bw_bytes_s: float | None = None) -> float:
        """Moving `num_tokens` tokens' KV to another replica's GPUs, each GPU sending its own share
        (prefill/decode disaggregation, migration); by default over the scale-up link."""
        g = self.terms.gpu
        bw = link_bw_bytes_s if link_bw_bytes_s is not None else g.scaleup_bw_bytes_s * self.constants.ar_bw_eff
        return g.scaleup_latency_s + num_tokens * self.kv_bytes_per_token / bw

    def swap_time_s(self, num_tokens: int) -> float:
        """Moving `num_tokens` tokens' KV one way over PCIe (each GPU moves its own share in parallel)."""
        g = self.terms.gpu
        return num_tokens * self.kv_bytes_per_token / (self.constants.pcie_eff * g.pcie_bw_bytes_s)
