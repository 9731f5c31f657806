"""GPU time per sequence: fit `seq_gpu_s` per (GPU, engine) against TPOT of the batched rows.

The silicon runs' decode steps are slower than the step model at large batches, and the missing
time grows with the running sequences: (measured - simulated TPOT) / concurrency is 15-50 us per
sequence above 64 users in vLLM B200, SGLang B200 / B300 / H200 and TensorRT-LLM B200, while the
attention term's share of the step does not explain it (docs/fidelity-history.md, "Decode at large
batches"). The engines with an overlapping scheduler (SGLang, TensorRT-LLM from 1.0) would hide a
CPU cost per sequence behind the GPU, so the term is GPU-side: `seq_gpu_s`, added to every step
per sequence in it.

Only rows at even positions of the file with more than `min_users` users are fitted (below that
the term is a few hundred microseconds a step at most); odd rows are held out. Groups with fewer
than `min_fit_rows` fitting rows keep the term off.
"""

from __future__ import annotations

from typing import Callable

from servesim.perf.calibration import Entry
from servesim.validation.fit import coordinate_descent, spread_sample
from servesim.validation.silicon import GPUS, ClientOptions, SiliconRow, inexpressible_reason
from servesim.validation.run import row_errors

# Absolute candidates (seconds per sequence per step); 0 = off.
SEQ_GPU_GRID = (0.0, 5e-6, 10e-6, 20e-6, 30e-6, 45e-6, 60e-6)


def batched_rows(rows: list[SiliconRow], engines: tuple[str, ...], min_users: int = 8,
                 parity: int = 0) -> dict[tuple[str, str], list[SiliconRow]]:
    """(engine, system) -> expressible rows with more than `min_users` users at file positions of
    the given parity (0: the fitting rows, 1: the held-out ones)."""
    groups: dict[tuple[str, str], list[SiliconRow]] = {}
    for i, r in enumerate(rows):
        if (r.backend in engines and i % 2 == parity and r.concurrency is not None
                and r.concurrency > min_users and inexpressible_reason(r) is None):
            groups.setdefault((r.backend, r.system), []).append(r)
    return dict(sorted(groups.items()))


def fit_seq_gpu(rows: list[SiliconRow], engines: tuple[str, ...] = ("vllm", "sglang", "trtllm"),
                options: ClientOptions = ClientOptions(), per_group: int = 16, min_fit_rows: int = 8,
                ttft_weight: float = 0.25,
                log: Callable[[str], None] = lambda _: None) -> list[Entry]:
    """Calibration entries {gpu, engine} -> {seq_gpu_s}, one per group whose best value is not 0.

    Objective: TPOT median absolute error plus `ttft_weight` x TTFT's (a slower decode also
    lengthens the waves the TTFT of these rows waits in)."""
    entries: list[Entry] = []
    for (engine, system), fit_rows in batched_rows(rows, engines).items():
        if len(fit_rows) < min_fit_rows:
            log(f"{engine} {system}: {len(fit_rows)} fitting rows, below {min_fit_rows}: off")
            continue
        sample = spread_sample(fit_rows, per_group)
        best, score = coordinate_descent({"seq_gpu_s": 0.0}, {"seq_gpu_s": SEQ_GPU_GRID},
                                         lambda v: row_errors(sample, options, overrides=dict(v), frontend={}),
                                         weights=(ttft_weight, 1.0), relative=False, sweeps=1)
        log(f"{engine} {system} ({len(sample)} of {len(fit_rows)} rows): seq_gpu_s {best['seq_gpu_s'] * 1e6:g} us score {score:.1%}")
        if best["seq_gpu_s"] > 0.0:
            entries.append(Entry({"gpu": GPUS[system], "engine": engine}, {"seq_gpu_s": best["seq_gpu_s"]}))
    return entries
