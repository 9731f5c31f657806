from servesim.workload import RequestState
from tests.workload.helpers import drive, make

DIAMOND = {
    "arrival": {"rate_per_s": 0.2},
    "lengths": {"prompt_tokens": 200, "output_tokens": 50},
    "programs": {"calls": [{}, {"parents": [0], "tool_s": 2.0}, {"parents": [0], "tool_s": 0.5},
                           {"parents": [1, 2], "tool_s": 1.0, "output_tokens": 7}]},
    "num_requests": 200,
}


def test_calls_never_start_before_their_parents_finish():
    reqs = drive(make(DIAMOND), service_s=lambda r: 0.1 * (1 + r.call_index))
    assert len(reqs) == 200
    by_id = {r.id: r for r in reqs}
    programs = {}
    for r in reqs:
        programs.setdefault(r.program_id, []).append(r)
        for p in r.parents:
            assert by_id[p].finish_s <= r.arrival_s
            assert by_id[p].program_id == r.program_id
    complete = [sorted(c, key=lambda r: r.call_index) for c in programs.values() if len(c) == 4]
    assert len(complete) >= 48  # the request limit may cut the programs still running at the end
    for calls in complete:
        assert [c.call_index for c in calls] == [0, 1, 2, 3]
        root, a, b, join = calls
        assert a.parents == (root.id,) and b.parents == (root.id,) and join.parents == (a.id, b.id)
        assert a.arrival_s == root.finish_s + 2.0 and b.arrival_s == root.finish_s + 0.5
        assert join.arrival_s == max(a.finish_s, b.finish_s) + 1.0
        assert join.output_len == 7
        # The context is inherited from the first parent: its prompt and answer are a reusable prefix.
        assert a.prompt_len == root.prompt_len + root.output_len + 200
        assert a.hash_ids[: len(root.hash_ids)] == root.hash_ids


def test_a_rejected_parent_still_releases_its_children():
    reqs = drive(make(DIAMOND), fail=lambda r: r.call_index == 1)
    rejected = {r.program_id for r in reqs if r.state == RequestState.REJECTED}
    joined = {r.program_id for r in reqs if r.call_index == 3}
    assert len(rejected) >= 48 and rejected - joined <= {max(rejected)}


def test_closed_loop_program_starts_after_the_whole_program():
    cfg = {**DIAMOND, "arrival": {"process": "closed", "users": 1, "think_time_s": 0, "think_time_dist": "fixed"},
           "num_requests": 8}
    reqs = drive(make(cfg), service_s=lambda r: 1.0)
    second_root = reqs[4]
    assert second_root.call_index == 0 and second_root.program_id == 1
    assert second_root.arrival_s == max(r.finish_s for r in reqs[:4])
