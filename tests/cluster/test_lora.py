"""Multi-LoRA on a cluster: fast-forward stays exact with adapters, the lora-affinity router
prefers replicas holding the adapter, and on a Zipf adapter mix it cuts adapter loads and TTFT
against round-robin (the S-LoRA / ServerlessLoRA point: place requests where their adapter is)."""

from __future__ import annotations


from servesim import load_scenario, simulate

from .helpers import assert_same_steps, outcome, reads_everything, run  # noqa: F401  (fixture)
from .views import cluster, make_router, rv

LORAS = ["workload.attributes.loras.count=12", "workload.attributes.loras.zipf_s=1.0", "engine.max_loras=2",
         "engine.max_cpu_loras=4", "engine.lora_size_mb=200"]


def test_fast_forward_is_exact_with_adapters(reads_everything):
    for router in (reads_everything, "lora-affinity"):
        sets = LORAS + [f"router.name={router}"]
        fast, slow = run(sets), run(sets, fast_forward=False)
        assert outcome(fast) == outcome(slow)
        assert_same_steps(fast, slow)
        assert fast.summary()["lora"] == slow.summary()["lora"]
        assert fast.summary()["lora"]["num_loads"] > 20  # loads really happen (and cut stretches)
        assert fast.num_fast_forwarded_steps > 0.5 * len(fast.steps)


def test_router_prefers_the_replica_with_the_adapter_then_a_free_slot():
    router = make_router("lora-affinity", 3)
    req = type("R", (), {"lora": "a"})()
    views = [rv(0, out=2), rv(1, out=3), rv(2, out=3)]
    state = {0: (False, False), 1: (True, True), 2: (False, True)}
    view = _with(views, state)
    # scores 2 * affinity + queue score: 0 + 1, 2 * 1 + 0, 2 * 0.8 + 0
    assert router.route(req, view) == 1  # loaded, though not the shortest queue
    state[1] = (False, False)
    assert router.route(req, view) == 2  # a free slot beats a shorter queue without one
    state[2] = (False, False)
    assert router.route(req, view) == 0  # nobody can take it: the shortest queue
    base = type("R", (), {"lora": None})()
    state[1] = (True, True)
    assert router.route(base, view) == 0  # no adapter: the shortest queue
    strict = make_router("lora-affinity", 3, queue_weight=0.0)
    views[1] = rv(1, out=50)
    assert strict.route(req, _with(views, state)) == 1


def _with(views, state):
    view = cluster(views)
    view._lora = lambda i, name: state[i]
    return view


def _zipf_run(router: str):
    sets = ["replicas=4", "workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=20",
            "workload.num_requests=1500", "workload.attributes.loras.count=64", "workload.attributes.loras.zipf_s=1.0",
            "engine.max_loras=4", "engine.max_cpu_loras=16", f"router.name={router}"]
    return simulate(load_scenario(None, sets)).summary()


def test_adapter_affinity_cuts_loads_and_ttft_against_round_robin():
    rr, aff = _zipf_run("round-robin"), _zipf_run("lora-affinity")
    assert rr["lora"]["num_requests"] == aff["lora"]["num_requests"] == 1500
    assert aff["lora"]["num_loads"] < 0.8 * rr["lora"]["num_loads"]
    assert aff["lora"]["cache_hit_rate"] > 1.5 * rr["lora"]["cache_hit_rate"]
    assert aff["ttft_s"]["mean"] < 0.5 * rr["ttft_s"]["mean"]


def test_no_adapters_no_lora_section():
    assert "lora" not in run(["replicas=1", "workload.num_requests=50"]).summary()


def test_affinity_reads_adapters_of_requests_left_inside_a_stretch(monkeypatch):
    """examples/multi-lora.yaml (4 replicas, 64 adapters, lora-affinity): a request that left
    inside a stretch no longer pins its adapter when the router reads the replica (stepping had
    removed it from `running`); main read it as pinned, routed request 57 elsewhere (721 of
    1,000 requests on another replica) and 993 of 1,000 differed from stepping."""
    from pathlib import Path

    from servesim.replica.replica import Replica

    path = str(Path(__file__).resolve().parents[2] / "examples" / "multi-lora.yaml")
    sets = ["workload.num_requests=1000"]
    reads = {"after_departure": 0}
    lora_state = Replica.lora_state

    def count(self, name):
        st = self.engine.stretch
        if st is not None and st.finished_by(self.engine.loop.now_s):
            reads["after_departure"] += 1
        return lora_state(self, name)

    monkeypatch.setattr(Replica, "lora_state", count)
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    assert reads["after_departure"] > 100  # (the case arises, often)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert fast.num_fast_forwarded_steps > 0.5 * fast.summary()["num_steps"]
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.summary()["lora"] == slow.summary()["lora"]


def test_continuum_serves_adapters_as_vllm_does():
    # Continuum is vLLM's scheduler with program pins: it takes vLLM's adapter admission, and
    # its timers now include the adapters' loads (before, a replica whose queue waited only for
    # a load went idle for good: "scheduler is stuck")
    sets = LORAS + ["scheduler.name=continuum", "router.name=lora-affinity"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert fast.summary()["num_finished"] == 400
    assert fast.summary()["lora"]["num_loads"] > 20
    vllm = run(LORAS + ["scheduler.name=vllm", "router.name=lora-affinity"])
    assert outcome(fast) == outcome(vllm)  # (no program, no pin: the same decisions)
