"""SGLang B200 DeepSeek-R1 rows of 0.5.9 measured by InferenceMAX's SGLang scripts play those
scripts' flags (running cap, prefill budgets, memory share, FP8 KV, the scheduler's receive
interval) and client, only where the script's sweep ran them."""

from __future__ import annotations

from servesim.perf import build_perf_model
from servesim.validation import silicon
from servesim.simulation import simulate
from servesim.validation.inferencemax import QWEN35_MTP_ACCEPTANCE, SCRIPT_GDN_COMPILE_S, SPEC_V1_CPU, recipe
from servesim.validation.run import client_metrics
from servesim.validation.silicon import ClientOptions, parse_row, played_row, row_request_counts, row_scenario
from servesim.validation.silicon_file import read_rows, recover_versions
from tests.validation.test_silicon_mapping import BASE
from tests.validation.silicon_rows import SILICON

DSR1_FP4 = {**BASE, "backend": "sglang", "backend_version": "0.5.9", "model_path": "deepseek-ai/DeepSeek-V3",
            "system": "b200_sxm", "gemm_quant_mode": "nvfp4", "tp_size": "16", "moe_tp_size": "4", "moe_ep_size": "4",
            "attention_dp_size": "1", "batch_size": "64", "concurrency": "64", "isl": "1024", "osl": "1024"}


def scenario(options: ClientOptions = ClientOptions(), **changes):
    return row_scenario(parse_row({**DSR1_FP4, **changes}), options)


def sched(s) -> dict:
    return s.scheduler.model_dump()


def test_fp4_row_plays_the_script_flags_and_client():
    s = scenario()
    assert s.tp == 4  # the recorded tp 16 is the engine's --tp 4 x --ep 4
    assert (s.engine.max_num_seqs, s.engine.gpu_memory_utilization) == (256, 0.85)
    assert (sched(s)["max_running_requests"], sched(s)["chunked_prefill_size"], sched(s)["max_prefill_tokens"]) == (256, 16384, 16384)
    assert sched(s)["scheduler_recv_interval"] == 30  # 16 users or more
    assert s.perf.kv_cache_dtype == "fp8"  # --kv-cache-dtype fp8_e4m3 (auto would take 16 bits for FP4 weights)
    assert s.workload.num_requests == 640 and s.workload.arrival.warmup_requests == 0
    assert (s.workload.lengths.prompt_tokens, s.workload.lengths.output_tokens) == ((819, 1024), (819, 1024))
    assert sched(scenario(concurrency="8", batch_size="8"))["scheduler_recv_interval"] == 10


def test_fp8_flags_by_tp_and_only_inside_the_sweep():
    fp8 = {"gemm_quant_mode": "fp8", "model_path": "deepseek-ai/DeepSeek-R1", "moe_tp_size": "", "moe_ep_size": "1"}
    s = scenario(**fp8, tp_size="8")
    assert (sched(s)["max_running_requests"], sched(s)["max_prefill_tokens"], sched(s)["scheduler_recv_interval"]) == (128, 32768, 30)
    s = scenario(**fp8, tp_size="4", isl="8192", concurrency="32", batch_size="32")
    assert (sched(s)["max_running_requests"], sched(s)["max_prefill_tokens"], sched(s)["scheduler_recv_interval"]) == (32, 8192, 10)
    assert s.engine.gpu_memory_utilization == 0.95
    # outside the plain sweep (TP 8 above 64 users, 8k/1k at TP 8 above 4 users): the MTP script
    for changes in ({**fp8, "tp_size": "8", "concurrency": "128", "batch_size": "128"},
                    {**fp8, "tp_size": "8", "isl": "8192", "concurrency": "8", "batch_size": "8"}):
        s = scenario(**changes)
        assert (sched(s)["max_running_requests"], sched(s)["max_prefill_tokens"], s.engine.num_speculative_tokens) == (512, 16384, 2)
    # another release or engine: the generator's deployment and AIPerf's client
    for changes in ({"backend_version": ""}, {"backend_version": "nightly-dev"}):
        s = scenario(**changes)
        assert sched(s).get("scheduler_recv_interval", 1) == 1 and "max_running_requests" not in s.scheduler.model_fields_set
        assert s.workload.lengths.prompt_tokens == int(changes.get("isl", "1024"))  # fixed lengths
    assert row_request_counts(parse_row({**DSR1_FP4, "backend_version": ""}), ClientOptions()).measured_end is not None


def test_the_receive_interval_delays_first_tokens_of_a_64_user_row():
    # the same row with the interval off: every returning user's prompt is taken at the next
    # step, not after up to 30 decode steps of the others
    row = parse_row(DSR1_FP4)
    s = row_scenario(row, ClientOptions())
    off = s.model_copy(update={"scheduler": s.scheduler.model_copy(update={"scheduler_recv_interval": 1})})
    counts = row_request_counts(row, ClientOptions())
    ttft, tpot, n = client_metrics(simulate(s).requests, counts.measured_end)
    ttft_off, tpot_off, _ = client_metrics(simulate(off).requests, counts.measured_end)
    assert n == 640
    assert ttft > 1.4 * ttft_off  # about 15 decode steps of ~20 ms on a ~0.3 s first token
    assert abs(tpot / tpot_off - 1) < 0.1


def test_h200_scripts_run_prefill_batches_alone_with_their_budgets():
    # dsr1_fp8_h200.sh / qwen3.5_fp8_h200.sh: no --enable-mixed-chunk, so the generator's H200
    # settings (mixed chunks, max_prefill_tokens = prompt + 1,500) give way; no receive interval
    h200 = {"system": "h200_sxm", "gemm_quant_mode": "fp8", "tp_size": "8", "moe_tp_size": "", "moe_ep_size": "1",
            "model_path": "deepseek-ai/DeepSeek-R1"}
    s = scenario(**h200)
    assert sched(s)["enable_mixed_chunk"] is False and sched(s)["scheduler_recv_interval"] == 1
    assert (sched(s)["max_running_requests"], sched(s)["chunked_prefill_size"], sched(s)["max_prefill_tokens"]) == (512, 32768, 32768)
    assert sched(scenario(**h200, osl="8192"))["max_running_requests"] == 256  # 512 at 1k/1k only
    qwen = scenario(**{**h200, "model_path": "Qwen/Qwen3.5-397B-A17B", "tp_size": "64", "moe_tp_size": "8",
                       "moe_ep_size": "8"})  # (recorded as the engine's --tp 8 x --ep 8 product)
    assert qwen.tp == 8 and qwen.perf.kv_cache_dtype == "fp8" and sched(qwen)["chunked_prefill_size"] == 16384
    assert qwen.engine.gpu_memory_utilization == 0.8
    # not played: the Qwen3.5 B200 script and GLM-5 on H200 keep the generator's deployment
    for changes in ({"model_path": "Qwen/Qwen3.5-397B-A17B", "gemm_quant_mode": "fp8", "tp_size": "8", "moe_tp_size": "", "moe_ep_size": "1"},
                    {**h200, "model_path": "zhipuai/GLM-5", "backend_version": "glm5-hopper"}):
        assert "scheduler_recv_interval" not in scenario(**changes).scheduler.model_fields_set


def _constants(row: dict, calibration="shipped"):
    from servesim.perf import build_perf_model
    s = row_scenario(parse_row(row), ClientOptions(), calibration=calibration)
    return build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants


def test_b200_scripts_stream_weights_at_tensorrt_llm_s_efficiency():
    # --moe-runner-backend flashinfer_trtllm: TensorRT-LLM's kernels, so TensorRT-LLM's B200 weight
    # streaming (its (GPU, engine) entry, 0.85); the per-layer floor and CPU time stay SGLang 0.5.9's
    fp8 = {"gemm_quant_mode": "fp8", "model_path": "deepseek-ai/DeepSeek-R1", "moe_tp_size": "", "moe_ep_size": "1"}
    trtllm = _constants({**DSR1_FP4, **fp8, "backend": "trtllm", "backend_version": "", "tp_size": "8"})
    for row in (DSR1_FP4, {**DSR1_FP4, **fp8, "tp_size": "8"},
                {**DSR1_FP4, **fp8, "tp_size": "4", "isl": "8192", "concurrency": "32", "batch_size": "32"}):
        c = _constants(row)
        assert c.eta_memory == trtllm.eta_memory == 0.85
        assert (c.layer_floor_s, c.step_overhead_s) == (4.0e-05, 0.009)
    # the MTP script's rows (outside the plain sweep) too
    assert _constants({**DSR1_FP4, **fp8, "tp_size": "8", "concurrency": "128", "batch_size": "128"}).eta_memory == 0.85
    # so do the release's Qwen3.5 TP 4 x EP 4 rows, which play qwen3.5_fp8_b200.sh (sgb27); the generator's
    # deployments keep SGLang's efficiency (the unversioned runs); uncalibrated nothing is set
    qwen = {**DSR1_FP4, "model_path": "Qwen/Qwen3.5-397B-A17B", "gemm_quant_mode": "fp8", "tp_size": "16",
            "moe_tp_size": "4", "moe_ep_size": "4"}
    assert _constants(qwen).eta_memory == 0.85
    assert _constants({**DSR1_FP4, "backend_version": ""}).eta_memory == 0.51
    assert _constants(DSR1_FP4, calibration=None).eta_memory == _constants(DSR1_FP4 | {"backend_version": ""}, None).eta_memory


def test_the_kernels_bring_a_64_user_decode_to_the_measured_tpot():
    # dsr1_b200_sglang_fp4_agg_1024x1024_c64_cfg202 measures 20.1 ms a token; SGLang's efficiency
    # played 29.0 ms (+45 %); the release's price per prompt token (sgb27), which stalls the decodes too, left out
    row = parse_row(DSR1_FP4)
    counts = row_request_counts(row, ClientOptions())
    s = row_scenario(row, ClientOptions(), overrides={"prompt_token_gpu_s": 0.0})
    ttft, tpot, _ = client_metrics(simulate(s).requests, counts.measured_end)
    sglang = row_scenario(row, ClientOptions(), overrides={"eta_memory": 0.51, "prompt_token_gpu_s": 0.0})
    _, tpot_sglang, _ = client_metrics(simulate(sglang).requests, counts.measured_end)
    assert abs(tpot / 0.0201 - 1) < 0.1 < tpot_sglang / 0.0201 - 1


FP8_TP8 = {**DSR1_FP4, "gemm_quant_mode": "fp8", "model_path": "deepseek-ai/DeepSeek-R1", "tp_size": "8",
           "moe_tp_size": "", "moe_ep_size": "1", "concurrency": "8", "batch_size": "8"}


def test_a_point_run_twice_plays_the_script_of_each_run():
    # dsr1_fp8_b200.sh and dsr1_fp8_b200_mtp.sh both ran TP 8 at 4-64 users; the plain config's export
    # (`dsr1_..._cfg87`, recorded as DeepSeek-V3) holds the plain run, the 2026 exports both runs
    exported = {**FP8_TP8, "id": "dsr1_b200_sglang_fp8_agg_1024x1024_c8_cfg87", "model_path": "deepseek-ai/DeepSeek-V3",
                "silicon_ttft_ms": "226.6236775503785", "silicon_tpot_ms": "10.806980760614534"}
    plain = {**exported, "id": "2026_03_25_a", "model_path": "deepseek-ai/DeepSeek-R1",
             "silicon_ttft_ms": "226.62367755037849"}  # the same run, its mean round-tripped to another last digit
    mtp = {**plain, "id": "2026_03_25_b", "silicon_ttft_ms": "363.9924537856132", "silicon_tpot_ms": "8.814680342504438"}
    rows = recover_versions([parse_row(r) for r in (exported, plain, mtp)])
    assert [r.unexported_run for r in rows] == [False, False, True]
    for row, running, drafts, overlap in ((rows[1], 128, 0, 1.0), (rows[2], 512, 2, 0.0)):
        s = row_scenario(row, ClientOptions())
        assert (sched(s)["max_running_requests"], s.engine.num_speculative_tokens) == (running, drafts)
        assert build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants.overlap_cpu == overlap
    # without the export nothing tells the runs apart: the plain sweep's script plays both
    alone = recover_versions([parse_row(r) for r in (plain, mtp)])
    assert [sched(row_scenario(r, ClientOptions()))["max_running_requests"] for r in alone] == [128, 128]


def test_the_measured_file_s_mtp_runs():
    # 66 B200 0.5.9 DeepSeek-R1 FP8 rows: 26 outside the plain sweep, 17 inside it that the export does
    # not hold (the faster per token of each pair), the other 23 the plain script's
    rows = [r for r in read_rows(SILICON) if (r.backend, r.system, r.version, r.model, r.gemm_quant, r.mode)
            == ("sglang", "b200_sxm", "0.5.9", "deepseek-ai/DeepSeek-R1", "fp8", "agg")]
    drafts = {r.id: (recipe(played_row(r)).engine.get("num_speculative_tokens", 0)) for r in rows}
    assert len(rows) == 66 and sum(1 for d in drafts.values() if d == 2) == 43
    assert sum(1 for r in rows if r.unexported_run) == 17 and all(drafts[r.id] == 2 for r in rows if r.unexported_run)
    assert all(drafts[r.id] == 0 for r in rows if r.tp == 4 or r.concurrency == 4 and r.tpot_s > 0.0085)


def test_no_overlap_makes_the_release_s_serial_cpu_time_add_to_the_drafted_step():
    # spec v1 (SGLANG_ENABLE_SPEC_V2 never exported): no overlap scheduler, and the release's serial CPU time per
    # step and running request, not the 9 ms floor the plain rows' overlapped steps show
    row = parse_row({**FP8_TP8, "isl": "8192"})  # 8k/1k at 8 users: outside the plain sweep
    serial = SPEC_V1_CPU[("b200_sxm", "0.5.9")]
    s = row_scenario(row, ClientOptions())
    c = build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants
    assert (c.overlap_cpu, c.step_overhead_s, c.seq_overhead_s) == (0.0, serial["step_overhead_s"], serial["seq_overhead_s"])
    plain = row_scenario(parse_row({**FP8_TP8, "concurrency": "16", "batch_size": "16"}), ClientOptions())  # plain sweep
    p = build_perf_model(plain.model, plain.gpu, plain.tp, plain.dtype, plain.perf).constants
    assert (plain.engine.num_speculative_tokens, p.overlap_cpu, p.step_overhead_s, p.seq_overhead_s) == (0, 1.0, 0.009, 1e-05)
    # played: the same MTP row with the overlap scheduler decodes faster, by at least the serial time of a step
    # spread over the 3 tokens a step emits at most
    counts = row_request_counts(row, ClientOptions())
    overlap = row_scenario(row, ClientOptions(), overrides={"overlap_cpu": 1.0})
    _, tpot, _ = client_metrics(simulate(s).requests, counts.measured_end)
    _, tpot_overlap, _ = client_metrics(simulate(overlap).requests, counts.measured_end)
    assert s.engine.num_speculative_tokens == 2
    assert tpot - tpot_overlap > (serial["step_overhead_s"] + 8 * serial["seq_overhead_s"]) / 3


QWEN35_TP4 = {**DSR1_FP4, "gemm_quant_mode": "fp8", "model_path": "Qwen/Qwen3.5-397B-A17B", "tp_size": "4",
              "moe_tp_size": "4", "moe_ep_size": "1", "concurrency": "16", "batch_size": "16", "isl": "8192"}


def test_the_qwen35_tp4_rows_are_the_mtp_script_s_runs():
    # 152 B200 0.5.9 Qwen3.5 rows: the 63 TP 4 all-TP ones are qwen3.5_fp8_b200_mtp.sh's grid (3 EAGLE drafts); the
    # TP 8 and TP 4 x EP 4 ones (the plain script's, played since sgb27) draft nothing
    rows = [played_row(r) for r in read_rows(SILICON) if (r.backend, r.system, r.version, r.model)
            == ("sglang", "b200_sxm", "0.5.9", "Qwen/Qwen3.5-397B-A17B")]
    drafts = [(r.tp, r.moe_ep, (recipe(r).engine.get("num_speculative_tokens", 0) if recipe(r) else 0)) for r in rows]
    assert len(rows) == 152 and sum(1 for d in drafts if d == (4, 1, 3)) == 63
    assert all(d[2] == 0 for d in drafts if d[:2] != (4, 1))


def test_qwen35_mtp_rows_play_spec_v1_the_trtllm_kernels_and_the_release_s_compile():
    s = row_scenario(parse_row(QWEN35_TP4), ClientOptions())
    c = build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants
    serial = SPEC_V1_CPU[("b200_sxm", "0.5.9")]
    assert (s.engine.num_speculative_tokens, s.engine.spec_acceptance_rate) == (3, QWEN35_MTP_ACCEPTANCE)
    assert (c.overlap_cpu, c.step_overhead_s, c.seq_overhead_s) == (0.0, serial["step_overhead_s"], serial["seq_overhead_s"])
    assert c.eta_memory == 0.85 and c.gdn_compile_s == SCRIPT_GDN_COMPILE_S[("b200_sxm", "0.5.9")] > 0
    assert (sched(s)["chunked_prefill_size"], sched(s)["max_prefill_tokens"], s.perf.kv_cache_dtype) == (32768, 32768, "fp8")
    assert (s.workload.lengths.prompt_tokens, s.workload.num_requests) == ((6553, 8192), 160)  # the script's client
    # the plain script's TP 4 x EP 4 rows play it (sgb27): no drafts, the same compile, the release's floor, overlap
    ep = row_scenario(parse_row({**QWEN35_TP4, "tp_size": "16", "moe_ep_size": "4"}), ClientOptions())
    e = build_perf_model(ep.model, ep.gpu, ep.tp, ep.dtype, ep.perf).constants
    assert (ep.engine.num_speculative_tokens, e.step_overhead_s, e.overlap_cpu) == (0, 0.009, 1.0)
    assert e.gdn_compile_s == SCRIPT_GDN_COMPILE_S[("b200_sxm", "0.5.9")]


def test_spec_v1_rows_hand_out_first_tokens_at_their_batch_s_end(monkeypatch):
    # issue 14 sgovl27: spec v1 turns SGLang's overlap loop off, so a release keyed for the overlap loop's late first
    # tokens (`consecutive_prefill_launch_share`) holds none on its MTP script's rows; its plain rows take the key
    monkeypatch.setitem(silicon.SGLANG_CONSECUTIVE_PREFILL_LAUNCH_SHARE, ("b200_sxm", "0.5.9"), 0.5)
    mtp = row_scenario(parse_row(QWEN35_TP4), ClientOptions())
    plain = row_scenario(parse_row({**QWEN35_TP4, "tp_size": "16", "moe_ep_size": "4"}), ClientOptions())
    assert mtp.engine.num_speculative_tokens == 3 and getattr(mtp.scheduler, "consecutive_prefill_launch_share") == 0.0
    assert plain.engine.num_speculative_tokens == 0 and getattr(plain.scheduler, "consecutive_prefill_launch_share") == 0.5


def test_the_release_s_plain_script_rows_take_arrivals_as_a_prompt_step_starts():
    # issue 14 sgadm29: every plain B200 0.5.9 script (dsr1_fp8_b200.sh at TP 8 and TP 4, dsr1_fp4_b200.sh,
    # qwen3.5_fp8_b200.sh) runs `event_loop_overlap` with a receive interval above 1, so the take a prompt step triggers
    # runs as that step starts; the MTP scripts run spec v1, SGLang's plain loop, and take at the step's end
    rows = [played_row(r) for r in read_rows(SILICON) if (r.backend, r.system, r.version) == ("sglang", "b200_sxm", "0.5.9")
            and silicon.inexpressible_reason(r) is None]
    takes = {}
    for row in rows:
        r = recipe(row)
        key = (r.engine.get("num_speculative_tokens", 0) > 0, r.scheduler.get("overlap_loop_take", False))
        takes[key] = takes.get(key, 0) + 1
    assert takes == {(False, True): 158, (True, False): 106}
    plain = row_scenario(parse_row({**FP8_TP8, "concurrency": "16", "batch_size": "16"}), ClientOptions())
    assert (sched(plain)["overlap_loop_take"], sched(plain)["scheduler_recv_interval"]) == (True, 30)
    fp4 = scenario(concurrency="8", batch_size="8")  # the NVFP4 script
    assert sched(fp4)["overlap_loop_take"] is True
    # refitted with the take on the fit side: the NVFP4 rows' prompt price 3 us (the FP8 ones keep 18 us), the front end
    # without a serial time per prompt token (docs/fidelity-history.md, sgadm29)
    priced = lambda s: build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants.prompt_token_gpu_s  # noqa: E731
    assert (priced(fp4), priced(plain)) == (3.0e-06, 1.8e-05)
    assert fp4.frontend.constants()[1:] == plain.frontend.constants()[1:] == (0.0, 0.13)
    mtp = row_scenario(parse_row(QWEN35_TP4), ClientOptions())
    assert mtp.engine.num_speculative_tokens == 3 and sched(mtp).get("overlap_loop_take", False) is False
