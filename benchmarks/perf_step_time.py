"""Speed of the performance model's hot path (not a test; run `python benchmarks/perf_step_time.py`).

Prints step_time_s calls per second for typical batch shapes, and the speed-up of
decode_step_times_s over stepping one by one.
"""

from __future__ import annotations

import time

import numpy as np

from servesim.perf import build_perf_model


def rate(fn, seconds: float = 1.0) -> float:
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            fn()
        calls += 100
    return calls / elapsed


def main() -> None:
    pm = build_perf_model("llama-3.1-8b", "h100-sxm")
    rng = np.random.default_rng(0)
    cases = {
        "decode-only, 8 seqs": ([], [int(c) for c in rng.integers(100, 4000, 8)]),
        "decode-only, 64 seqs": ([], [int(c) for c in rng.integers(100, 4000, 64)]),
        "decode-only, 256 seqs": ([], [int(c) for c in rng.integers(100, 4000, 256)]),
        "mixed: 1 prefill chunk + 64 decodes": ([(512, 1024)], [int(c) for c in rng.integers(100, 4000, 64)]),
        "prefill only, 1 x 2048": ([(2048, 0)], []),
    }
    for label, (prefills, decodes) in cases.items():
        pm.step_time_s(prefills, decodes)  # warm the exact memo for this token count
        print(f"{label:40} {rate(lambda: pm.step_time_s(prefills, decodes)):>12,.0f} step_time_s calls/s")
    ctxs = rng.integers(100, 4000, 64)
    k = 1000
    start = time.perf_counter()
    pm.decode_step_times_s(ctxs, k)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    for j in range(k):
        pm.step_time_s([], list(ctxs + j))
    slow = time.perf_counter() - start
    print(f"decode_step_times_s, 64 seqs x {k} steps: {fast * 1e3:.2f} ms vs {slow * 1e3:.1f} ms one by one ({slow / fast:.0f}x)")


if __name__ == "__main__":
    main()
