"""The cold start of a new replica, as the sum of its parts (pure functions).

A replica that scales up goes through three lifecycle phases before it serves:

- pending: node or container start (a pod is allocated and its image is ready);
- loading: the weights travel from the storage tier that holds them to the GPUs;
- warming: the engine starts (imports, CUDA context, NCCL), profiles memory, captures CUDA
  graphs and serves warm-up requests.

Defaults follow shared/specs/cluster.md §6.4 and §6.9; each field cites its source. Times
are fixed (not sampled) so that a sweep over one of them changes only that one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from servesim.sums import left_sum

Storage = Literal["gpu", "host_memory", "local_ssd", "remote"]

#: Effective per-GPU read bandwidth of each storage tier, bytes/s (spec §6.9's table).
TIER_BW_BYTES_S: dict[str, float] = {
    "host_memory": 25e9,  # PCIe4 x16 ≈ 25 GB/s effective (DeepServe); pinned DRAM as in ServerlessLLM
    "local_ssd": 29.4e9 / 8,  # ServerlessLLM H100 box: 29.4 GB/s NVMe array shared by 8 GPUs
    "remote": 1e9,  # S3/HTTP/NFS ≈ 0.1-2 GB/s (design assumption in the spec)
}


class ColdStartConfig(BaseModel):
    """How long a new replica takes to serve, part by part (spec §6.9: T_pod + T_image +
    T_engine + T_weights + T_post)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    node_start_s: float = Field(0.0, ge=0)
    """Provisioning a node when none is free (0: the node is already up, the usual case for a
    reserved pool; a cloud VM takes minutes)."""
    container_start_s: float = Field(3.24, ge=0)
    """Pod allocation and image start: the mean of the Huawei YuanRong cold-start fit,
    LogNormal(mean 3.24 s, sd 7.10 s) (spec §6.7)."""
    storage: Storage = "local_ssd"
    """Where the checkpoint is read from: gpu (already resident, no load), host_memory
    (ServerlessLLM's DRAM pool), local_ssd, or remote object storage."""
    storage_bw_bytes_s: float | None = Field(None, gt=0)
    """Read bandwidth per GPU of that tier; default from spec §6.9: host_memory 25 GB/s,
    local_ssd 3.675 GB/s (29.4 GB/s array / 8 GPUs), remote 1 GB/s."""
    load_format_factor: float = Field(1.0, ge=1)
    """Slow-down of the checkpoint loader against ServerlessLLM's format at the same
    bandwidth (SafeTensors/PyTorch: 6-10x, spec §6.4); 1 = the fast format."""
    tensor_init_s: float = Field(0.3, ge=0)
    """Tensor allocation and initialisation once the bytes are in (≈0.3 s, DeepServe)."""
    engine_start_s: float = Field(15.0, ge=0)
    """Python imports, CUDA context and NCCL init; the dominant term after fast loading
    (DeepServe Fig. 9). 15 s is our choice inside the spec's range; make it 0 for a
    pre-warmed engine."""
    cuda_graph_capture_s: float = Field(10.0, ge=0)
    """vLLM memory profiling run plus CUDA graph capture (spec §6.9 gives 10-60 s for profile
    plus capture; we take its low end)."""
    warmup_s: float = Field(0.0, ge=0)
    """Warm-up requests served before the replica reports ready."""


def phase_times_s(cfg: ColdStartConfig, weight_bytes_per_gpu: float) -> dict[str, float]:
    """Durations of the three lifecycle phases before a replica is ready."""
    return {
        "pending": cfg.node_start_s + cfg.container_start_s,
        "loading": weight_load_s(cfg, weight_bytes_per_gpu),
        "warming": cfg.engine_start_s + cfg.cuda_graph_capture_s + cfg.warmup_s,
    }


def weight_load_s(cfg: ColdStartConfig, weight_bytes_per_gpu: float) -> float:
    """Each GPU reads its shard in parallel: size / tier bandwidth x loader factor + init
    (ServerlessLLM's n/b with no queued loads; spec §6.9)."""
    if cfg.storage == "gpu":
        return 0.0
    bw = cfg.storage_bw_bytes_s or TIER_BW_BYTES_S[cfg.storage]
    return weight_bytes_per_gpu / bw * cfg.load_format_factor + cfg.tensor_init_s


def cold_start_s(cfg: ColdStartConfig, weight_bytes_per_gpu: float) -> float:
    """Total time from the scale-up decision to ready."""
    return left_sum(phase_times_s(cfg, weight_bytes_per_gpu).values())
