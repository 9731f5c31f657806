"""The release-less vLLM B200 front end (frontend.yaml `vllm@b200`; docs/fidelity-history.md, vl70_23): v0.10.2's API server
prepares each request serially in its one loop, so a round of users sent at once queues there. Of the ~40 ms a request
spends in the front end, 15 ms is serial (was 10): the 4-user first token stays, the 64-user one comes later."""

from __future__ import annotations

from servesim.simulation import simulate
from servesim.validation.run import client_metrics
from servesim.validation.silicon import ClientOptions, parse_row, row_request_counts, row_scenario
from tests.validation.test_vllm_b200_release_less_decode import LLAMA_B200

BEFORE = {"request_s": 0.01, "latency_s": 0.03}  # llama70v's split of the same 40 ms


def _ttft_s(users: int, frontend=None) -> float:
    row = parse_row({**LLAMA_B200, "tp_size": "8", "concurrency": str(users), "batch_size": str(users)})
    s = row_scenario(row, ClientOptions(), frontend=frontend)
    return client_metrics(simulate(s).requests, row_request_counts(row, ClientOptions()).measured_end)[0]


def test_the_release_less_b200_rows_take_the_serial_split():
    assert row_scenario(parse_row(LLAMA_B200)).frontend.constants() == (0.015, 1.4e-05, 0.025)
    for changes in ({"backend_version": "0.19.0"}, {"system": "b300_sxm"}):
        assert row_scenario(parse_row({**LLAMA_B200, **changes})).frontend.constants()[0] != 0.015, changes


def test_a_first_round_of_64_users_queues_in_the_serial_part():
    # TP 8, 1k/1k: measured 84 ms at 4 users, 263 ms at 64 (135-265 ms above 16 users on every TP: not GPU time)
    assert abs(_ttft_s(4) / _ttft_s(4, BEFORE) - 1) < 0.03
    assert _ttft_s(64) > 1.08 * _ttft_s(64, BEFORE)
