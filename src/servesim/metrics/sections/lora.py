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
    t = data.table
    rows = np.flatnonzero(t.cols["lora"] >= 0)
    if not len(rows):
        return None
    tags = [data.extra(i) for i in rows]
    looked = [x["lora_hit"] for x in tags if "lora_hit" in x]
    load_s = sum(x.get("lora_load_s", 0.0) for x in tags)
    first_s = t.cols["first_token_s"][rows]
    started = ~np.isnan(first_s)
    ttft = first_s[started] - t.cols["arrival_s"][rows][started]
    return {
        "num_requests": len(rows),
        "num_adapters": len(np.unique(t.cols["lora"][rows])),
        "cache_hit_rate": sum(looked) / len(looked) if looked else None,
        "num_loads": sum(x.get("lora_num_loads", 0) for x in tags),
        "num_storage_loads": sum(x.get("lora_num_storage_loads", 0) for x in tags),
        "load_time_s": float(load_s),
        "mean_ttft_s": float(ttft.mean()) if ttft.size else None,
        "p99_ttft_s": float(np.percentile(ttft, 99)) if ttft.size else None,
    }
