"""AIConfigurator's gap-analysis runs (the TensorRT-LLM 1.3.0rc1 and 1.3.0rc5 rows): the concurrency is the cluster's.

These rows are not runs of one replica. AIConfigurator's silicon_sample.csv (commit 095f58a; its
`silicon_data_source` column, left out of the shared copy) gives each of them a GPU-lab job and task id, a source
file under `aic-auto-gap-analysis/data/<system>/trtllm/<release>/` and a Dynamo image (tensorrtllm-runtime 0.8.1
for 1.3.0rc5, 0.9.0 for 1.3.0rc1): a deployment AIConfigurator chose, served by Dynamo (one frontend in front of
`workers` identical engines) and driven as a whole by one AIPerf client. In AIConfigurator's terms one worker's
concurrency is batch_size x attention_dp x pp (sdk/backends/base_backend.py, `concurrency = b * scale_factor`)
and a deployment's is that times its workers (sdk/sweep.py, `concurrency = r["concurrency"] * a_num`; the
generator's benchmark rule, `estimated_concurrency = agg_workers * max_batch_size`): the file's `concurrency` is the
client's over all workers, `batch_size` one worker's. The 1.3.0rc5 job shows it: each of its deployments fills
64 GPUs (Qwen3-32B-NVFP4 TP 2: 448 users = 14 x 32 workers on GB200, 416 = 13 x 32 on B200; DeepSeek-V3.1 TP 8:
448 = 56 x 8; its disaggregated rows: 40 prefill workers of 1 GPU and 6 decode workers of 4, concurrency = the
decode batch x 6). Dynamo's frontend routes round robin unless told otherwise (`--router-mode` defaults to
round-robin; AIConfigurator's generator turns the KV router on only for workloads with a shared prefix), so
with fixed lengths each worker serves batch_size x attention_dp users, and one worker with that many users is
played (the whole cluster behind a round-robin router plays the same means; docs/fidelity-history.md, trt13).
"""

from __future__ import annotations

from dataclasses import replace

from servesim.validation.silicon_file import SiliconRow

# (engine, release) of the gap-analysis campaigns: every row of these releases in the file is one (the upstream
# provenance column), and no other row is.
CLUSTER_CONCURRENCY = frozenset({("trtllm", "1.3.0rc1"), ("trtllm", "1.3.0rc5")})
# Campaigns whose measurements their recorded deployment does not reproduce, (engine, release) -> why. Read per
# worker, the 1.3.0rc1 runs (Dynamo 0.9.0) decode 1.8-14x slower than servesim plays them on every GPU and model
# (except the 1-user runs), and the same deployment is not monotonic in its load (GB200 Qwen3-32B, 2 workers of
# TP 2: 8.1 ms a token at 1 user, 41.9 ms at 2, 27.6 ms at 8); B200 DeepSeek-R1-NVFP4 on TP 8 takes 85-89 ms a token
# at 5-12 users a worker, where the 1.3.0rc5 job's DeepSeek-V3.1-NVFP4 (same architecture, GPU, TP and precision)
# took 21.2 ms at 56 and every other B200 campaign 8-44 ms at 32-128 users (docs/fidelity-history.md, trt13).
NOT_REPRODUCED = {
    ("trtllm", "1.3.0rc1"): ("TensorRT-LLM 1.3.0rc1 gap-analysis runs (Dynamo 0.9.0): the measured decode is several "
                             "times slower than the recorded deployment runs and does not follow the load"),
}


def worker_share(row: SiliconRow) -> SiliconRow:
    """`row` with the users one worker of its deployment served (batch_size x attention_dp of the cluster's
    concurrency) for the gap-analysis campaigns; every other row unchanged."""
    if row.mode != "agg" or (row.backend, row.version) not in CLUSTER_CONCURRENCY:
        return row
    return replace(row, concurrency=min(row.concurrency, row.batch_size * max(1, row.attention_dp)))


def campaign_reason(row: SiliconRow) -> str | None:
    """Why the campaign of `row` cannot be played from its recorded deployment, or None."""
    return NOT_REPRODUCED.get((row.backend, row.version))
