"""CPU cost of a speculative decode step, fast-forwarded (`replica/spec_stretch.py`) or stepped.

    python benchmarks/bench_spec_decode.py            # batches of 1, 4 and 16 requests
    python benchmarks/bench_spec_decode.py --batch 8 --output 5000

One Llama-3.1-8B replica on an H100 (the perf model of the examples), k = 3 drafts accepted
70% of the time, `--batch` requests of 500 prompt tokens arriving together and decoding
`--output` tokens each: after the prompt step every step is a decode step, so the fast-forward
covers the whole run. Prints CPU µs per engine step and per request-step, both ways (the
results are identical: tests/replica/test_spec_fast_forward.py). Not a timed test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from servesim.core.loop import PRIO_ARRIVAL, EventLoop
from servesim.metrics.recorder import Recorder
from servesim.perf.build import build_perf_model
from servesim.replica.config import EngineConfig
from servesim.replica.engine import Engine
from servesim.replica.schedulers import get_scheduler
from servesim.workload.request import Request


def run(batch: int, output: int, fast_forward: bool) -> tuple[int, float]:
    """(engine steps, CPU seconds) of one run."""
    config = EngineConfig(max_num_batched_tokens=8192, max_num_seqs=max(batch, 1), max_model_len=16384,
                          num_speculative_tokens=3, spec_acceptance_rate=0.7, fast_forward=fast_forward)
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    cls = get_scheduler("vllm")
    kv = cls.make_kv_cache(20_000, config.block_size, config.enable_prefix_caching, 0)
    loop = EventLoop()
    engine = Engine(config, cls(cls.Params(), config, kv, perf), kv, perf, loop, Recorder(), lambda r, t: None,
                    rng=np.random.default_rng(0))
    for i in range(batch):
        req = Request(id=i, arrival_s=0.0, prompt_len=500, output_len=output)
        loop.schedule(0.0, lambda t, r: engine.add_request(r, t), req, PRIO_ARRIVAL)
    c0 = time.process_time()
    loop.run()
    return engine.num_steps, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 4, 16], help="requests decoding together")
    ap.add_argument("--output", type=int, default=3000, help="tokens each request generates")
    args = ap.parse_args()
    print("| batch | steps | fast-forward µs / step | stepping µs / step | fast-forward µs / request-step "
          "| stepping µs / request-step |\n|---|---|---|---|---|---|")
    for n in args.batch:
        steps, ff_s = run(n, args.output, True)
        steps_b, step_s = run(n, args.output, False)
        assert steps == steps_b
        print(f"| {n} | {steps:,} | {ff_s / steps * 1e6:.1f} | {step_s / steps * 1e6:.1f} | "
              f"{ff_s / steps / n * 1e6:.2f} | {step_s / steps / n * 1e6:.2f} |")


if __name__ == "__main__":
    main()
