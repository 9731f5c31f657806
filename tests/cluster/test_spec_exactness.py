"""Speculative decoding on four replicas sharing one event loop: fast-forwarded stretches
(`replica/spec_stretch.py`) give exactly the results of stepping one by one, with routers that
read the replicas' state (live or stale) while stretches run, and cover most steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate

from .helpers import ReadsEverything, assert_same_steps, outcome, reads_everything, run  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SPEC = ["engine.num_speculative_tokens=3", "engine.spec_acceptance_rate=0.7", "workload.arrival.rate_per_s=10"]


@pytest.mark.parametrize("scheduler,share", [("vllm", 0.8), ("sarathi", 0.5), ("sglang", 0.6), ("autellix", 0.8),
                                             ("fastswitch", 0.8)])
def test_spec_fast_forward_is_exact_with_a_state_reading_router(scheduler, share, reads_everything):
    sets = SPEC + [f"router.name={reads_everything}", f"scheduler.name={scheduler}"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len({r.replica for r in fast.requests}) == 4
    assert slow.num_fast_forwarded_steps == 0
    assert fast.num_fast_forwarded_steps > share * len(fast.steps), fast.num_fast_forwarded_steps / len(fast.steps)


@pytest.mark.parametrize("refresh", [0.0, 0.05])
def test_spec_fast_forward_on_a_code_trace_with_live_and_stale_counts(refresh):
    sets = ["replicas=4", "workload.trace.speedup=4", "workload.trace.end_s=300", "router.name=least-requests",
            "router.count=engine", f"router.refresh_interval_s={refresh}", "engine.num_speculative_tokens=3"]
    path = str(ROOT / "examples/azure-code.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(fast.requests) > 500
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.summary() | {"wall_time_s": 0} == slow.summary() | {"wall_time_s": 0}
    assert fast.num_fast_forwarded_steps > 0.8 * len(fast.steps)


def test_views_count_no_prompt_token_for_requests_finished_inside_a_stretch(reads_everything, monkeypatch):
    """Without speculation too: a request that finished inside a stretch running through
    finishes was still counted as one prompt token outstanding (its last token). Every view
    the router reads must be the same as stepping's."""
    seen: list = []
    route = ReadsEverything.route

    def recording(self, req, view):
        seen.append([(v.num_outstanding, v.num_waiting, v.outstanding_prefill_tokens, v.outstanding_decode_tokens,
                      v.kv_used_blocks, v.num_running) for v in map(view.view, view.candidates)])
        return route(self, req, view)

    monkeypatch.setattr(ReadsEverything, "route", recording)
    sets = ["workload.arrival.rate_per_s=10", f"router.name={reads_everything}"]
    fast = run(sets)
    fast_seen, seen[:] = list(seen), []
    slow = run(sets, fast_forward=False)
    assert fast_seen == seen
    assert outcome(fast) == outcome(slow)
    assert fast.num_fast_forwarded_steps > 0.8 * len(fast.steps)


def test_uneven_verify_steps_priced_from_sums_are_exact(monkeypatch):
    """Steps where a request near its end verifies fewer than 1 + k tokens, or decodes its last
    one plainly, and steps that prompts join, are priced by the perf model's
    `verify_sums_time_fn` from sums: it runs, and the results and step log are stepping's."""
    from servesim.perf.spec_forms import VerifyFormsMixin

    calls = [0]
    make = VerifyFormsMixin.verify_sums_time_fn

    def counted(self):
        fn = make(self)

        def time_s(*args):
            calls[0] += 1
            return fn(*args)
        return time_s

    monkeypatch.setattr(VerifyFormsMixin, "verify_sums_time_fn", counted)
    sets = SPEC + ["engine.num_speculative_tokens=4"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert calls[0] > 200, calls[0]
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.num_fast_forwarded_steps > 0.8 * len(fast.steps)


def test_an_autellix_call_joining_a_batch_at_the_top_level_leaves_level_0_inside_the_stretch():
    # Three replicas (stretches priced many arrival gaps ahead) on ServeGen's clients: calls
    # join a speculative stretch whose running calls are all at Autellix's top level, an order
    # that holds for good, and the newcomer's limit (its first threshold) was not applied: it
    # kept its level-0 place after passing the threshold, and the acceptance draws went to
    # other requests than stepping gives them (81 of 308 requests differed).
    sets = ["scheduler.name=autellix", "workload.duration_s=300", "workload.arrival.rate_per_s=1",
            "engine.num_speculative_tokens=1", "replicas=3", "router.name=round-robin"]
    path = str(ROOT / "examples" / "servegen-r1.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]))
    assert outcome(fast) == outcome(slow)
    assert fast.num_fast_forwarded_steps > 0.9 * len(fast.steps)
