"""Performance model: GPU/model/engine catalogues, step times, KV capacity, calibration.

The simulation core uses `build_perf_model(model, gpu, tp, dtype, PerfConfig(...), pp)` and the
returned `PerfModel`; everything else here serves the CLI (`catalog`, `estimate`, `calibrate`).
"""

from servesim.perf.config import PerfConfig
from servesim.perf.build import build_perf_model
from servesim.perf.perf_model import PerfModel, StepTime

__all__ = ["PerfConfig", "PerfModel", "StepTime", "build_perf_model"]
