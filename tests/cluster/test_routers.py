"""Load-based routers on hand-built views: registry, determinism and exact picks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from servesim.cluster.routers import available, get_router
from servesim.cluster.view import ClusterView
from servesim.errors import InputError
from tests.cluster.views import ScriptedRng, cluster, make_router, req, rv

ALL = ["dodoor", "dynamo-kv", "least-kv", "least-requests", "least-tokens", "llm-d", "llumnix", "lora-affinity",
       "mooncake", "power-of-two", "random", "round-robin", "sglang-cache-aware", "vllm-dp"]


def test_available_lists_all_fourteen_routers() -> None:
    assert available() == ALL


def test_unknown_router_names_the_allowed_ones() -> None:
    with pytest.raises(InputError, match="unknown router 'jsq'; allowed: dodoor, dynamo-kv"):
        get_router("jsq")


def _decisions(name: str, seed: int) -> list[int | None]:
    """Route 60 requests over random loads on 5 replicas, 3 of them eligible."""
    state = np.random.default_rng(123)
    router = make_router(name, num_replicas=5, seed=seed)
    picks = []
    for k in range(60):
        views = [rv(i, out=int(state.integers(0, 9)), running=int(state.integers(0, 9)),
                    waiting=int(state.integers(0, 9)), kv=int(state.integers(0, 100)), prefill=int(state.integers(0, 500)),
                    decode=int(state.integers(0, 500)), t=0.05 * k) for i in range(5)]
        view = cluster(views, now=0.05 * k, cands=[0, 2, 4], cached={0: 1, 2: 2})
        r = req(id=k, prompt=64, hash_ids=(k % 3, 10 + k % 2, 20 + k % 5), is_offline=k % 4 == 0)
        pick = router.route(r, view)
        assert pick is None or pick in (0, 2, 4)
        if pick is not None:
            router.on_dispatch(r, pick, 0.05 * k)
        picks.append(pick)
    return picks


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_choices_and_only_candidates(name: str) -> None:
    first = _decisions(name, seed=7)
    assert first == _decisions(name, seed=7)
    assert {p for p in first if p is not None} <= {0, 2, 4}


def test_random_is_uniform_and_reads_no_state() -> None:
    def no_read(i: int):
        raise AssertionError("random must not read replica state")

    router = make_router("random", num_replicas=4, seed=3)
    view = ClusterView(0.0, [0, 1, 3], no_read, lambda i, r: 0)
    counts = Counter(router.route(req(), view) for _ in range(3000))
    assert set(counts) == {0, 1, 3}
    assert all(900 < c < 1100 for c in counts.values())
    assert get_router("random").reads_state is False


def test_least_requests_takes_fewest_outstanding_with_random_or_first_tie_break() -> None:
    view = cluster([rv(0, out=3), rv(1, out=1), rv(2, out=5), rv(3, out=1)])
    assert make_router("least-requests", 4, tie_break="first").route(req(), view) == 1
    picks = {make_router("least-requests", 4, seed=s).route(req(), view) for s in range(40)}
    assert picks == {1, 3}


def test_least_tokens_sums_prefill_and_decode_tokens() -> None:
    # totals 150, 120, 60: the replica with the most decode tokens left but fewest in total wins
    view = cluster([rv(0, prefill=100, decode=50), rv(1, prefill=20, decode=100), rv(2, prefill=60, decode=0)])
    assert make_router("least-tokens").route(req(), view) == 2


def test_least_kv_compares_usage_not_blocks() -> None:
    # usage 0.4, 0.6, 0.35: replica 1 has the fewest used blocks but the highest usage
    view = cluster([rv(0, kv=40, blocks=100), rv(1, kv=30, blocks=50), rv(2, kv=35, blocks=100)])
    assert make_router("least-kv").route(req(), view) == 2


def test_power_of_two_never_picks_the_worse_of_its_two() -> None:
    view = cluster([rv(0, out=1), rv(1, out=5), rv(2, out=9)])
    picks = Counter(make_router("power-of-two", seed=s).route(req(), view) for s in range(300))
    assert 2 not in picks  # the most loaded loses every pair it is drawn in
    assert picks[1] > 0  # ...but the middle one wins the (1, 2) pair
    two = cluster([rv(0, out=5), rv(1, out=2)])
    assert {make_router("power-of-two", 2, seed=s).route(req(), two) for s in range(50)} == {1}


def test_power_of_two_tie_goes_to_the_first_drawn() -> None:
    view = cluster([rv(0, out=4), rv(1, out=4), rv(2, out=4)])
    # draws: idx1 = 2, idx2 = 0 over the other two -> candidate 0; loads equal -> idx1 (2) wins
    assert make_router("power-of-two", rng=ScriptedRng(integers=[2, 0])).route(req(), view) == 2
    # idx1 = 0, idx2 = 1 -> shifted past idx1 -> candidate 2
    assert make_router("power-of-two", rng=ScriptedRng(integers=[0, 1])).route(req(), view) == 0


def test_vllm_dp_scores_waiting_times_four_plus_running() -> None:
    # scores 4, 3, 5: replica 1 runs the most of the first two but waits for nothing
    view = cluster([rv(0, waiting=1, running=0), rv(1, waiting=0, running=3), rv(2, waiting=0, running=5)])
    assert make_router("vllm-dp").route(req(), view) == 1
    tie = cluster([rv(0, running=2), rv(1, running=2)])
    assert make_router("vllm-dp", 2).route(req(), tie) == 0  # strict <: the first scanned keeps a tie


def test_vllm_dp_counts_own_dispatches_until_the_next_snapshot() -> None:
    router = make_router("vllm-dp", 2)
    snap0 = [rv(0, running=4, t=0.0), rv(1, running=3, t=0.0)]  # scores 4, 3
    assert router.route(req(0), cluster(snap0, now=0.02)) == 1
    router.on_dispatch(req(0), 1, 0.02)  # local waiting +1: replica 1 now scores 7
    assert router.route(req(1), cluster(snap0, now=0.05)) == 0
    router.on_dispatch(req(1), 0, 0.05)  # replica 0 now 8
    assert router.route(req(2), cluster(snap0, now=0.07)) == 1  # 7 < 8
    router.on_dispatch(req(2), 1, 0.07)
    # the coordinator publishes at 0.1 with both dispatches to replica 1 and the one to 0 counted
    snap1 = [rv(0, waiting=1, running=4, t=0.1), rv(1, waiting=2, running=3, t=0.1)]  # scores 8, 11
    assert router.route(req(3), cluster(snap1, now=0.12)) == 0
    assert router._local_waiting(1, 0.1) == 0


def test_vllm_dp_client_count_scales_the_local_increment() -> None:
    router = make_router("vllm-dp", 2, client_count=2)
    snap = [rv(0, running=8), rv(1, running=0)]
    router.on_dispatch(req(0), 1, 0.01)  # +2 waiting -> score 8 on replica 1, a tie with replica 0
    assert router.route(req(1), cluster(snap, now=0.02)) == 0


def test_dodoor_uses_stale_cached_loads_until_batch_size_decisions() -> None:
    live = {0: rv(0, out=0), 1: rv(1, out=5)}

    def view(now: float) -> ClusterView:
        return ClusterView(now, [0, 1], live.__getitem__, lambda i, r: 0)

    # every decision draws flag 0.0 (< beta: two choices) and the pair (0, 1)
    rng = ScriptedRng(integers=[0, 1] * 5, randoms=[0.0] * 5)
    router = make_router("dodoor", 2, rng=rng, batch_size=3)
    picks = []
    for k in range(5):
        pick = router.route(req(k), view(float(k)))
        router.on_dispatch(req(k), pick, float(k))
        picks.append(pick)
        live[0] = rv(0, out=100)  # the engine side fills up, but the cache will not see it until a refresh
    # decisions 1-3 use the refresh at decision 1 (0 vs 5, +1 per own dispatch: 1, 2 < 5);
    # decision 4 refreshes (100 vs 5); decision 5 still sees 5 + 1 = 6 < 100
    assert picks == [0, 0, 0, 1, 1]
    assert router._cached == {0: 100, 1: 7}


def test_dodoor_one_choice_below_beta_and_strictly_higher_to_move() -> None:
    view = cluster([rv(0, out=9), rv(1, out=1)])
    # flag 0.7 >= beta 0.6: one random choice, even the loaded replica
    assert make_router("dodoor", 2, rng=ScriptedRng(integers=[0], randoms=[0.7])).route(req(), view) == 0
    # flag below beta, pair (0, 1): moves to the less loaded
    assert make_router("dodoor", 2, rng=ScriptedRng(integers=[0, 1], randoms=[0.1])).route(req(), view) == 1
    even = cluster([rv(0, out=3), rv(1, out=3)])
    assert make_router("dodoor", 2, rng=ScriptedRng(integers=[1, 0], randoms=[0.1])).route(req(), even) == 1


def test_dodoor_token_load_counts_outstanding_and_dispatched_tokens() -> None:
    router = make_router("dodoor", 2, rng=ScriptedRng(integers=[0, 1, 0, 1], randoms=[0.0, 0.0]), load="tokens")
    view = cluster([rv(0, prefill=100, decode=0), rv(1, prefill=0, decode=150)])
    assert router.route(req(0), view) == 0
    router.on_dispatch(req(0, prompt=64, output=8), 0, 0.0)  # 100 + 72 = 172 > 150
    assert router.route(req(1), view) == 1


def test_vllm_dp_live_view_already_counts_a_dispatch_at_the_same_instant() -> None:
    router = make_router("vllm-dp", 2)
    router.on_dispatch(req(0), 1, 0.5)
    # the view taken at 0.5 already shows that request waiting on replica 1: scores 5 vs 4
    live = [rv(0, running=5, t=0.5), rv(1, waiting=1, t=0.5)]
    assert router.route(req(1), cluster(live, now=0.5)) == 1
