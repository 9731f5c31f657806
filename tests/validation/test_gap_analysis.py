"""AIConfigurator's gap-analysis rows (TensorRT-LLM 1.3.0rc1 / 1.3.0rc5): a cluster's concurrency, one worker played."""

from __future__ import annotations

import csv

from servesim.scenario import validate_scenario
from servesim.simulation import simulate
from servesim.validation.gap_analysis import CLUSTER_CONCURRENCY, NOT_REPRODUCED, campaign_reason, worker_share
from servesim.validation.run import client_metrics
from servesim.validation.silicon_file import open_measured
from servesim.validation.silicon import (ClientOptions, inexpressible_reason, parse_row, played_row, read_rows,
                                         row_request_counts, row_scenario)
from tests.validation.silicon_rows import SILICON

# The GB200 1.3.0rc5 Qwen3-32B-NVFP4 deployment: 32 workers of TP 2, 14 users each
GB200_RC5 = {
    "id": "q", "backend": "trtllm", "backend_version": "1.3.0rc5", "model_path": "nvidia/Qwen3-32B-NVFP4",
    "system": "gb200", "precision": "fp4", "mode": "agg", "isl": "15000", "osl": "500", "gemm_quant_mode": "nvfp4",
    "moe_quant_mode": "nvfp4", "batch_size": "14", "tp_size": "2", "pp_size": "1", "attention_dp_size": "1",
    "moe_tp_size": "1", "moe_ep_size": "1", "silicon_ttft_ms": "746.4", "silicon_tpot_ms": "13.67",
    "concurrency": "448",
}


def row(**changes):
    return parse_row({**GB200_RC5, **changes})


def test_a_campaign_row_plays_one_worker_with_its_batch():
    r = row()
    assert played_row(r).concurrency == 14 and inexpressible_reason(r) is None
    s = row_scenario(r, calibration=None)
    assert s.workload.arrival.users == 14 and s.engine.max_num_seqs == 14
    counts = row_request_counts(r, ClientOptions())
    assert counts == row_request_counts(row(concurrency="14"), ClientOptions()) and counts.measured == 56
    # attention DP: one worker serves batch x dp users
    assert worker_share(row(batch_size="5", attention_dp_size="4", concurrency="160")).concurrency == 20


def test_other_releases_and_disaggregated_rows_keep_the_recorded_concurrency():
    for other in (row(backend_version="1.2.0rc6.post2"), row(backend="vllm"), row(mode="disagg")):
        assert worker_share(other) is other
    assert row_scenario(row(backend_version="1.2.0rc6.post2"), calibration=None).workload.arrival.users == 448


def test_the_rc5_job_fills_64_gpus_with_concurrency_batch_times_workers():
    """The premise, checked on the file: each 1.3.0rc5 deployment (aggregated and disaggregated) is 64 GPUs when
    its concurrency is one worker's batch (x attention DP) times the workers."""
    raw = [r for r in csv.DictReader(open_measured(SILICON)) if r["backend_version"] == "1.3.0rc5"]
    assert len(raw) == 6
    for r in raw:
        c = int(r["concurrency"])
        if r["mode"] == "agg":
            per_worker = int(r["batch_size"]) * max(1, int(r["attention_dp_size"] or 1))
            assert c % per_worker == 0 and c // per_worker * int(r["tp_size"]) == 64, r["id"]
        else:
            assert c == int(r["decode_batch_size"]) * int(r["decode_num_workers"]), r["id"]
            gpus = sum(int(r[f"{side}_num_workers"]) * int(r[f"{side}_tp_size"]) for side in ("prefill", "decode"))
            assert gpus == 64, r["id"]


def test_rc1_rows_are_listed_not_expressible_and_no_other_row():
    rows = read_rows(SILICON)
    why = NOT_REPRODUCED[("trtllm", "1.3.0rc1")]
    flagged = [r for r in rows if campaign_reason(r) == why]
    assert len(flagged) == 26 and {r.version for r in flagged} == {"1.3.0rc1"}
    assert all(inexpressible_reason(r) == why for r in flagged)
    campaign = [r for r in rows if (r.backend, r.version) in CLUSTER_CONCURRENCY]
    assert len(campaign) == 32 and all(r.version in ("1.3.0rc1", "1.3.0rc5") for r in campaign)


def test_round_robin_over_the_workers_plays_the_same_means_as_one_worker():
    """Fixed lengths behind Dynamo's default round-robin router: every worker serves its share, so the cluster's
    client means equal one worker's (4 workers of 8 users, 4 measured requests per user either way)."""
    r = row(isl="512", osl="32", batch_size="8", concurrency="32")
    one = row_scenario(r, calibration=None)
    ttft1, tpot1, n1 = client_metrics(simulate(one).requests, row_request_counts(r, ClientOptions()).measured_end)
    # the same worker (engine, perf, front end) 4 times behind the router, the client of all 32 users
    whole = row(isl="512", osl="32", batch_size="8", concurrency="32", backend_version="1.2.0rc6.post2")
    data = {**one.model_dump(), "replicas": 4, "workload": row_scenario(whole, calibration=None).workload.model_dump()}
    cluster = validate_scenario(data, "cluster")
    assert cluster.workload.arrival.users == 32
    end = row_request_counts(whole, ClientOptions()).measured_end
    ttft4, tpot4, n4 = client_metrics(simulate(cluster).requests, end)
    assert (n1, n4) == (32, 128)
    assert abs(ttft4 / ttft1 - 1) < 1e-9 and abs(tpot4 / tpot1 - 1) < 1e-9
