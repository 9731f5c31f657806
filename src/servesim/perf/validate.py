"""Predict measured points and tabulate the error per source (`python -m servesim.perf.validate`).

Each metric has a driver that plays the measurement with the model: static-batch runs, engine-chosen
(max-throughput) batches, single prefill/decode steps, operator-level GEMM and all-reduce times.
"""

from __future__ import annotations

import re
import statistics
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from servesim.errors import InputError
from servesim.perf import roofline
from servesim.perf.calibration import CalibrationData
from servesim.perf.config import PerfConfig
from servesim.perf.engines import engine_profile
from servesim.perf.estimate import estimate, max_batch_that_fits
from servesim.perf.measured import Point
from servesim.perf.build import build_with_calibration
from servesim.perf.perf_model import PerfModel

# Theoretical-peak points (Fu 2024) are checked with every efficiency at 1 and no overheads.
PEAK_OVERRIDES = {"eta_compute": 1.0, "eta_memory": 1.0, "smoothing_k": 64.0, "eta_attn_compute": 1.0,
                  "eta_attn_memory": 1.0, "layer_floor_s": 0.0}
# Operator-harness GPU/topology names that map onto catalogued GPUs.
GPU_NAMES = {"h100 dgx (nvswitch)": "h100-sxm", "a100 dgx (nvswitch)": "a100-80gb"}


@dataclass(frozen=True)
class Result:
    point: Point
    predicted: float  # SI units, like point.value

    @property
    def error(self) -> float:
        """Signed relative error, predicted / measured - 1."""
        return self.predicted / self.point.value - 1.0


def source_label(source: str) -> str:
    """A short name for a source: its leading words up to the first path or parenthesis."""
    words = []
    for word in source.split():
        if "/" in word or "(" in word or word.endswith((".md", ".csv", ".json")) or len(words) == 3:
            break
        words.append(word.strip("'\","))
    return " ".join(words) or source[:30]


def _model_name(raw: str) -> str:
    return re.sub(r"\(.*\)$", "", raw).strip()


class Predictor:
    """Builds (and reuses, within one run) the PerfModels the points need."""

    def __init__(self, calibration: CalibrationData | None = None, shipped_fit: bool = True) -> None:
        self._calibration = calibration
        self._shipped_fit = shipped_fit
        self._models: dict[tuple, PerfModel] = {}

    def model(self, p: Point, model: str | None = None) -> PerfModel:
        engine = "ideal" if p.engine == "peak" else p.engine
        overrides = PEAK_OVERRIDES if p.engine == "peak" else {}
        gpu = GPU_NAMES.get(p.gpu.lower(), p.gpu)
        key = (model or p.model, gpu, p.tp, p.dtype, engine)
        if key not in self._models:
            config = PerfConfig(engine=engine, overrides=overrides)
            self._models[key] = build_with_calibration(_model_name(key[0]), gpu, p.tp, p.dtype, config, 1,
                                                       self._calibration, self._shipped_fit)
        return self._models[key]

    def predict(self, p: Point) -> float:
        driver = DRIVERS[p.metric]
        return driver(self, p)


def _static(pred: Predictor, p: Point) -> float:
    pm = pred.model(p)
    eng = engine_profile(pm.engine)
    batch = p.batch if p.batch is not None else max_batch_that_fits(pm, eng, p.input_len, p.output_len)
    result = estimate(pm, eng, batch, p.input_len, p.output_len)
    # TRT-LLM v0.6.1's A100 table says "out tok/s" without saying per GPU; its H100 table is per
    # GPU, and read as totals the TP>1 rows would be ~TP times below every other A100 number, so
    # such ambiguous rows are read per GPU (documented in docs/perf-model.md).
    per_gpu = p.metric.endswith("per_gpu") or "per-gpu vs total ambiguous" in p.notes.lower()
    return result.output_throughput_per_gpu_tok_s if per_gpu else result.output_throughput_tok_s


def _prefill(pred: Predictor, p: Point) -> float:
    pm = pred.model(p)
    return pm.step_time_s([(p.input_len, 0)] * (p.batch or 1), [])


def _decode_step(pred: Predictor, p: Point) -> float:
    pm = pred.model(p)
    return pm.step_time_s([], [p.input_len + p.output_len // 2] * (p.batch or 1))


def _decode_total(pred: Predictor, p: Point) -> float:
    pm = pred.model(p)
    return float(pm.decode_step_times_s(np.full(p.batch or 1, p.input_len), p.output_len).sum())


def _e2e(pred: Predictor, p: Point) -> float:
    return _prefill(pred, p) + _decode_total(pred, p)


def _linear(pred: Predictor, p: Point) -> float:
    pm = pred.model(p)
    return pm.terms.linear_s(p.batch or 1) / pm.terms.model.num_layers


def _all_reduce(pred: Predictor, p: Point) -> float:
    pm = pred.model(p, model="llama-2-7b")  # any model: only the GPU and constants matter
    c, g = pm.constants, pm.terms.gpu
    return roofline.allreduce_s(p.input_len, p.tp, g.scaleup_bw_bytes_s, g.scaleup_latency_s, c.ar_launch_s, c.ar_bw_eff)


def _kv_per_request(pred: Predictor, p: Point) -> float:
    return float(pred.model(p).kv_bytes_per_token * p.input_len)


def _max_concurrency(pred: Predictor, p: Point) -> float:
    pm = pred.model(p)
    return float(max(0, (pm.hbm_bytes - pm.weight_bytes_per_gpu) // (pm.kv_bytes_per_token * p.input_len)))


DRIVERS: dict[str, Callable[[Predictor, Point], float]] = {
    "output_throughput": _static, "output_throughput_per_gpu": _static,
    "first_token_latency": _prefill, "prefill_time": _prefill, "prefill_time_batch": _prefill,
    "decode_step_time": _decode_step, "decode_time_total": _decode_total, "e2e_latency": _e2e,
    "linear_layer_time": _linear, "all_reduce_time": _all_reduce,
    "kv_cache_per_request": _kv_per_request, "max_concurrency": _max_concurrency,
}


def evaluate(points: list[Point], calibration: CalibrationData | None = None,
             shipped_fit: bool = True) -> tuple[list[Result], list[tuple[Point, str]]]:
    """Predictions for every point the model can play, and the skipped points with the reason."""
    pred = Predictor(calibration, shipped_fit)
    results, skipped = [], []
    for p in points:
        try:
            results.append(Result(p, pred.predict(p)))
        except InputError as exc:
            skipped.append((p, str(exc)))
    return results, skipped


@dataclass(frozen=True)
class ErrorRow:
    source: str
    kind: str
    count: int
    median_abs: float
    worst_abs: float
    worst_signed: float


def error_table(results: list[Result]) -> list[ErrorRow]:
    groups: dict[tuple[str, str], list[float]] = {}
    for r in results:
        groups.setdefault((source_label(r.point.source), r.point.kind), []).append(r.error)
    rows = []
    for (source, kind), errs in groups.items():
        worst = max(errs, key=abs)
        rows.append(ErrorRow(source, kind, len(errs), statistics.median(abs(e) for e in errs), abs(worst), worst))
    return rows


def markdown_table(before: list[ErrorRow], after: list[ErrorRow] | None = None) -> str:
    lines = ["| source | kind | n | median abs err | worst err |" + (" median after | worst after |" if after else ""),
             "|---|---|---|---|---|" + ("---|---|" if after else "")]
    by_key = {(r.source, r.kind): r for r in (after or [])}
    for r in before:
        line = f"| {r.source} | {r.kind} | {r.count} | {r.median_abs:.1%} | {r.worst_signed:+.1%} |"
        if after:
            a = by_key.get((r.source, r.kind))
            line += f" {a.median_abs:.1%} | {a.worst_signed:+.1%} |" if a else " - | - |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from servesim.perf.measured import MEASURED_POINTS, read_points

    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else MEASURED_POINTS
    results, skipped = evaluate(read_points(path))
    print(markdown_table(error_table(results)))
    for p, why in skipped:
        print(f"skipped line {p.line}: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
