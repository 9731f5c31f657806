"""LoRA adapters: how often a request found its adapter on the GPU, how many loads it took, and
what adapter requests waited.

Read from the tags the replicas' adapter caches put on requests (`replica/lora.py`):
`extra["lora_hit"]` at each arrival at a replica, `extra["lora_load_s"]`,
`extra["lora_num_loads"]` and `extra["lora_num_storage_loads"]` on the requests whose
admission started loads. The section is
reported only when some request names an adapter, so runs without adapters keep their summary.
"""

from __future__ import annotations

import numpy as np

KEY = "lora"


def section(data) -> dict | None:
    reqs = [r for r in data.requests if r.lora is not None]
    if not reqs:
        return None
    looked = [r.extra["lora_hit"] for r in reqs if "lora_hit" in r.extra]
    load_s = sum(r.extra.get("lora_load_s", 0.0) for r in reqs)
    ttft = np.array([r.first_token_s - r.arrival_s for r in reqs if r.first_token_s is not None])
    return {
        "num_requests": len(reqs),
        "num_adapters": len({r.lora for r in reqs}),
        "cache_hit_rate": sum(looked) / len(looked) if looked else None,
        "num_loads": sum(r.extra.get("lora_num_loads", 0) for r in reqs),
        "num_storage_loads": sum(r.extra.get("lora_num_storage_loads", 0) for r in reqs),
        "load_time_s": float(load_s),
        "mean_ttft_s": float(ttft.mean()) if ttft.size else None,
        "p99_ttft_s": float(np.percentile(ttft, 99)) if ttft.size else None,
    }
