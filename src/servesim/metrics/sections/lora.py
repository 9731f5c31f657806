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

from servesim.metrics.stream_stats import StreamValues
from servesim.sums import left_sum

KEY = "lora"


def section(data) -> dict | None:
    t = data.table
    parts, adapters, ttft = [], set(), StreamValues(data.folder)
    try:
        for chunk in t.chunks():  # (a chunk of rows at a time: TTFTs in row order)
            lora = t.cols["lora"][chunk]
            rows = np.flatnonzero(lora >= 0)
            if not len(rows):
                continue
            parts.append(rows + chunk.start)
            adapters.update(np.unique(lora[rows]).tolist())
            first_s = t.cols["first_token_s"][chunk][rows]
            started = ~np.isnan(first_s)
            ttft.add(first_s[started] - t.cols["arrival_s"][chunk][rows][started])
        if not parts:
            return None
        rows = np.concatenate(parts)
        hit, hits = t.extras.at("lora_hit", rows)
        looked = hits[hit].tolist()
        # (Python's sums in row order, as the tags were read before: the same float and int results)
        load_s = left_sum(t.extras.at("lora_load_s", rows, 0.0)[1].tolist())
        return {
            "num_requests": len(rows),
            "num_adapters": len(adapters),
            "cache_hit_rate": sum(looked) / len(looked) if looked else None,
            "num_loads": sum(t.extras.at("lora_num_loads", rows)[1].tolist()),
            "num_storage_loads": sum(t.extras.at("lora_num_storage_loads", rows)[1].tolist()),
            "load_time_s": float(load_s),
            "mean_ttft_s": ttft.mean() if len(ttft) else None,
            "p99_ttft_s": ttft.percentile(99) if len(ttft) else None,
        }
    finally:
        ttft.close()
