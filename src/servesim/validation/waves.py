"""Prefill constants per engine release, fitted on rows of every concurrency (the waves).

`prefill.py` fits the prefill constants per (GPU, engine) on the rows with at most 8 users, where
a request barely queues. Above 8 users the measured TTFT is mostly the wave: AIPerf starts every
user at once, the generator's token budget (batch + prompt + 1,500) lets TensorRT-LLM take about
one prompt per step, so the k-th prompt of a wave waits for k - 1 steps that each carry one
prefill beside the running decodes. How fast the mean TTFT grows with the users is then set by the
cost of those steps, which the low-concurrency rows do not pin down (docs/fidelity-history.md,
"TensorRT-LLM TTFT by release"). Here the same constants (`prefill.PERF_NAMES` and an added
front-end latency) are fitted per (engine, GPU, release) key with at least `min_rows` rows, on a
spread sample of the key's rows at even file positions, every concurrency; the rows no key covers
(no version, or a release with fewer rows) are fitted per (engine, GPU) the same way. Odd rows are
held out. Nothing is per row, model or shape.
"""

from __future__ import annotations

from typing import Callable

from servesim.replica.frontend import frontend_profile
from servesim.validation.fit import Errors, coordinate_descent, spread_sample
from servesim.validation.prefill import TPOT_WEIGHT, errors, group_grid, shipped_values
from servesim.validation.silicon import GPUS, ClientOptions, SiliconRow, inexpressible_reason
from servesim.validation.versions import fallback_rows, version_keys

Key = tuple[str, str, str]  # (engine, system, version); version "" for the (GPU, engine) fallback


def wave_keys(rows: list[SiliconRow], engines: tuple[str, ...], min_rows: int = 20) -> dict[Key, list[SiliconRow]]:
    """Fitting rows (even file positions, every concurrency) per release key, then per (engine,
    system) for the rows no release key covers (version "")."""
    keys = dict(version_keys(rows, engines, min_rows))
    for (engine, system), fit_rows in fallback_rows(rows, engines, min_rows).items():
        keys[(engine, system, "")] = fit_rows
    return keys


def held_out_rows(rows: list[SiliconRow], key: Key, keys: dict[Key, list[SiliconRow]]) -> list[SiliconRow]:
    """The expressible rows at odd file positions that `key`'s constants play."""
    engine, system, version = key
    keyed = {k[2] for k in keys if k[:2] == (engine, system) and k[2]}
    return [r for i, r in enumerate(rows)
            if i % 2 == 1 and (r.backend, r.system) == (engine, system) and inexpressible_reason(r) is None
            and ((r.version == version) if version else (r.version not in keyed))]


def fit_waves(rows: list[SiliconRow], engines: tuple[str, ...] = ("trtllm",), options: ClientOptions = ClientOptions(),
              min_rows: int = 20, per_key: int = 16, min_fit_rows: int = 8,
              log: Callable[[str], None] = lambda _: None) -> dict[Key, dict[str, float]]:
    """Per key: the fitted values (prefill.PREFILL_GRID names), for keys with `min_fit_rows` fitting rows."""
    fitted: dict[Key, dict[str, float]] = {}
    keys = wave_keys(rows, engines, min_rows)
    for key, fit_rows in keys.items():
        if len(fit_rows) < min_fit_rows:
            continue
        sample = spread_sample(fit_rows, per_key)
        start = shipped_values(sample[0], options)
        best, score = coordinate_descent(start, group_grid(sample[0], options), lambda v: errors(sample, options, dict(v)),
                                         weights=(1.0, TPOT_WEIGHT), relative=False, sweeps=2)
        fitted[key] = best
        held = held_out_rows(rows, key, keys)
        before, after = errors(held, options, start), errors(held, options, best)
        log(f"{' '.join(k or '(fallback)' for k in key)}: {best} fit score {score:.3f} on {len(sample)} of "
            f"{len(fit_rows)} rows; held out ({len(held)} rows) {_text(before)} -> {_text(after)}")
    return fitted


def _text(e: Errors) -> str:
    return f"TTFT {e.score(1, 0):.1%} / TPOT {e.score(0, 1):.1%}"


def frontend_additions(fitted: dict[Key, dict[str, float]]) -> dict[str, float]:
    """Front-end profile -> latency to add (the profile each key's rows resolve first)."""
    return {frontend_profile(engine, GPUS[system], version): v["latency_add_s"]
            for (engine, system, version), v in fitted.items()}
