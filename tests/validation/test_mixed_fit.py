"""Mixed prefill + decode steps (validation/mixed.py): the prompt-cost ratio, the rows it reads, and
that the fit recovers the slowdown a set of measurements was made with."""

from __future__ import annotations

import pytest

from servesim.perf.build import build_perf_model
from servesim.validation import mixed
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions, row_scenario

from tests.validation.silicon_rows import silicon_row


def row(i, **changes):
    return silicon_row(i, **{"backend_version": "", **changes})


def test_prompt_cost_ratio_is_the_decode_excess_per_other_prompt_in_prefill_steps():
    r = row(0, isl="8192", osl="1024", concurrency="32", batch_size="32")
    s = row_scenario(r)
    pm = build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf)
    decode_s = pm.step_time_s([], [8192 + 512] * 32)
    prefill_s = pm.step_time_s([(8192, 0)], [])
    assert mixed.prompt_cost_ratio(r, decode_s) == pytest.approx(0.0, abs=1e-12)
    # every one of the 31 other prompts costing one prefill step, spread over the 1,023 gaps
    assert mixed.prompt_cost_ratio(r, decode_s + 31 * prefill_s / 1023) == pytest.approx(1.0, rel=1e-12)


def test_long_prompt_rows_are_the_batched_prompt_heavy_ones():
    rows = [row(0, isl="8192", osl="1024", concurrency="32"), row(1, isl="8192", osl="1024", concurrency="16"),
            row(2, isl="2048", osl="128", concurrency="64"), row(3, isl="8192", osl="4096", concurrency="64"),
            row(4, isl="4096", osl="1024", concurrency="64")]
    assert [r.id for r in mixed.long_prompt_rows(rows)] == ["r0", "r4"]


def test_fit_recovers_the_slowdown_the_measurements_were_made_with():
    # measurements made by servesim itself with mixed steps 50 % slower in their prompt tokens:
    # 1,024-2,048-token prompts among 12-24 users, each prompt sharing steps with the others' decodes
    options = ClientOptions(min_requests=4, requests_per_user=1)
    truth = {"mixed_prefill_slowdown": 0.5, "seq_gpu_s": 0.0}
    shapes = [(1024, 12), (2048, 16), (1024, 24), (2048, 12), (1024, 16), (2048, 24), (1024, 20), (2048, 20)]
    measured = []
    for i, (isl, users) in enumerate(shapes):
        r = row(i, isl=str(isl), osl="32", concurrency=str(users), batch_size=str(users))
        sim = simulate_row(r, options, overrides=truth)
        measured.append(row(i, isl=str(isl), osl="32", concurrency=str(users), batch_size=str(users),
                            silicon_ttft_ms=str(sim.ttft_s * 1e3), silicon_tpot_ms=str(sim.tpot_s * 1e3)))
    grid = {"mixed_prefill_slowdown": (0.0, 0.25, 0.5, 1.0), "seq_gpu_s": (0.0,)}
    logs: list[str] = []
    (entry,) = mixed.fit_mixed(measured, ("vllm",), options=options, min_fit_rows=4, grid=grid, log=logs.append)
    assert entry.match == {"gpu": "h100-sxm", "engine": "vllm"}
    assert entry.values == truth
    assert len(logs) == 1 and "(4 of 4 rows)" in logs[0] and "-> 0.0%" in logs[0]
