"""Constants keyed by engine release: engines.yaml `versions:` rules and calibration `version` matches."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim.errors import InputError
from servesim.perf import build_perf_model
from servesim.perf.calibration import load_calibration, resolve_constants
from servesim.perf.config import PerfConfig
from servesim.perf.engines import engine_profile, release_key, version_at_least


def test_release_key_reads_the_release_line():
    assert release_key("0.5.10.post1") == (0, 5, 10)
    assert release_key("1.1.0rc2.post2") == (1, 1, 0)
    assert release_key("v0.18.0") == (0, 18, 0)
    assert release_key("nightly-5b8c30d62b754b57") is None and release_key("glm5-hopper") is None


@pytest.mark.parametrize("version, expected", [
    ("", False), ("0.11.2", False), ("0.13.9", False), ("0.14", True), ("0.14.0", True), ("0.18.0", True),
    ("1.0", True), ("nightly-dev", True),  # non-release builds are newer than every release
])
def test_version_at_least(version, expected):
    assert version_at_least(version, "0.14.0") is expected


@pytest.fixture
def async_rule(monkeypatch):
    """engines.yaml with a per-release rule on vllm: vLLM 0.14.0 turned async scheduling on by
    default, CPU work overlapping the GPU step (the shipped rule, set here alone so that these
    tests do not depend on the file's other rules)."""
    import servesim.perf.engines as engines

    real = engines.resolve

    def resolve(filename, kind, name):
        canonical, entry = real(filename, kind, name)
        if canonical == "vllm":
            entry["versions"] = [{"since": "0.14.0", "constants": {"overlap_cpu": 1}}]
        return canonical, entry

    monkeypatch.setattr(engines, "resolve", resolve)


def test_shipped_vllm_profile_schedules_async_from_0_14():
    # vLLM 0.14.0 turned async scheduling on by default (engines.yaml); earlier and unversioned runs stay synchronous
    assert engine_profile("vllm").constants["overlap_cpu"] == 0
    assert engine_profile("vllm", "0.13.0").constants["overlap_cpu"] == 0
    for version in ("0.14.0", "0.16.0", "0.19.0", "nightly-5b8c30d62b754b57"):
        assert engine_profile("vllm", version).constants["overlap_cpu"] == 1
    rest = {k: v for k, v in engine_profile("vllm", "0.19.0").constants.items() if k != "overlap_cpu"}
    assert rest == {k: v for k, v in engine_profile("vllm").constants.items() if k != "overlap_cpu"}


def test_release_rule_applies_from_its_release(async_rule):
    assert engine_profile("vllm").constants["overlap_cpu"] == 0
    assert engine_profile("vllm", "0.11.2").constants["overlap_cpu"] == 0
    assert engine_profile("vllm", "0.18.0").constants["overlap_cpu"] == 1
    assert engine_profile("vllm", "0.18.0").version == "0.18.0"
    assert engine_profile("vllm", "nightly-5b8c30d6").constants["overlap_cpu"] == 1
    # other constants are the base profile's
    assert engine_profile("vllm", "0.18.0").constants["step_overhead_s"] == engine_profile("vllm").constants["step_overhead_s"]


def test_overlap_makes_a_decode_step_max_not_sum(async_rule):
    base = build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", PerfConfig(engine="vllm", overrides={"step_overhead_s": 0.05}))
    new = build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16",
                           PerfConfig(engine="vllm", engine_version="0.18.0", overrides={"step_overhead_s": 0.05}))
    b = base.step_breakdown([], [1000] * 8)
    assert 0 < b.gpu_s < b.overhead_s  # the CPU dominates this step
    assert base.step_time_s([], [1000] * 8) == pytest.approx(b.gpu_s + b.overhead_s)  # sum before 0.14
    assert new.step_time_s([], [1000] * 8) == pytest.approx(b.overhead_s)  # max(cpu, gpu) from 0.14


CAL = """
entries:
  - match: {gpu: h100-sxm, engine: vllm, version: '0.18.0'}
    set: {step_overhead_s: 0.005}
  - match: {gpu: h100-sxm, engine: vllm}
    set: {step_overhead_s: 0.002}
"""


def test_calibration_entry_per_release_wins_over_the_engine_entry(tmp_path: Path):
    p = tmp_path / "cal.yaml"
    p.write_text(CAL)
    user = load_calibration(p)
    consts = engine_profile("vllm").constants
    at = {v: resolve_constants("h100-sxm", "bf16", "vllm", consts, user, version=v).step_overhead_s
          for v in ("0.18.0", "0.17.0", "")}
    assert at == {"0.18.0": 0.005, "0.17.0": 0.002, "": 0.002}
    # through the scenario's perf section
    pm = build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", PerfConfig(calibration=str(p), engine_version="0.18.0"))
    assert pm.constants.step_overhead_s == 0.005


def test_unquoted_version_is_one_input_error(tmp_path: Path):
    p = tmp_path / "cal.yaml"
    p.write_text("entries:\n  - match: {engine: vllm, version: 1.10}\n    set: {step_overhead_s: 0.001}\n")
    with pytest.raises(InputError, match=r"match version must be quoted text such as '0.18.0', got 1.1"):
        load_calibration(p)


def test_trtllm_overlap_scheduler_from_1_0():
    # trtllm-serve runs the PyTorch backend from 1.0, its overlap scheduler on by default: CPU work
    # of step n+1 overlaps the GPU step n. Unversioned scenarios keep the base (C++ runtime) profile.
    assert engine_profile("trtllm").constants["overlap_cpu"] == 0
    assert engine_profile("trtllm", "0.18.2").constants["overlap_cpu"] == 0
    for version in ("1.0.0rc3", "1.2.0rc6.post3", "1.3.0rc5"):
        assert engine_profile("trtllm", version).constants["overlap_cpu"] == 1
    over = {"step_overhead_s": 0.05}
    base = build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", PerfConfig(engine="trtllm", overrides=over))
    new = build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16",
                           PerfConfig(engine="trtllm", engine_version="1.0.0rc3", overrides=over))
    b = base.step_breakdown([], [1000] * 8)
    assert base.step_time_s([], [1000] * 8) == pytest.approx(b.gpu_s + b.overhead_s)
    assert new.step_time_s([], [1000] * 8) == pytest.approx(max(b.gpu_s, b.overhead_s))


def test_shipped_trtllm_release_constants_are_gpu_time_per_layer():
    # the per-release TensorRT-LLM entries of the serving fit carry GPU time per layer (the overlap
    # scheduler hides CPU time); a release without an entry keeps the (GPU, engine) constants
    from servesim.validation.silicon import serving_calibration_path

    user = load_calibration(Path(serving_calibration_path()))
    consts = lambda v: resolve_constants("b200", "bf16", "trtllm", engine_profile("trtllm", v).constants, user, version=v)
    fitted, other = consts("1.2.0rc6.post2"), consts("1.3.0rc1")
    assert fitted.overlap_cpu == 1 and other.overlap_cpu == 1
    # the release's own value, and the per-GPU value fitted on the rows no release entry covers
    assert (fitted.layer_floor_s, other.layer_floor_s) == (8.9e-05, 5.95e-05)
    assert fitted.step_overhead_s == other.step_overhead_s == consts("").step_overhead_s
