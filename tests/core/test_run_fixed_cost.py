"""A run's fixed cost: simulate() freezes what exists before the run for the run's length (the
cyclic collector does not rescan a fresh process's imports during the set-up) and leaves the
collector as it found it; a run and its summary do not import numpy.ma (np.unique does)."""

import gc
import subprocess
import sys

from servesim import load_scenario, simulate


def test_objects_from_before_the_run_are_frozen_during_it_and_released_after():
    scenario = load_scenario("examples/azure-conv.yaml", ["workload.num_requests=30"])
    before = ["made before the run"]  # (a container: tracked by the collector)
    seen = []

    def progress(done: int, total, now_s: float) -> None:
        seen.append((gc.get_freeze_count(), any(o is before for o in gc.get_objects())))

    assert gc.get_freeze_count() == 0 and gc.isenabled()
    result = simulate(scenario, progress)
    assert seen and all(count > 10_000 and not listed for count, listed in seen)
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    assert any(o is before for o in gc.get_objects()) and result.summary()["num_finished"] == 30


def test_a_run_and_its_summary_do_not_import_numpy_ma():
    # (8 replicas, two tenants: the per-tenant groups and the fairness section are computed)
    code = ("import sys; from servesim import load_scenario, simulate; "
            "r = simulate(load_scenario('examples/cluster-azure-conv.yaml', ['workload.num_requests=300', "
            "'workload.attributes.tenants={a: 1, b: 1}'])); s = r.summary(); "
            "print(s['num_finished'], sorted(s['per_tenant']), 'fairness' in s, 'numpy.ma' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["300", "['a',", "'b']", "True", "False"]


def test_a_run_imports_only_the_policies_it_names():
    code = ("import sys; from servesim import load_scenario, simulate; "
            "simulate(load_scenario('examples/cluster-azure-conv.yaml', ['workload.num_requests=20'])); "
            "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith(('servesim.replica.schedulers.', "
            "'servesim.cluster.routers.', 'servesim.cluster.autoscalers.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)  # noqa: S307  (a list of module names printed above)
    assert "vllm" in loaded and "least_requests" in loaded
    assert not {"sarathi", "sglang", "orca", "llumnix", "power_of_two"} & set(loaded)  # (not the default router)


def test_an_unknown_policy_name_still_lists_every_one():
    from servesim.cluster.routers import get_router
    from servesim.errors import InputError

    try:
        get_router("least_requests")  # (the module's name, not the policy's)
    except InputError as exc:
        assert "allowed:" in str(exc) and "least-requests" in str(exc) and "round-robin" in str(exc)
    else:
        raise AssertionError("no InputError")


def test_a_dropped_run_leaves_nothing_behind():
    # The run's objects refer to one another in cycles (the cluster, its replicas and their
    # callbacks); `simulate` collects them at its end, while everything else is still frozen, so a
    # process running many simulations (validate, plan, compare) does not keep each run's engines
    # and requests until a full collection that its freezing keeps from coming.
    from servesim.replica.engine import Engine
    from servesim.workload.request import Request

    def alive() -> tuple[int, int]:
        objs = gc.get_objects()
        return sum(type(o) is Request for o in objs), sum(type(o) is Engine for o in objs)

    gc.collect()
    assert alive() == (0, 0)
    for name in ("cluster-azure-conv.yaml", "sessions.yaml"):
        result = simulate(load_scenario(f"examples/{name}", ["workload.num_requests=100"]), keep_requests=True)
        assert alive()[0] == 100 and result.summary()["num_finished"] == 100  # kept for the result
        del result
        assert alive() == (0, 0), name
