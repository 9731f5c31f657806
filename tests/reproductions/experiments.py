"""The headline experiments of docs/scheduling.md as scenario builders (small for tests, larger
for `benchmarks/repro_scheduling.py`), so the tests and the figures run the same setups."""

from __future__ import annotations

from servesim.scenario import validate_scenario
from servesim.simulation import simulate


def run(scenario: dict) -> dict:
    return simulate(validate_scenario(scenario)).summary()


def sarathi_vs_v0(scheduler: dict, rate_per_s: float, num_requests: int = 150, seed: int = 0) -> dict:
    """E1 (spec §13): Mistral-7B on one A100-80GB, arxiv-summarization-like long prompts."""
    return {
        "seed": seed, "model": "mistral-7b", "gpu": "a100-80gb",
        "engine": {"max_model_len": 16384, "max_num_seqs": 128},
        "scheduler": scheduler,
        "workload": {"arrival": {"process": "poisson", "rate_per_s": rate_per_s},
                     "lengths": {"dataset": "arxiv"}, "num_requests": num_requests},
    }


SARATHI = {"name": "sarathi", "chunk_size": 512}
VLLM_V0 = {"name": "vllm-v0", "max_num_seqs": 128}


def capacity(scheduler: dict, rates: list[float], tbt_slo_s: float, num_requests: int = 150) -> float:
    """Largest rate of `rates` with P99 inter-token latency <= SLO and median TTFT <= 2 s
    (Sarathi-Serve's capacity: P99 TBT and median scheduling delay)."""
    best = 0.0
    for rate in rates:
        s = run(sarathi_vs_v0(scheduler, rate, num_requests))
        if s["itl_s"]["p99"] <= tbt_slo_s and s["ttft_s"]["p50"] <= 2.0:
            best = rate
    return best


def vtc_overload(scheduler: dict, duration_s: float = 120.0, seed: int = 0) -> dict:
    """E2: 2 tenants at 1.5 and 3 req/s (Poisson), 256 input = 256 output tokens, Llama-2-7B on
    an A10G (the VTC artifact's overload suite); measured while both are backlogged."""
    return {
        "seed": seed, "model": "llama-2-7b", "gpu": "a10g",
        "scheduler": scheduler,
        "workload": {"arrival": {"process": "poisson", "rate_per_s": 4.5},
                     "lengths": {"prompt_tokens": 256, "output_tokens": 256},
                     "attributes": {"tenants": {"light": 1 / 3, "heavy": 2 / 3}},
                     "duration_s": duration_s},
        "max_sim_time_s": duration_s,
    }


def paged_vs_reservation(scheduler: dict, rate_per_s: float, num_requests: int = 300, seed: int = 0) -> dict:
    """E3: OPT-13B on one A100-40GB, ShareGPT lengths, max length 2048 (vLLM paper's Orca setup)."""
    return {
        "seed": seed, "model": "opt-13b", "gpu": "a100-40gb",
        "engine": {"max_model_len": 2048, "enable_prefix_caching": False},
        "scheduler": scheduler,
        "workload": {"arrival": {"process": "poisson", "rate_per_s": rate_per_s},
                     "lengths": {"dataset": "sharegpt", "max_prompt_tokens": 1024, "max_output_tokens": 1024},
                     "num_requests": num_requests},
    }


def mooncake_prefix(policy: str, num_requests: int = 600, seed: int = 0) -> dict:
    """E5: the Mooncake conversation trace at twice its rate on Llama-3.1-8B, TP 4 on H100s."""
    return {
        "seed": seed, "tp": 4,
        "scheduler": {"name": "sglang", "schedule_policy": policy},
        "workload": {"trace": {"name": "mooncake-conversation", "speedup": 2.0}, "num_requests": num_requests},
    }


class HeavyTailedPrograms:
    """Agent programs with a heavy-tailed number of sequential calls (most programs make one
    or two calls, a few make many), as in Autellix's workloads; each next call is issued a
    tool time after the previous one finished and carries the program's context so far.
    The generated `programs:` workload has one fixed DAG for every program, so this small
    closed-loop workload is used in its place (`patched_workload`)."""

    expected_num_requests = None
    skipped_rows = 0

    def __init__(self, num_programs: int, rate_per_s: float, seed: int = 0, tool_s: float = 0.5,
                 calls=(1, 2, 16), weights=(0.6, 0.3, 0.1)) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        self.tool_s = tool_s
        self.rng = rng
        self.starts = np.cumsum(rng.exponential(1 / rate_per_s, num_programs))
        self.num_calls = rng.choice(calls, size=num_programs, p=weights)
        self._next_id = 0
        self._calls_left: dict[int, int] = {}

    def _call(self, program: int, arrival_s: float, context: int, index: int, parents: tuple = ()):
        from servesim.workload.request import Request

        self._next_id += 1
        prompt = context + int(self.rng.integers(200, 800))
        return Request(id=self._next_id, arrival_s=float(arrival_s), prompt_len=prompt,
                       output_len=int(self.rng.integers(50, 300)), program_id=program, call_index=index,
                       parents=parents)

    def arrivals(self):
        for p, (start, n) in enumerate(zip(self.starts, self.num_calls)):
            self._calls_left[p] = int(n) - 1
            yield self._call(p, start, 0, 0)

    def on_request_done(self, req, now_s: float) -> list:
        left = self._calls_left.get(req.program_id, 0)
        if left <= 0 or req.state.name != "FINISHED":
            return []
        self._calls_left[req.program_id] = left - 1
        context = min(req.prompt_len + req.output_len, 6000)
        return [self._call(req.program_id, now_s + self.tool_s, context, req.call_index + 1, (req.id,))]


def run_programs(scheduler: dict, num_programs: int = 200, rate_per_s: float = 2.0,
                 gpu_memory_utilization: float = 0.26, seed: int = 0, enable_prefix_caching: bool = True) -> dict:
    """E4: heavy-tailed agent programs on Llama-3.1-8B / A100-80GB, KV-memory bound (0.26 of
    the GPU leaves 2,300 blocks = 36,800 tokens of KV cache)."""
    from unittest import mock

    scenario = validate_scenario({"seed": seed, "model": "llama-3.1-8b", "gpu": "a100-80gb",
                                  "engine": {"gpu_memory_utilization": gpu_memory_utilization,
                                             "enable_prefix_caching": enable_prefix_caching},
                                  "scheduler": scheduler})
    workload = HeavyTailedPrograms(num_programs, rate_per_s, seed)
    with mock.patch("servesim.simulation.build_workload", lambda *a: workload):
        return simulate(scenario).summary()


def online_offline(scheduler: dict, rate_per_s: float = 4.0, num_requests: int = 600, seed: int = 0) -> dict:
    """E6: half of the ShareGPT requests are offline (batch) work sharing one Llama-3.1-8B on
    an A100-80GB with online traffic."""
    return {"seed": seed, "model": "llama-3.1-8b", "gpu": "a100-80gb", "scheduler": scheduler,
            "workload": {"arrival": {"process": "poisson", "rate_per_s": rate_per_s},
                         "lengths": {"dataset": "sharegpt"}, "attributes": {"offline_share": 0.5},
                         "num_requests": num_requests}}


def online_offline_stats(scenario: dict) -> dict:
    """Online P99 TTFT and TPOT, offline output tokens per second over the run."""
    import numpy as np

    r = simulate(validate_scenario(scenario))
    done = [q for q in r.requests if q.state.name == "FINISHED"]
    online = [q for q in done if not q.is_offline]
    end_s = max(q.finish_s for q in done)
    return {
        "online_ttft_p99_s": float(np.percentile([q.first_token_s - q.arrival_s for q in online], 99)),
        "online_tpot_p99_s": float(np.percentile([(q.finish_s - q.first_token_s) / (q.output_len - 1)
                                                  for q in online if q.output_len > 1], 99)),
        "offline_tokens_per_s": sum(q.output_len for q in done if q.is_offline) / end_s,
    }
