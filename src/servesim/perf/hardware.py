"""GPU specifications (the `gpus.yaml` catalogue) and the dtypes the performance model knows."""

from __future__ import annotations

from dataclasses import dataclass

from servesim.errors import InputError
from servesim.perf._catalog import catalogue, resolve

GPU_FILE = "gpus.yaml"


@dataclass(frozen=True)
class GPUSpec:
    """One GPU as listed in the catalogue; see the header of `data/gpus.yaml` for sources."""

    name: str
    vendor: str
    peak_flops: dict[str, float]  # dense FLOP/s per compute dtype (bf16, fp16, fp8, int8, int4, fp4)
    hbm_bytes: int
    hbm_bw_bytes_s: float
    scaleup: str  # link family: nvlink3/4/5, infinity-fabric, or pcie (no scale-up fabric)
    scaleup_bw_bytes_s: float  # per GPU per direction
    scaleup_latency_s: float
    pcie_bw_bytes_s: float  # per direction
    tdp_w: float
    price_usd_h: float
    price_date: str
    notes: str = ""
    # measured per-GPU power (splitwise-sim power_model/constant.yaml); None: shares of TDP
    idle_w: float | None = None
    prefill_w: float | None = None
    decode_w: float | None = None
    # GPUs one scale-up (NVLink) fabric joins at full per-GPU bandwidth: the 8 of an HGX / DGX
    # board (and of an MI300X platform), 72 in a GB200 NVL72 rack. A TP group larger than this
    # needs the scale-out network, which the step-time model does not price.
    scaleup_domain_gpus: int = 8


@dataclass(frozen=True)
class DtypeSpec:
    """How a serving precision maps to bytes moved and to the tensor-core peak used."""

    name: str
    weight_bytes: float  # bytes per weight element
    compute: str  # key into GPUSpec.peak_flops for the GEMMs
    kv_default: str  # KV cache dtype when the config says "auto"


# INT4 is weight-only (W4A16, AWQ/GPTQ style): weights are dequantised and multiplied in BF16.
# INT8 is W8A8 (SmoothQuant style) on INT8 tensor cores. FP8 runs the GEMMs on FP8 tensor cores and,
# as vendor benchmarks do, stores the KV cache in FP8 by default. FP4 is NVFP4 (W4A4 on Blackwell
# FP4 tensor cores): 4-bit values plus one FP8 scale per 16 elements = 4.5 bits per weight.
DTYPES: dict[str, DtypeSpec] = {
    "bf16": DtypeSpec("bf16", 2.0, "bf16", "bf16"),
    "fp16": DtypeSpec("fp16", 2.0, "fp16", "fp16"),
    "fp8": DtypeSpec("fp8", 1.0, "fp8", "fp8"),
    "int8": DtypeSpec("int8", 1.0, "int8", "bf16"),
    "int4": DtypeSpec("int4", 0.5, "bf16", "bf16"),
    "fp4": DtypeSpec("fp4", 0.5625, "fp4", "fp8"),
}
KV_DTYPE_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}
ACTIVATION_BYTES = 2.0  # activations stay 16-bit in every supported precision


def gpu_spec(name: str) -> GPUSpec:
    """The catalogue entry for `name` (case-insensitive; aliases accepted)."""
    canonical, entry = resolve(GPU_FILE, "gpu", name)
    fields = {k: v for k, v in entry.items() if k != "aliases"}
    # PyYAML reads "3350.0e9" (no exponent sign) as a string, so numbers are converted explicitly.
    fields["peak_flops"] = {k: float(v) for k, v in fields["peak_flops"].items()}
    for key in ("hbm_bw_bytes_s", "scaleup_bw_bytes_s", "scaleup_latency_s", "pcie_bw_bytes_s", "tdp_w", "price_usd_h"):
        fields[key] = float(fields[key])
    fields["hbm_bytes"] = int(fields["hbm_bytes"])
    if "scaleup_domain_gpus" in fields:
        fields["scaleup_domain_gpus"] = int(fields["scaleup_domain_gpus"])
    fields["price_date"] = str(fields["price_date"])
    return GPUSpec(name=canonical, **fields)


def gpu_names() -> list[str]:
    """Canonical GPU names in catalogue order."""
    return list(catalogue(GPU_FILE))


def dtype_spec(dtype: str, gpu: GPUSpec) -> DtypeSpec:
    """The precision `dtype` (case-insensitive), checked against what `gpu` supports."""
    key = str(dtype).strip().lower()
    if key not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    spec = DTYPES[key]
    if spec.compute not in gpu.peak_flops:
        allowed = [d for d, s in DTYPES.items() if s.compute in gpu.peak_flops]
        raise InputError(f"gpu {gpu.name} has no {key} tensor cores; allowed dtypes: {', '.join(allowed)}")
    return spec


def kv_dtype_bytes(kv_cache_dtype: str, dtype: DtypeSpec) -> tuple[str, float]:
    """(name, bytes per element) of the KV cache; "auto" follows the weight precision.

    FP8 KV is a storage format (engines upcast it in the attention kernel), so any GPU may use it.
    """
    key = str(kv_cache_dtype).strip().lower()
    if key == "auto":
        key = dtype.kv_default
    if key not in KV_DTYPE_BYTES:
        raise InputError(f"unknown kv_cache_dtype {kv_cache_dtype!r}; allowed: auto, {', '.join(KV_DTYPE_BYTES)}")
    return key, KV_DTYPE_BYTES[key]
