"""Engine profiles (`engines.yaml`): per-engine CPU/launch constants and benchmark settings."""

from __future__ import annotations

from dataclasses import dataclass

from servesim.perf._catalog import catalogue, resolve

ENGINE_FILE = "engines.yaml"


@dataclass(frozen=True)
class EngineProfile:
    """One serving engine as the performance model sees it."""

    name: str
    description: str
    max_batch_size: int  # most sequences per iteration (vLLM max_num_seqs)
    max_num_tokens: int  # token budget per iteration (vLLM max_num_batched_tokens)
    kv_fraction: float  # GPU memory share for weights + activations + KV (gpu_memory_utilization)
    constants: dict[str, float]  # engine-owned calibration constants, see calibration.Constants


def engine_profile(name: str) -> EngineProfile:
    canonical, entry = resolve(ENGINE_FILE, "engine", name)
    return EngineProfile(
        name=canonical,
        description=str(entry["description"]),
        max_batch_size=int(entry["max_batch_size"]),
        max_num_tokens=int(entry["max_num_tokens"]),
        kv_fraction=float(entry["kv_fraction"]),
        constants={k: float(v) for k, v in entry["constants"].items()},
    )


def engine_names() -> list[str]:
    return list(catalogue(ENGINE_FILE))
