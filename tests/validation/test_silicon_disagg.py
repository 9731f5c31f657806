"""The silicon sample's disaggregated rows map to P/D scenarios, or say why they cannot."""

from __future__ import annotations

from servesim import load_scenario
from servesim.validation.silicon_disagg import map_row

ROW = {"id": "r1", "backend": "sglang", "model_path": "deepseek-ai/DeepSeek-R1", "system": "h200_sxm",
       "precision": "fp8", "gemm_quant_mode": "fp8", "mode": "disagg", "isl": "8192", "osl": "1024",
       "concurrency": "8", "prefill_num_workers": "", "prefill_tp_size": "8", "prefill_pp_size": "1",
       "prefill_attention_dp_size": "", "prefill_moe_ep_size": "", "prefill_batch_size": "",
       "decode_num_workers": "2", "decode_tp_size": "8", "decode_pp_size": "1", "decode_attention_dp_size": "",
       "decode_moe_ep_size": "1", "decode_batch_size": "64"}


def test_a_row_becomes_prefill_and_decode_pools_with_a_closed_loop_client():
    m = map_row(ROW)
    assert m.reason is None
    s = load_scenario(None, m.overrides)
    (p, d) = s.pools
    assert (p.role, p.replicas, p.tp, p.engine) == ("prefill", 1, 8, {"max_num_seqs": 8})
    assert (d.role, d.replicas, d.tp, d.engine) == ("decode", 2, 8, {"max_num_seqs": 64})
    assert (s.model, s.gpu, s.dtype, s.perf.engine) == ("deepseek-v3", "h200", "fp8", "sglang")
    assert s.workload.arrival.process == "closed" and s.workload.arrival.users == 8
    assert s.workload.num_requests == 24 and s.workload.lengths.prompt_tokens == 8192
    assert s.disaggregation.first_token == "prefill"


def test_rows_the_model_cannot_express_say_why():
    assert "FP4" in map_row({**ROW, "precision": "fp4"}).reason
    assert "gb200 is not in the GPU catalogue" in map_row({**ROW, "system": "gb200"}).reason
    assert "decode wide expert parallelism (EP 32)" in map_row({**ROW, "decode_moe_ep_size": "32"}).reason
    assert "prefill attention data parallelism (8)" in map_row({**ROW, "prefill_attention_dp_size": "8"}).reason
    assert "Qwen/Qwen3-32B is not in the catalogue" in map_row({**ROW, "model_path": "Qwen/Qwen3-32B"}).reason
    assert map_row({**ROW, "precision": "fp4"}).overrides is None


def test_mtp_turns_on_speculative_decoding_for_deepseek_rows_only():
    s = load_scenario(None, map_row(ROW, mtp_tokens=1, mtp_acceptance_rate=0.9).overrides)
    assert (s.engine.num_speculative_tokens, s.engine.spec_acceptance_rate) == (1, 0.9)
    assert load_scenario(None, map_row(ROW).overrides).engine.num_speculative_tokens == 0
    llama = {**ROW, "model_path": "meta-llama/Llama-3.1-8B", "prefill_tp_size": "1", "decode_tp_size": "1"}
    assert load_scenario(None, map_row(llama, mtp_tokens=1).overrides).engine.num_speculative_tokens == 0
