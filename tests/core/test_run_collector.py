"""simulate() freezes what exists before the run for the run's length (the cyclic collector does
not rescan a fresh process's imports during the set-up) and leaves the collector as it found it."""

import gc

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
