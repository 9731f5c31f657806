"""Cache-aware routers (SGLang cache-aware, llm-d EPP, Dynamo KV) on hand-built views."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.cluster.routers.dynamo_kv import softmax_probabilities
from tests.cluster.views import cluster, make_router, req, rv

PROMPT = (1, 2, 3, 4)  # four 16-token prefix blocks of a 64-token prompt


# ---- SGLang cache-aware --------------------------------------------------------------------

def _sglang_with_prompt_on_2():
    router = make_router("sglang-cache-aware")
    router.on_dispatch(req(0, hash_ids=PROMPT), 2, 0.0)
    return router


def test_sglang_follows_a_prefix_match_above_cache_threshold() -> None:
    router = _sglang_with_prompt_on_2()
    view = cluster([rv(0), rv(1), rv(2, out=3)])
    # 3 of 4 blocks match: 48 / 64 = 0.75 > 0.3 -> replica 2, although 0 and 1 have empty trees
    assert router.route(req(1, hash_ids=(1, 2, 3, 9)), view) == 2
    # 1 block matches: 16 / 64 = 0.25 <= 0.3 -> the smallest tree (0 and 1 are empty: the first)
    assert router.route(req(2, hash_ids=(1, 7, 8, 9)), view) == 0
    # the match rate divides by prompt tokens: 16 / 48 = 0.33 > 0.3
    assert router.route(req(3, prompt=48, hash_ids=(1, 7, 8)), view) == 2


@pytest.mark.parametrize(
    ("loads", "expected"),
    [
        ((70, 0, 100), 1),  # 100 - 0 > 64 and 100 > 0 x 1.5: imbalanced -> least loaded
        ((100, 40, 100), 2),  # 60 <= 64: balanced -> cache match
        ((200, 140, 210), 2),  # 70 > 64 but 210 is not > 140 x 1.5: balanced -> cache match
        ((200, 139, 210), 1),  # both thresholds exceeded -> least loaded
    ],
)
def test_sglang_falls_back_to_least_load_only_beyond_both_thresholds(loads, expected) -> None:
    router = _sglang_with_prompt_on_2()
    view = cluster([rv(i, out=load) for i, load in enumerate(loads)])
    assert router.route(req(1, hash_ids=PROMPT), view) == expected


def test_sglang_smallest_tree_counts_the_unique_prompt_tail() -> None:
    router = make_router("sglang-cache-aware")
    router.on_dispatch(req(0, prompt=100, hash_ids=(1, 2)), 0, 0.0)  # 2 x 16 + 68 tail tokens
    router.on_dispatch(req(1, prompt=64, hash_ids=(5, 6, 7, 8)), 1, 0.0)
    assert router.tree.size == {0: 100, 1: 64}
    assert router.route(req(2, hash_ids=(9,)), cluster([rv(0), rv(1)])) == 1


def test_sglang_evicts_lru_leaves_every_interval() -> None:
    router = make_router("sglang-cache-aware", max_tree_size=32, eviction_interval_secs=120)
    router.on_dispatch(req(0, hash_ids=PROMPT), 0, 0.0)
    router.on_dispatch(req(1, hash_ids=(1, 2, 5, 6)), 1, 0.0)
    view = cluster([rv(0), rv(1)], now=60.0)
    router.route(req(2, hash_ids=(9,)), view)
    assert router.tree.size == {0: 64, 1: 64}  # no eviction before 120 s
    router.route(req(3, hash_ids=(9,)), cluster([rv(0), rv(1)], now=120.0))
    assert router.tree.size == {0: 32, 1: 32}
    assert router.tree.match(PROMPT, [0, 1]) == (2, 0)  # blocks 3, 4 (the leaves) went first
    assert 3 not in router.tree.nodes and 1 in router.tree.nodes


def test_sglang_match_prefers_the_most_recent_holder() -> None:
    router = make_router("sglang-cache-aware")
    router.on_dispatch(req(0, hash_ids=PROMPT), 0, 1.0)
    router.on_dispatch(req(1, hash_ids=PROMPT), 1, 2.0)
    assert router.tree.match(PROMPT, [0, 1]) == (4, 1)
    assert router.tree.match(PROMPT, [0]) == (4, 0)  # only eligible replicas count


# ---- llm-d endpoint picker -----------------------------------------------------------------

def _epp_view(now: float = 0.0, t: float = 0.0, waiting=(0, 2, 4)):
    views = [rv(0, waiting=waiting[0], kv=20, t=t), rv(1, waiting=waiting[1], kv=50, t=t),
             rv(2, waiting=waiting[2], kv=10, t=t)]
    return cluster(views, now=now, cached={0: 0, 1: 4, 2: 2})


def test_llm_d_weighted_score_arithmetic_for_three_replicas() -> None:
    router = make_router("llm-d", prefix_cache_mode="precise")
    view = _epp_view()
    # queue (maxQ - q) / (maxQ - minQ): 1, 0.5, 0; kv 1 - usage: 0.8, 0.5, 0.9; prefix 0/4, 4/4, 2/4
    expected = [2 * 1 + 2 * 0.8 + 3 * 0, 2 * 0.5 + 2 * 0.5 + 3 * 1, 2 * 0 + 2 * 0.9 + 3 * 0.5]
    assert router.scores(req(hash_ids=PROMPT), view, [0, 1, 2]) == pytest.approx(expected)  # 3.6, 5.0, 3.3
    assert router.route(req(hash_ids=PROMPT), view) == 1
    # without the prefix scorer the emptiest queue wins
    assert make_router("llm-d", prefix_cache_scorer_weight=0).route(req(hash_ids=PROMPT), view) == 0


def test_llm_d_equal_queues_score_one_and_ties_are_random() -> None:
    view = cluster([rv(0, waiting=3, kv=10), rv(1, waiting=3, kv=10)])
    router = make_router("llm-d", 2)
    assert router.scores(req(), view, [0, 1]) == pytest.approx([2 * 1 + 2 * 0.9] * 2)
    assert {make_router("llm-d", 2, seed=s).route(req(), view) for s in range(30)} == {0, 1}


def test_llm_d_approximate_index_learns_from_its_own_picks() -> None:
    router = make_router("llm-d")
    view = cluster([rv(0), rv(1), rv(2)])
    router.on_dispatch(req(0, hash_ids=PROMPT), 2, 0.0)
    assert router.scores(req(1, hash_ids=(1, 2, 9, 9)), view, [0, 1, 2]) == pytest.approx([4, 4, 4 + 3 * 0.5])
    assert router.route(req(1, hash_ids=(1, 2, 9, 9)), view) == 2


def test_llm_d_limits_convert_to_the_requests_block_size() -> None:
    # 256 x 16 tokens = 8 blocks of 512 tokens match at most; the LRU keeps 31,250 x 16 / 512 = 976
    router = make_router("llm-d")
    long_prompt = tuple(range(100, 120))
    router.on_dispatch(req(0, prompt=20 * 512, hash_ids=long_prompt, block=512), 1, 0.0)
    assert router.index.size(1) == 8
    score = router.scores(req(1, prompt=20 * 512, hash_ids=long_prompt, block=512), cluster([rv(0), rv(1)]), [0, 1])
    assert score[1] - score[0] == pytest.approx(3 * 8 / 8)


def test_llm_d_saturation_is_the_mean_roofline_score() -> None:
    router = make_router("llm-d")
    # max(0/5, 0.2/0.8), max(2/5, 0.5/0.8), max(4/5, 0.1/0.8) -> mean of 0.25, 0.625, 0.8
    assert router.saturation(_epp_view()) == pytest.approx((0.25 + 0.625 + 0.8) / 3)
    # metrics older than 200 ms count as 1.0 each
    assert router.saturation(_epp_view(now=1.0, t=0.5)) == pytest.approx(1.0)


def test_llm_d_sheds_only_sheddable_requests_and_only_when_saturated() -> None:
    router = make_router("llm-d", shed_priority_from=1)
    full = _epp_view(waiting=(6, 6, 6))  # every queue at 6 / 5 = 1.2: saturated
    calm = _epp_view()
    assert router.route(req(0, is_offline=True), full) is None
    assert router.route(req(1, priority=2), full) is None
    assert router.route(req(2, priority=0), full) is not None  # online, important: still routed
    assert router.route(req(3, is_offline=True), calm) is not None  # not saturated: routed
    assert make_router("llm-d", shed_offline=False).route(req(4, is_offline=True), full) is not None


def test_llm_d_legacy_detector_needs_every_replica_full() -> None:
    router = make_router("llm-d", saturation_detector="legacy")
    # mean score (1.2 + 1.2 + 0.8) / 3 > 1, but replica 2 (4 waiting, 10% KV) still has capacity
    mixed = _epp_view(waiting=(6, 6, 4))
    assert make_router("llm-d").saturated(mixed) and not router.saturated(mixed)
    assert router.route(req(0, is_offline=True), mixed) is not None
    assert router.route(req(1, is_offline=True), _epp_view(waiting=(6, 6, 6))) is None
    assert router.saturated(_epp_view(now=1.0, t=0.5))  # stale metrics never count as capacity


def test_llm_d_saturation_filter_drops_full_replicas_and_fails_open() -> None:
    router = make_router("llm-d", saturation_filter=True, prefix_cache_mode="precise")
    # replica 1 has the best score (its cache) but 5 waiting is at the threshold: filtered out
    view = _epp_view(waiting=(0, 5, 4))
    assert router.route(req(hash_ids=PROMPT), view) == 0
    everyone_full = _epp_view(waiting=(5, 5, 5))
    assert router.route(req(hash_ids=PROMPT), everyone_full) == 1


# ---- Dynamo KV router ----------------------------------------------------------------------

def _dynamo_view():
    return cluster([rv(0, kv=10), rv(1, kv=20), rv(2, kv=15)], cached={0: 0, 1: 4, 2: 2})


def test_dynamo_cost_arithmetic_and_temperature_zero_is_argmin() -> None:
    r = req(hash_ids=PROMPT)
    # prefill blocks 64/16 = 4, 0, 2; decode blocks = used + floor(prefill): 14, 20, 17
    router = make_router("dynamo-kv")
    assert router.costs(r, _dynamo_view()) == pytest.approx([4 + 14, 0 + 20, 2 + 17])
    assert router.route(r, _dynamo_view()) == 0
    heavy = make_router("dynamo-kv", overlap_score_weight=3.0)
    assert heavy.costs(r, _dynamo_view()) == pytest.approx([12 + 14, 0 + 20, 6 + 17])
    assert heavy.route(r, _dynamo_view()) == 1


def test_dynamo_block_size_converts_hash_blocks_to_kv_blocks() -> None:
    # a 1000-token prompt with one cached 512-token block: 488 tokens to prefill = 30.5 blocks of 16
    router = make_router("dynamo-kv", 1)
    r = req(prompt=1000, hash_ids=(1, 2), block=512)
    assert router.costs(r, cluster([rv(0, kv=7)], cached={0: 1})) == pytest.approx([30.5 + 7 + 30])


def test_dynamo_softmax_temperature() -> None:
    probs = softmax_probabilities([18.0, 20.0, 19.0], 1.0)
    e = np.exp([-9.0, -10.0, -9.5])
    assert probs == pytest.approx(list(e / e.sum()))
    assert softmax_probabilities([5.0, 5.0], 0.5) == [0.5, 0.5]
    router_picks = {make_router("dynamo-kv", seed=s, router_temperature=1.0).route(req(hash_ids=PROMPT), _dynamo_view())
                    for s in range(60)}
    assert router_picks == {0, 1, 2}
    cold = {make_router("dynamo-kv", seed=s, router_temperature=0.01).route(req(hash_ids=PROMPT), _dynamo_view())
            for s in range(60)}
    assert cold == {0}  # normalised gaps of 0.5 and 1 over T = 0.01: the argmin every time


def test_dynamo_approximate_index_expires_after_ttl() -> None:
    router = make_router("dynamo-kv", use_kv_events=False, overlap_score_weight=2.0)
    router.on_dispatch(req(0, hash_ids=PROMPT), 1, 0.0)
    loads = [rv(0, kv=10), rv(1, kv=20), rv(2, kv=15)]
    # at 100 s replica 1 still holds the 4 blocks for the router: 2 x 0 + 20 beats 2 x 4 + 14
    assert router.costs(req(1, hash_ids=PROMPT), cluster(loads, now=100.0)) == pytest.approx([22, 20, 27])
    assert router.route(req(1, hash_ids=PROMPT), cluster(loads, now=100.0)) == 1
    # past the 120 s TTL the router forgets them: 2 x 4 + 24 on replica 1, the least used wins
    assert router.costs(req(1, hash_ids=PROMPT), cluster(loads, now=121.0)) == pytest.approx([22, 32, 27])
    assert router.route(req(1, hash_ids=PROMPT), cluster(loads, now=121.0)) == 0
    assert router.index.match(1, PROMPT, 120.0) == 0  # expired entries are gone for good


def test_dynamo_ties_go_to_the_smallest_index() -> None:
    router = make_router("dynamo-kv", 2, use_kv_events=False)
    router.on_dispatch(req(0, hash_ids=(7, 8)), 0, 0.0)  # replica 0 indexes 2 blocks, replica 1 none
    view = cluster([rv(0, kv=5), rv(1, kv=5)], now=1.0)
    assert router.route(req(1, hash_ids=(1, 2, 3, 4)), view) == 1
