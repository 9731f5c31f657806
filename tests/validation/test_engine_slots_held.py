"""One batch slot held for TensorRT-LLM 1.0.0rc3 on H100 (silicon.ENGINE_SLOTS_HELD, on by default; exact and behavioural).

The measured runs of that campaign show a returning user waiting for the next request to finish
(TTFT grows with the output length by one request's service time over users - 1); with
ClientOptions.engine_slots_held (the default) those rows play one slot fewer, every other (engine,
system, version) keeps the recorded batch, and turned off nothing is held.
"""

from __future__ import annotations

from servesim.simulation import simulate
from servesim.validation.run import client_metrics
from servesim.validation.silicon import ENGINE_SLOTS_HELD, ClientOptions, parse_row, row_scenario
from tests.validation.test_silicon_mapping import BASE

LLAMA_H100 = {**BASE, "backend": "trtllm", "backend_version": "1.0.0rc3", "model_path": "meta-llama/Llama-3.1-8B-Instruct",
              "system": "h100_sxm", "gemm_quant_mode": "", "moe_quant_mode": "", "tp_size": "1", "moe_tp_size": "",
              "moe_ep_size": "", "attention_dp_size": "", "batch_size": "4", "concurrency": "4", "isl": "128", "osl": "64"}


def scenario(held: bool = True, **changes):
    return row_scenario(parse_row({**LLAMA_H100, **changes}), ClientOptions(engine_slots_held=held), calibration=None)


def test_only_the_h100_1_0_0rc3_runs_hold_a_slot():
    assert ENGINE_SLOTS_HELD == {("trtllm", "h100_sxm", "1.0.0rc3"): 1}
    held = scenario()
    assert held.engine.max_num_seqs == 3
    # the token budget stays the deployment's: recorded batch + prompt + 1,500, in 32-token blocks
    assert held.engine.max_num_batched_tokens == -(-(4 + 128 + 1500) // 32) * 32
    assert scenario(backend_version="1.2.0rc2").engine.max_num_seqs == 4
    assert scenario(system="h200_sxm").engine.max_num_seqs == 4
    assert scenario(backend="vllm", backend_version="0.18.0").engine.max_num_seqs == 4
    assert scenario(batch_size="1", concurrency="1").engine.max_num_seqs == 1  # never below one
    assert scenario(held=False).engine.max_num_seqs == 4  # turned off
    assert ClientOptions().engine_slots_held  # on by default


def mean_ttft_s(s) -> float:
    return client_metrics(simulate(s).requests)[0]


def test_a_held_slot_makes_ttft_grow_with_the_output_length():
    # With every slot free a returning user's prompt starts at once, whatever the output length; with
    # one held it waits for the next request to finish, about (service time) / (users - 1).
    def ttft(osl: str, version: str) -> float:
        return mean_ttft_s(scenario(osl=osl, backend_version=version))

    free_short, free_long = ttft("16", "1.2.0rc2"), ttft("256", "1.2.0rc2")
    held_short, held_long = ttft("16", "1.0.0rc3"), ttft("256", "1.0.0rc3")
    assert free_long < 1.5 * free_short
    assert held_long > 3 * held_short and held_long > 3 * free_long


def test_validate_flag_plays_the_held_slot(tmp_path):
    import csv

    from typer.testing import CliRunner

    from servesim.cli import app

    path = tmp_path / "silicon.csv"
    rows = [{**LLAMA_H100, "id": "held", "osl": "128"}, {**LLAMA_H100, "id": "free", "osl": "128", "backend_version": "1.2.0rc2"}]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(LLAMA_H100))
        w.writeheader()
        w.writerows(rows)

    def ttft_ms(*flags: str) -> dict[str, float]:
        out = tmp_path / "rows.csv"
        res = CliRunner().invoke(app, ["validate", "--measured", str(path), "-o", str(out), "--uncalibrated", *flags])
        assert res.exit_code == 0, res.output
        return {r["id"]: float(r["simulated_ttft_ms"]) for r in csv.DictReader(out.open())}

    off, on = ttft_ms("--no-engine-slots-held"), ttft_ms()
    assert on["free"] == off["free"]  # other releases are untouched
    assert on["held"] > 2 * off["held"]
