"""KV swap cost between the GPU and the CPU tier: a pure function plus the per-policy mechanics.

One swap moves a request's KV blocks over PCIe. Its time is the sum of a per-copy launch
cost and the bytes over the effective PCIe bandwidth (the perf model's `swap_time_s`):

    T = n_copies * launch_s + perf.swap_time_s(num_blocks * block_size)
    n_copies = ceil(num_blocks / blocks_per_copy) * num_layers * 2     (K and V separately)

vLLM v0 copies every block of every layer for K and V separately (`blocks_per_copy = 1`),
so a swap is thousands of small copies whose launch cost dominates: the vLLM paper's
observation that swapping "explodes" for small blocks. FastSwitch allocates KV in block
groups of physically contiguous blocks and copies a whole group per layer and K/V
(`blocks_per_copy = group size`), which brings the transfer close to the PCIe bandwidth.

Constants (engineering assumptions, scheduling.md §11.2, to calibrate per machine):
`LAUNCH_S` = 5 us per `cudaMemcpyAsync` (the spec gives 5-10 us); PCIe bandwidth and its
efficiency come from the perf model's GPU table and calibration (`pcie_eff`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LAUNCH_S = 5e-6
"""Launch cost of one host<->device copy (seconds)."""
DEFAULT_NUM_LAYERS = 32
"""Layers assumed when the cost model does not say (a Llama-3-8B-class model)."""


@dataclass(frozen=True)
class SwapMechanics:
    """How a policy's swaps are executed (the engine charges time accordingly)."""

    blocks_per_copy: int = 1
    """Contiguous blocks moved per copy (vLLM v0: 1; FastSwitch: the block-group size)."""
    overlap: bool = False
    """False: the step waits for the copies (vLLM v0). True: copies run on their own stream,
    overlapped with compute; a swapped-in request is schedulable once its copy completed."""
    launch_s: float = LAUNCH_S
    """Launch cost of one copy (seconds)."""


VLLM_V0_SWAP = SwapMechanics()


def num_copies(num_blocks: int, num_layers: int, blocks_per_copy: int) -> int:
    """Copies needed to move `num_blocks` blocks of every layer, K and V separately."""
    return -(-num_blocks // blocks_per_copy) * num_layers * 2


def swap_time_s(num_blocks: int, block_size: int, perf: Any, mech: SwapMechanics) -> float:
    """One-way time to move `num_blocks` KV blocks (0 for none)."""
    if num_blocks <= 0:
        return 0.0
    copies = num_copies(num_blocks, num_layers(perf), mech.blocks_per_copy)
    return copies * mech.launch_s + perf.swap_time_s(num_blocks * block_size)


def num_layers(perf: Any) -> int:
    """Layers whose KV one GPU holds (per pipeline stage), from the perf model if it knows."""
    terms = getattr(perf, "terms", None)
    model = getattr(terms, "model", None)
    if model is not None:
        return -(-model.num_layers // max(getattr(perf, "pp", 1), 1))
    return getattr(perf, "num_layers", DEFAULT_NUM_LAYERS)
