"""End to end through servesim.simulation: the workload's promises hold inside a real run."""

from servesim.scenario import validate_scenario
from servesim.simulation import simulate
from servesim.workload import RequestState


def run(workload: dict, **extra):
    return simulate(validate_scenario({"workload": workload, **extra}))


def test_second_turn_hits_the_prefix_cache_for_the_first_turn():
    res = run({"arrival": {"rate_per_s": 0.5}, "lengths": {"prompt_tokens": [200, 1000], "output_tokens": [50, 300]},
               "sessions": {"turns": 2, "think_time_s": 2.0}, "num_requests": 60})
    turns = {}
    for r in res.requests:
        turns.setdefault(r.session_id, {})[r.turn] = r
    pairs = [(t[0], t[1]) for t in turns.values() if 1 in t]
    assert len(pairs) >= 25
    for first, second in pairs:
        assert first.state == second.state == RequestState.FINISHED
        assert second.arrival_s >= first.finish_s
        reusable = (first.prompt_len + first.output_len) // 16 * 16
        # Everything the first turn read and wrote is served from the cache (but the last
        # block of the reusable prefix when it ends exactly at a block edge, as in vLLM).
        assert second.num_cached_tokens >= reusable - 16
        assert first.num_cached_tokens < 16  # nothing shared between sessions


def test_agent_calls_never_start_before_their_parents_finish():
    res = run({"arrival": {"rate_per_s": 1.0}, "lengths": {"prompt_tokens": 300, "output_tokens": [20, 200]},
               "programs": {"calls": [{}, {"parents": [0], "tool_s": 0.5}, {"parents": [0], "tool_s": 0.1},
                                      {"parents": [1, 2], "tool_s": 0.2}]},
               "num_requests": 200})
    by_id = {r.id: r for r in res.requests}
    assert len(by_id) == 200
    joins = 0
    for r in res.requests:
        for p in r.parents:
            parent = by_id[p]
            assert parent.finish_s is not None and r.first_scheduled_s >= parent.finish_s
            assert r.arrival_s >= parent.finish_s
        joins += r.call_index == 3
    assert joins >= 48


def test_mooncake_replay_reuses_prefix_blocks():
    res = run({"trace": "mooncake-conversation", "num_requests": 300})
    assert len(res.requests) == 300
    queried, hit = res.prefix_hits
    assert hit > 0.1 * queried


def test_closed_loop_users_never_overlap():
    res = run({"arrival": {"process": "closed", "users": 3, "think_time_s": 0.5},
               "lengths": {"dataset": "sharegpt"}, "num_requests": 90})
    assert len(res.requests) == 90
    finished = sorted(res.requests, key=lambda r: r.arrival_s)
    # At any arrival, at most 3 requests are in flight.
    for r in finished:
        in_flight = sum(1 for q in finished if q.arrival_s <= r.arrival_s < q.finish_s)
        assert in_flight <= 3
