"""SGLang: the radix cache (lock refs, LRU leaf eviction) and the scheduler step by step."""

from __future__ import annotations

import pytest

from servesim.replica.radix_cache import RadixKVCache
from servesim.replica.schedulers.sglang_policy import dfs_weight_order
from servesim.workload.request import RequestState
from tests.factories import assert_same_run, make_engine, make_request, run_engine
from tests.replica.test_fast_forward import random_requests
from tests.replica.test_vllm_scheduler import run_logged


def _req(i, prompt, output, keys, **kw):
    r = make_request(i, prompt, output, **kw)
    r.kv_block_keys = tuple(keys)
    return r


def _finish(kv, req):
    req.num_computed_tokens = req.num_tokens - 1
    kv.cache_finished(req)


def test_radix_insert_hit_lock_and_lru_leaf_eviction():
    kv = RadixKVCache(8, block_size=4)
    a = _req(0, 12, 1, ["a1", "a2", "a3"])
    assert kv.allocate_slots(a, 12) and kv.num_free_blocks == 5
    _finish(kv, a)  # 11 computed tokens: 2 full blocks enter the tree, the third is freed
    assert kv.tree_blocks == 2 and kv.evictable_blocks == 2 and kv.num_free_blocks == 8
    b = _req(1, 12, 1, ["a1", "b2", "b3"])
    c = _req(2, 12, 1, ["c1", "c2", "c3"])
    hits = kv.match(b)
    assert [n.key for n in hits.nodes()] == ["a1"] and len(hits) == 1
    assert kv.blocks_needed(b, 8, hits) == 2 + 1  # two new blocks + the hit leaves the evictable pool
    assert kv.allocate_slots(b, 8, hits)  # b locks a1
    _finish(kv, b)
    _finish_c = kv.allocate_slots(c, 12)
    assert _finish_c
    _finish(kv, c)
    # tree: a1 -> {a2, b2}, c1 -> c2 (5 blocks, all unlocked); a2 is the least recently used leaf
    assert kv.tree_blocks == 5
    d = _req(3, 16, 1, ["d1", "d2", "d3", "d4"])
    assert kv.allocate_slots(d, 16)  # 4 blocks: 3 free + evict 1 leaf
    assert "a2" not in kv.root.children["a1"].children and kv.tree_blocks == 4
    kv.free(d.id)
    e = _req(4, 32, 1, [f"e{i}" for i in range(8)])
    assert kv.allocate_slots(e, 32)  # evicts everything, parents once their leaves are gone
    assert kv.tree_blocks == 0 and kv.num_free_blocks == 0
    kv.free(e.id)
    kv.check_all_free()


def test_locked_prefix_is_not_evicted():
    kv = RadixKVCache(4, block_size=4)
    a = _req(0, 8, 1, ["x", "y"])
    kv.allocate_slots(a, 8)
    _finish(kv, a)  # x enters the tree (7 computed tokens: one full block)
    b = _req(1, 8, 1, ["x", "z"])
    kv.allocate_slots(b, 4, kv.match(b))  # locks x
    c = _req(2, 12, 1, ["q1", "q2", "q3"])
    assert not kv.allocate_slots(c, 12)  # 3 free blocks minus b's 1: only 2 available
    assert kv.root.children["x"].lock_ref == 1


def test_prefill_batch_runs_alone_and_finished_prompts_are_cached():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=False,
                                                max_num_batched_tokens=64)
    sched.kv = engine.kv = RadixKVCache(100, 16)
    first = _req(0, 32, 4, [("p", 16), ("p", 32)], max_tokens=8)
    second = _req(1, 40, 2, [("p", 16), ("p", 32)], max_tokens=8, arrival=0.015)
    steps = run_logged(engine, loop, [first, second])
    assert steps[:2] == [[(0, 32)], [(0, 1)]]
    assert steps[2] == [(1, 8)]  # prefill first: 0's decode waits; 32 tokens hit in the tree
    assert steps[3] == [(0, 1), (1, 1)]
    assert second.num_cached_tokens == 32
    kv.check_all_free()


def test_mixed_chunk_runs_decodes_with_the_prefill_and_takes_their_tokens_off_the_budgets():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=False,
                                                max_num_batched_tokens=64,
                                                params={"enable_mixed_chunk": True, "max_prefill_tokens": 48})
    sched.kv = engine.kv = RadixKVCache(100, 16)
    first = _req(0, 32, 4, [("a", 16), ("a", 32)], max_tokens=8)
    second = _req(1, 40, 2, [("b", 16), ("b", 32)], max_tokens=8, arrival=0.015)
    third = _req(2, 64, 2, [("c", i) for i in range(4)], max_tokens=8, arrival=0.015)
    steps = run_logged(engine, loop, [first, second, third])
    assert steps[:2] == [[(0, 32)], [(0, 1)]]
    # 0 keeps decoding inside the prefill step; its token leaves 47 prefill tokens (1 admits
    # whole, 40) and 63 chunk tokens, so 2 does not join (48 tokens would exceed the input budget)
    assert steps[2] == [(1, 40), (0, 1)]
    # next step: 2 decodes run (0 and 1), the chunk budget left is 62, 2's 64 tokens are cut to 48
    assert steps[3] == [(2, 48), (0, 1), (1, 1)]
    kv.check_all_free()


def test_a_prompt_equal_to_the_prefill_tokens_left_waits_for_the_next_batch():
    # SGLang's PrefillAdder (0.5.1 to 0.5.10): `real_input_tokens >= rem_input_tokens` ends the
    # batch once it holds a request, so two 32-token prompts under max_prefill_tokens 64 run in
    # two prefill batches (the second would exactly use the 32 tokens left); 31 tokens still join
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=False,
                                                max_num_batched_tokens=256, params={"max_prefill_tokens": 64})
    sched.kv = engine.kv = RadixKVCache(100, 16)
    steps = run_logged(engine, loop, [make_request(0, 32, 2, max_tokens=4), make_request(1, 32, 2, max_tokens=4)])
    assert steps[:2] == [[(0, 32)], [(1, 32)]]
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=False,
                                                max_num_batched_tokens=256, params={"max_prefill_tokens": 64})
    sched.kv = engine.kv = RadixKVCache(100, 16)
    steps = run_logged(engine, loop, [make_request(0, 32, 2, max_tokens=4), make_request(1, 31, 2, max_tokens=4)])
    assert steps[0] == [(0, 32), (1, 31)]


def test_fcfs_admits_heads_in_order_until_one_is_held():
    # FCFS reads the queue's head again after each admission (no copy of the queue per step):
    # three prompts join one prefill batch in arrival order, the fourth waits at the running cap,
    # and a head that does not fit leaves the queue untouched
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=False,
                                                max_num_batched_tokens=256, max_num_seqs=3)
    sched.kv = engine.kv = RadixKVCache(100, 16)
    reqs = [make_request(i, 16, 2, max_tokens=4) for i in range(4)]
    steps = run_logged(engine, loop, reqs)
    assert steps[0] == [(0, 16), (1, 16), (2, 16)]
    assert [r.first_scheduled_s is not None for r in reqs] == [True] * 4
    waiting = [make_request(10 + i, 16, 2) for i in range(3)]
    for req in waiting:
        sched.waiting.append(req)
    taken = []
    for req in sched._candidates():
        if len(taken) == 2:
            break  # (the loop stops at a head it does not admit)
        taken.append(req)
        sched.waiting.remove(req)
    assert taken == waiting[:2] and list(sched.waiting) == waiting[2:]


def test_lpm_admits_the_longest_cached_prefix_first():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=False,
                                                params={"schedule_policy": "lpm"}, max_num_seqs=1)
    sched.kv = engine.kv = RadixKVCache(100, 16)
    warm = _req(0, 48, 1, [("w", 16), ("w", 32), ("w", 48)], max_tokens=4)
    miss = _req(1, 48, 1, [("m", 16)], max_tokens=4, arrival=0.001)
    hit = _req(2, 48, 1, [("w", 16), ("w", 32), ("h", 48)], max_tokens=4, arrival=0.002)
    steps = run_logged(engine, loop, [warm, miss, hit])
    assert steps == [[(0, 48)], [(2, 16)], [(1, 48)]]  # fcfs would run 1 before 2
    assert hit.num_cached_tokens == 32


def test_decode_out_of_memory_retracts_the_request_with_fewest_outputs():
    engine, sched, kv, loop, done = make_engine(num_blocks=6, scheduler="sglang", fast_forward=False,
                                                params={"retract_decode_steps": 1, "init_new_token_ratio": 0.01})
    sched.kv = engine.kv = RadixKVCache(6, 16)
    # max_tokens 8 (below the true 40 outputs) lets both in; then the decodes outgrow memory.
    old = make_request(0, 32, 40, max_tokens=8)
    young = make_request(1, 32, 40, max_tokens=8, arrival=0.02)
    steps = run_logged(engine, loop, [old, young])
    assert steps[:3] == [[(0, 32)], [(0, 1)], [(1, 32)]]
    # Both grow a block every 16 tokens; at step 18 the next tokens no longer fit in 6 blocks
    # and young, with fewer outputs, is retracted (its KV freed, re-queued).
    assert steps[17] == [(0, 1), (1, 1)]
    assert all(s == [(0, 1)] for s in steps[18:41])
    assert steps[41] == [(1, 48)]  # re-prefill of 32 + 16 once old has finished
    assert young.num_preemptions == 1 and old.num_preemptions == 0
    assert old.state == young.state == RequestState.FINISHED
    assert sched.new_token_ratio > 0.01  # reset from the running requests after the retraction


def test_dfs_weight_visits_heavier_subtrees_first():
    engine, sched, *_ = make_engine(num_blocks=100, scheduler="sglang", params={"schedule_policy": "dfs-weight"})
    sched.kv = kv = RadixKVCache(100, 16)
    for i, keys in enumerate([["a", "a1"], ["b", "b1"]]):  # cache two 2-block prefixes
        r = _req(100 + i, 40, 1, keys + ["x"])
        kv.allocate_slots(r, 40)
        _finish(kv, r)
    # waiting: one request under a, two under b (one deeper), one with no cached prefix
    reqs = [_req(0, 48, 1, ["a", "a1", "p"]), _req(1, 48, 1, ["z", "z1", "p"]),
            _req(2, 48, 1, ["b", "b1", "q"]), _req(3, 48, 1, ["b", "r", "q"])]
    order = dfs_weight_order(reqs, kv)
    # b's subtree holds two requests: it goes first (its deeper node b1 before b itself),
    # then a's; requests matching nothing sit at the root and come last.
    assert [r.id for r in order] == [2, 3, 0, 1]


def test_clipped_reserve_is_the_full_pass_and_is_taken():
    # Every admission's reserve, computed without the pass while all running reserves are
    # clipped, equals `reserved_tokens` over the batch; requests with a small `max_tokens`
    # (whose reserve shrinks as they generate) switch the shortcut off while they run.
    import numpy as np

    from servesim.replica.schedulers.batch_passes import reserved_tokens
    from servesim.replica.schedulers.sglang import SGLangScheduler
    from tests.factories import serve

    engine, sched, kv, loop, done = make_engine(num_blocks=600, scheduler="sglang", max_num_batched_tokens=256,
                                                max_num_seqs=40, max_model_len=8192)
    rng = np.random.default_rng(5)
    reqs = [make_request(i, int(rng.integers(10, 300)), int(rng.integers(1, 200)), 0.02 * i,
                         max_tokens=None if i % 7 else 5000) for i in range(200)]
    reqs += [make_request(200 + i, 100, 4200, 4.0 + 0.01 * i) for i in range(3)]  # 8192 - 100 - 4200 < 4096
    taken, kept = [], []

    def checked(self):
        # (clipped, the sum kept for this ratio and batch size: asked before, not summed again)
        kept.append(not self._unclipped and self._reserve_ratio == self.new_token_ratio
                    and len(self.running) in self._reserves)
        value = SGLangScheduler._reserve(self)
        assert value == reserved_tokens(self.running, self.new_token_ratio, self.config.max_model_len)
        assert type(value) is type(reserved_tokens(self.running, self.new_token_ratio, self.config.max_model_len))
        taken.append(not self._unclipped)
        return value

    sched._reserve = checked.__get__(sched)
    serve(engine, loop, reqs)
    assert all(r.state == RequestState.FINISHED for r in reqs)
    assert sum(taken) > 20 and len(taken) - sum(taken) > 20  # both ways, many times
    assert sum(kept) > 10  # the kept sums were read, and equal the pass
    assert not sched._unclipped  # every unclipped request left the set when it finished


def test_a_kept_reserve_is_read_for_its_ratio_and_batch_size_only():
    from servesim.replica.schedulers.batch_passes import CLIP_MAX_NEW_TOKENS
    from servesim.sums import left_sum

    engine, sched, kv, loop, done = make_engine(num_blocks=600, scheduler="sglang", max_num_batched_tokens=256)
    sched.running = [make_request(i, 10, 5) for i in range(3)]
    ratio = sched.new_token_ratio
    assert sched._reserve() == left_sum([CLIP_MAX_NEW_TOKENS * ratio] * 3) and sched._reserves == {3: sched._reserve()}
    sched._reserves[3] = -1.0  # (what was kept is what a second ask returns: it is not summed again)
    assert sched._reserve() == -1.0
    sched.running.append(make_request(3, 10, 5))
    assert sched._reserve() == left_sum([CLIP_MAX_NEW_TOKENS * ratio] * 4)  # another batch size: summed
    sched.new_token_ratio = ratio - sched._decay
    sched.running.pop()
    # (a new ratio drops the sums)
    assert sched._reserve() == left_sum([CLIP_MAX_NEW_TOKENS * (ratio - sched._decay)] * 3)
    assert sched._reserves == {3: sched._reserve()}


def test_a_decode_steps_answer_reads_only_the_prompts_after_its_known_decodes():
    # `fast_forward` asks whether a prompt with prefix keys ran in the step (its blocks join the
    # tree at the step's end): the known decodes, a prefix of `scheduled`, are not read
    from servesim.replica.schedulers.outputs import REPEAT_DECODES, REPEAT_THROUGH, SchedulerOutput

    class Unread(tuple):
        def __bool__(self):
            raise AssertionError("a known decode's keys were read")

    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", max_num_batched_tokens=256)
    decodes = [make_request(i, 20, 5) for i in range(3)]
    for r in decodes:
        r.kv_block_keys, r.num_output_tokens, r.num_computed_tokens = Unread(("k",)), 1, 20
    sched.running = list(decodes)
    out = SchedulerOutput(scheduled=[(r, 1) for r in decodes], num_known_decodes=3)
    assert sched.fast_forward(out) == REPEAT_THROUGH
    prompt = _req(3, 40, 5, ["p1", "p2"])  # a keyed prompt after the known decodes
    sched.running.append(prompt)
    out = SchedulerOutput(scheduled=[(r, 1) for r in decodes] + [(prompt, 40)], num_known_decodes=3)
    assert sched.fast_forward(out) == REPEAT_DECODES


def test_decoding_without_the_pass_is_the_pass():
    # Whenever a step prefills nothing, the running requests `_decoding` returns without
    # reading them are exactly `decoding_requests` (random prompts, prefix keys, chunked
    # prompts, mixed chunks, retractions in a small cache); the shortcut is taken.
    from servesim.replica.schedulers.batch_passes import decoding_requests
    from servesim.replica.schedulers.sglang import SGLangScheduler
    from tests.factories import serve
    from tests.replica.test_fast_forward import random_requests

    for num_blocks, params, fast in [(60, {}, False), (400, {"enable_mixed_chunk": True}, True),
                                     (120, {"chunked_prefill_size": 64}, True)]:
        engine, sched, kv, loop, done = make_engine(num_blocks=num_blocks, scheduler="sglang", params=params,
                                                    max_num_batched_tokens=256, max_num_seqs=16, fast_forward=fast)
        taken = []

        def checked(self):
            value = SGLangScheduler._decoding(self)
            assert value == decoding_requests(self.running)
            taken.append(self.chunked is None)
            return value

        sched._decoding = checked.__get__(sched)
        reqs = random_requests(num_blocks, 150)
        for r in reqs:
            r.max_tokens = r.output_len + 20
        serve(engine, loop, reqs)
        assert all(r.state == RequestState.FINISHED for r in reqs)
        assert sum(taken) > 20, (num_blocks, params)
        if num_blocks == 60:
            assert any(r.num_preemptions for r in reqs)  # retractions ran


def two_prompt_steps(params: dict, arrival_s: float, fast_forward: bool = False) -> list:
    """The step log of a 32-token prompt decoding 20 tokens and a 16-token one (2 tokens) arriving at
    `arrival_s`, on an SGLang engine with `params`; both finish and every block is freed."""
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=fast_forward,
                                                max_num_batched_tokens=256, params=params)
    log = run_logged(engine, loop, [make_request(0, 32, 20, max_tokens=20),
                                    make_request(1, 16, 2, arrival_s, max_tokens=2)])
    kv.check_all_free()
    assert [r.state for r in done] == [RequestState.FINISHED] * 2
    return log


def test_recv_interval_takes_arrivals_only_every_n_decode_steps():
    # --scheduler-recv-interval 4: the prefill step lets the next step take the inbox (empty:
    # the counter restarts there, at step count 1), so a request arriving during step 2 is
    # taken only at count 5, after four decode steps of request 0; with the default it is
    # prefilled in the next step
    def steps(interval):
        return two_prompt_steps({"scheduler_recv_interval": interval}, 0.016)

    assert steps(1)[:3] == [[(0, 32)], [(0, 1)], [(1, 16)]]
    assert steps(4)[:6] == [[(0, 32)]] + [[(0, 1)]] * 4 + [[(1, 16)]]


@pytest.mark.parametrize("fast_forward", [False, True])
def test_overlap_loop_takes_at_a_prompt_step_start(fast_forward):
    # Request 1 arrives during request 0's prompt step (ToyPerf: 13.2 ms). SGLang's normal loop takes
    # it at that step's end and prefills it next; the overlap loop (`overlap_loop_take`)
    # took the inbox as the prompt step started, so request 1 waits four decode steps
    def steps(overlap):
        return two_prompt_steps({"scheduler_recv_interval": 4, "overlap_loop_take": overlap}, 0.005, fast_forward)

    assert steps(False)[:2] == [[(0, 32)], [(1, 16)]]
    assert steps(True)[:6] == [[(0, 32)]] + [[(0, 1)]] * 4 + [[(1, 16)]]


def test_recv_interval_takes_at_once_on_an_idle_engine():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=False,
                                                max_num_batched_tokens=256, params={"scheduler_recv_interval": 30})
    log = run_logged(engine, loop, [make_request(0, 32, 2, max_tokens=2), make_request(1, 16, 2, 1.0, max_tokens=2)])
    assert log == [[(0, 32)], [(0, 1)], [(1, 16)], [(1, 1)]]
    assert done[1].first_token_s < 1.1  # nothing ran: no decode steps to wait for


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("interval", [3, 30])
@pytest.mark.parametrize("seed,num_blocks", [(4, 2000), (3, 1000)])
def test_recv_interval_fast_forward_matches_step_by_step(interval, seed, num_blocks, overlap):
    # arrivals four times further apart than test_fast_forward's: stretches of decodes between them
    def reqs():
        return [make_request(r.id, r.prompt_len, r.output_len, 4 * r.arrival_s) for r in random_requests(seed)]

    params = {"scheduler_recv_interval": interval, "overlap_loop_take": overlap}
    a_reqs, b_reqs, c_reqs = reqs(), reqs(), reqs()
    a = run_engine(a_reqs, True, num_blocks, "sglang", params)
    b = run_engine(b_reqs, False, num_blocks, "sglang", params)
    assert a.num_fast_forwarded_steps > 0.25 * a.num_steps  # stretches ran with the inbox empty
    assert_same_run(a, b, a_reqs, b_reqs)
    run_engine(c_reqs, False, num_blocks, "sglang", {})
    assert [r.first_token_s for r in b_reqs] != [r.first_token_s for r in c_reqs]  # the interval matters


@pytest.mark.parametrize("fast_forward", [False, True])
def test_consecutive_prefill_launch_share_delays_the_first_batch_first_tokens(fast_forward):
    # Two 32-token prompts in two prefill batches (max_prefill_tokens 64: SGLang's `>=` rule), then
    # decodes. SGLang's overlap loop hands out batch 1's first tokens once batch 2 is launched: with
    # share 0.5 they come half of batch 2's step (ToyPerf: 10 ms + 32 x 0.1 ms) after batch 1's end.
    # Batch 2's own first tokens (a decode follows) and every later token keep their times.
    def run(share):
        engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=fast_forward,
                                                    max_num_batched_tokens=256,
                                                    params={"max_prefill_tokens": 64,
                                                            "consecutive_prefill_launch_share": share})
        reqs = [make_request(0, 32, 3, max_tokens=3), make_request(1, 32, 3, max_tokens=3)]
        steps = run_logged(engine, loop, reqs)
        kv.check_all_free()
        return steps, reqs

    steps0, plain = run(0.0)
    steps1, held = run(0.5)
    assert steps0 == steps1 and steps1[:3] == [[(0, 32)], [(1, 32)], [(0, 1), (1, 1)]]
    prefill_s = 0.01 + 32e-4
    assert plain[0].first_token_s == pytest.approx(prefill_s)
    assert held[0].first_token_s == pytest.approx(prefill_s + 0.5 * prefill_s)
    assert held[1].first_token_s == plain[1].first_token_s == pytest.approx(2 * prefill_s)
    assert [r.finish_s for r in held] == [r.finish_s for r in plain]


@pytest.mark.parametrize("token_s", [1e-3, 1e-2])
def test_consecutive_prefill_launch_share_with_a_streaming_front_end(token_s):
    # A front end that streams each step's tokens (`Engine.deliver`, here 1 or 10 ms a token from the step's end)
    # already puts the first tokens after their step's end; the launch hold then gives the later of the two:
    # batch 1's first token at max(delivered, its end + half of batch 2's step: the hold at 1 ms, the stream at
    # 10 ms), batch 2's as delivered (a decode follows it).
    prefill_s = 0.01 + 32e-4
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="sglang", fast_forward=False,
                                                max_num_batched_tokens=256,
                                                params={"max_prefill_tokens": 64,
                                                        "consecutive_prefill_launch_share": 0.5})
    engine.deliver = lambda now_s, tokens: now_s + tokens * token_s
    reqs = [make_request(0, 32, 3, max_tokens=3), make_request(1, 32, 3, max_tokens=3)]
    run_logged(engine, loop, reqs)
    kv.check_all_free()
    assert reqs[0].first_token_s == pytest.approx(max(prefill_s + token_s, 1.5 * prefill_s))
    assert reqs[1].first_token_s == pytest.approx(2 * prefill_s + token_s)


@pytest.mark.parametrize("seed,num_blocks", [(4, 2000), (3, 300)])
def test_consecutive_prefill_launch_share_fast_forward_matches_step_by_step(seed, num_blocks):
    # bursts of arrivals (prefill batches back to back), prompts longer than the 256-token chunk
    # budget, and at 300 blocks held queue heads and retractions: every stretch path agrees
    def reqs():
        return [make_request(r.id, 2 * r.prompt_len, r.output_len, 3 * r.arrival_s) for r in random_requests(seed)]

    params = {"consecutive_prefill_launch_share": 0.4}
    a_reqs, b_reqs, c_reqs = reqs(), reqs(), reqs()
    a = run_engine(a_reqs, True, num_blocks, "sglang", params)
    b = run_engine(b_reqs, False, num_blocks, "sglang", params)
    assert a.num_fast_forwarded_steps > 0  # (stretches ran between the bursts)
    assert_same_run(a, b, a_reqs, b_reqs)
    # a reporting delay only: the same steps without it, some first tokens later, none earlier
    c = run_engine(c_reqs, False, num_blocks, "sglang", {})
    assert c.num_steps == b.num_steps and [r.finish_s for r in c_reqs] == [r.finish_s for r in b_reqs]
    assert all(x.first_token_s >= y.first_token_s for x, y in zip(b_reqs, c_reqs))
    assert sum(x.first_token_s > y.first_token_s for x, y in zip(b_reqs, c_reqs)) > 10


def test_recv_interval_with_a_full_batch_admits_at_finishes_as_stepping():
    # max_num_seqs 4 under load: a waiting head is admitted when a request finishes. Its prompt
    # step restarts the recv skipper's count in `schedule`; a finish admission inside a stretch
    # left the count as it was, and the inbox was taken in two steps early (found by random
    # configurations: the Azure code trace, one replica). No joins under the skipper now.
    from pathlib import Path

    from servesim import load_scenario, simulate
    from tests.cluster.helpers import outcome

    example = Path(__file__).resolve().parents[2] / "examples" / "azure-code.yaml"
    sets = ["scheduler.name=sglang", "workload.trace.end_s=250", "workload.trace.speedup=2",
            "engine.max_num_seqs=4", "scheduler.scheduler_recv_interval=4"]
    fast, slow = (simulate(load_scenario(example, sets + [f"engine.fast_forward={ff}"])) for ff in ("true", "false"))
    assert outcome(fast) == outcome(slow)
    assert fast.num_fast_forwarded_steps > 0.1 * fast.summary()["num_steps"]  # (17 %: a batch of four)
