"""What a scheduler hands the engine to spare it passes over the batch is what those passes
would find: the leading decodes as a list (`SchedulerOutput.known_decodes`), Sarathi's running
batch in arrival order without a sort per step, FastSwitch's latest running arrival; and what
the engine's stepped step tells the KV cache of its decodes (`KVCacheManager.expected`). Checked
at every step of overloaded runs (evictions, preemptions, admissions between steps), and each
hint is shown to be taken."""

from __future__ import annotations

import random

import pytest

from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.schedulers import fastswitch
from servesim.replica.schedulers.queues import ARRIVAL_ID
from tests.factories import make_engine, make_request, serve

NUM_BLOCKS = 60


def _requests(seed: int = 5, n: int = 90):
    rng = random.Random(seed)
    # (equal arrival times too: sarathi's order and fastswitch's victim break ties by id)
    return [make_request(i, rng.randint(20, 300), rng.randint(5, 120), arrival=0.004 * (i // 3)) for i in range(n)]


def _overloaded(scheduler: str, params: dict | None = None):
    engine, sched, kv, loop, done = make_engine(num_blocks=NUM_BLOCKS, scheduler=scheduler, params=params,
                                                max_num_seqs=32, max_num_batched_tokens=256)
    return engine, sched, kv, loop, done


@pytest.mark.parametrize("scheduler", ["vllm", "priority", "andes", "sarathi", "vtc", "hygen", "fastswitch",
                                       "trtllm", "sglang"])
def test_known_decodes_are_the_leading_scheduled_requests(scheduler):
    engine, sched, kv, loop, done = _overloaded(scheduler)
    schedule = sched.schedule
    seen = {"hinted": 0, "steps": 0}

    def checked(now_s):
        out = schedule(now_s)
        seen["steps"] += 1
        if out.known_decodes is not None:
            seen["hinted"] += 1
            assert out.known_decodes == [r for r, _ in out.scheduled[:out.num_known_decodes]]
        return out

    sched.schedule = checked
    reqs = _requests()
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    assert len(done) == len(reqs)
    assert seen["hinted"] > 0, seen  # (TensorRT-LLM's only where every running request decodes and nothing waits)


def test_sarathi_keeps_its_running_batch_in_arrival_order():
    """`_arrival_order` equals a sort of the batch at every step, and places only the requests
    appended since (the bisection path runs, not only the whole sort)."""
    engine, sched, kv, loop, done = _overloaded("sarathi", {"chunk_size": 128})
    order = sched._arrival_order
    placed = {"few": 0, "calls": 0}

    def checked():
        expected = sorted(sched.running, key=ARRIVAL_ID)
        placed["calls"] += 1
        placed["few"] += sched._appended * 8 <= len(sched.running)
        got = order()
        assert got == expected
        return got

    sched._arrival_order = checked
    reqs = _requests(seed=7)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    assert len(done) == len(reqs) and any(r.num_preemptions for r in reqs)
    assert placed["few"] > 0.5 * placed["calls"], placed


def test_fastswitch_latest_running_arrival_is_the_tuple_maximum():
    rng = random.Random(3)
    for n in range(0, 40):
        reqs = [make_request(i, 10, 10, arrival=float(rng.randint(0, 5))) for i in rng.sample(range(100), n)]
        expected = max(reqs, key=ARRIVAL_ID, default=None)
        assert fastswitch._latest(reqs) is expected


def _outcomes(reqs) -> list:
    return [(r.id, r.finish_s, r.first_token_s, r.token_steps, r.num_preemptions) for r in reqs]


def _preempting_run(engine, kv, loop, done, reqs) -> list:
    """Serve `reqs` to the end; every block is free again and every request finished, some
    preempted on the way; their outcomes."""
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    assert len(done) == len(reqs) and any(r.num_preemptions for r in reqs)
    return _outcomes(reqs)


@pytest.mark.parametrize("scheduler", ["vllm", "andes", "fastswitch", "priority", "sarathi"])
def test_decodes_told_by_the_last_step_are_what_the_allocation_finds(scheduler, monkeypatch):
    """Whenever the allocation takes the last step's word (`_known_decodes`), its leading m
    requests decode and its edges are exactly those of them whose token starts a block; the
    run is the same request for request as one whose allocations look at every request."""
    known = KVCacheManager._known_decodes
    taken = {"told": 0, "taken": 0}

    def checked(self, reqs):
        taken["told"] += 1
        m, edges = known(self, reqs)
        if m:
            taken["taken"] += 1
            assert all(r.num_output_tokens and r.prompt_len + r.num_output_tokens == r.num_computed_tokens + 1
                       for r in reqs[:m])
            assert edges == [r for r in reqs[:m] if r.num_computed_tokens % self.block_size == 0]
        return m, edges

    runs = []
    for told in (checked, lambda self, reqs: (0, ())):
        monkeypatch.setattr(KVCacheManager, "_known_decodes", told)
        engine, sched, kv, loop, done = _overloaded(scheduler)
        reqs = _requests(seed=11, n=120)
        serve(engine, loop, reqs)
        engine.drain(loop.now_s)
        kv.check_all_free()
        assert len(done) == len(reqs)
        runs.append(_outcomes(reqs))
    assert runs[0] == runs[1]
    assert taken["taken"] > 0.5 * taken["told"], taken


def _keyed_requests(seed: int = 3, n: int = 120):
    """Requests with prefix keys past their prompts (their answers' blocks register as they
    decode), a few prompts shared by groups of them."""
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        prompt, output = rng.randint(20, 300), rng.randint(5, 120)
        shared = tuple(1000 * (1 + i % 4) + j for j in range(min(prompt // 16, 6)))
        own = (prompt + output) // 16 - len(shared)
        ids = shared + tuple(range(10**6 * (i + 1), 10**6 * (i + 1) + own))
        reqs.append(make_request(i, prompt, output, arrival=0.004 * (i // 3), hash_ids=ids, hash_block_tokens=16))
    return reqs


@pytest.mark.parametrize("scheduler", ["vllm", "andes", "fastswitch", "priority"])
def test_keyed_decodes_told_only_after_a_pass_registered_their_blocks(scheduler, monkeypatch):
    """With prefix keys the engine tells the KV cache of the decodes its allocation pass gave a
    token (`KVCacheManager.passed`): each has its full keyed blocks registered, so the edges,
    those whose token starts or completes a block, are the only ones that may need a block or
    register one. Checked at every allocation that takes the word; the run is the same
    request for request as one whose allocations look at every request, and the word is taken."""
    from servesim.replica.block_keys import BlockKeys

    known = KVCacheManager._known_decodes
    taken = {"told": 0, "taken": 0, "registering edges": 0}

    def checked(self, reqs):
        taken["told"] += 1
        m, edges = known(self, reqs)
        if m:
            taken["taken"] += 1
            bs = self.block_size
            assert edges == [r for r in reqs[:m] if r.num_computed_tokens % bs in (0, bs - 1)]
            for r in reqs[:m]:
                h, keys = self._held[r.id], r.kv_block_keys
                full = min((r.num_computed_tokens + 1) // bs, keys.num_blocks if type(keys) is BlockKeys else len(keys))
                if r not in edges:
                    assert r.num_computed_tokens < (h.num_keyed + h.num_plain) * bs and h.num_keyed >= full
                elif h.num_keyed < full:
                    taken["registering edges"] += 1
        return m, edges

    runs = []
    for told in (checked, lambda self, reqs: (0, ())):
        monkeypatch.setattr(KVCacheManager, "_known_decodes", told)
        engine, sched, kv, loop, done = _overloaded(scheduler)
        reqs = _keyed_requests()
        serve(engine, loop, reqs)
        engine.drain(loop.now_s)
        kv.check_all_free()
        assert engine.keys_seen and len(done) == len(reqs)
        runs.append(_outcomes(reqs))
    assert runs[0] == runs[1]
    assert taken["taken"] > 0.5 * taken["told"] and taken["registering edges"] > 20, taken


def test_keyed_decodes_not_all_passed_are_not_told():
    """With prefix keys a step tells the cache of its decodes only if its allocation pass gave
    every one its token (another way in may leave keyed blocks unregistered); the pass's word
    is read once. A policy that reorders its batch is told only without keys (as a set)."""
    engine, sched, kv, loop, done = make_engine()
    a, b, c = (make_request(i, 31, 50) for i in range(3))
    assert engine._told_kv([a, b]) is kv  # (no keys seen: the cache is told)
    engine.keys_seen = True
    assert engine._told_kv([a, b]) is None  # (no pass)
    kv.passed = []
    assert engine._told_kv([a, b]) is None  # (a pass that gave nobody a token)
    kv.passed = [a, b]
    assert engine._told_kv([a, b, c]) is None and kv.passed is None
    kv.passed = [a, c, b]
    assert engine._told_kv([a, b]) is None
    kv.passed = [a, b, c]
    assert engine._told_kv([a, b]) is kv and kv.passed is None
    # a policy that sorts its batch every step (autellix's levels) is told without keys (as a
    # set: `quiet_decodes`), not with them: its allocation pass keeps no `passed`
    engine, _, kv = make_engine(scheduler="autellix")[:3]
    assert engine.scheduler.reorders_running and engine._told_kv([a, b]) is kv
    engine.keys_seen = True
    kv.passed = None  # (what `_start_step` leaves for a policy that reorders)
    assert engine._told_kv([a, b]) is None


def test_a_reordered_batch_is_told_the_decodes_that_need_nothing(monkeypatch):
    """Autellix sorts its batch by level at every step, so the engine tells the cache of the
    decodes going on whose next token falls in a block they hold, as a set (`quiet_decodes`),
    and its allocation passes look only at the others, in their order. Whenever a pass takes
    the set, each of them in its batch decodes and has room for its token; the run is the same
    request for request as one told nothing, and the set is taken at most steps, the batch
    reordered (levels move: a short first quantum) and requests preempted."""
    from servesim.replica.engine import Engine

    allocate = KVCacheManager._allocate_decodes
    seen = {"passes": 0, "set": 0, "quiet": 0, "reordered": 0}

    def checked(self, reqs, whole):
        seen["passes"] += 1
        told = self.expected
        if type(told) is set:
            seen["set"] += 1
            for r in filter(told.__contains__, reqs):
                h = self._held[r.id]
                assert r.num_output_tokens and r.prompt_len + r.num_output_tokens == r.num_computed_tokens + 1
                assert r.num_computed_tokens < (h.num_keyed + h.num_plain) * self.block_size
                seen["quiet"] += 1
        return allocate(self, reqs, whole)

    monkeypatch.setattr(KVCacheManager, "_allocate_decodes", checked)
    runs = []
    for told in (Engine._told_kv, lambda self, decodes: None):
        monkeypatch.setattr(Engine, "_told_kv", told)
        engine, sched, kv, loop, done = _overloaded("autellix", {"base_quantum_s": 0.002})
        order = sched._order_running

        def watched(key):
            before = list(sched.running)
            order(key)
            seen["reordered"] += [r for r in sched.running if r in before] != before
        sched._order_running = watched
        runs.append(_preempting_run(engine, kv, loop, done, _requests(seed=13, n=120)))
    assert runs[0] == runs[1]
    assert seen["set"] > 0.4 * seen["passes"] and seen["quiet"] > 3000 and seen["reordered"] > 100, seen


def test_the_last_steps_word_is_not_taken_for_another_batch():
    """A batch that is not the told decodes in their order (one left, two swapped, fewer), or
    whose last one was taken out and is back in its prompt, is looked at request by request."""
    kv = KVCacheManager(100, 16)
    reqs = [make_request(i, 31, 50) for i in range(5)]
    for r in reqs:
        assert kv.allocate_slots(r, r.prompt_len)
        r.num_computed_tokens, r.num_output_tokens = r.prompt_len, 1
    a, b, c, d, e = reqs

    def told(batch, decodes=(a, b, c, d, e), gone=(c,), edges=()):
        kv.expected = (list(decodes), gone, list(edges))
        return kv._known_decodes(batch)

    assert told([a, b, d, e, c]) == (4, [])  # (c finished: the four others lead, the last is new)
    assert told([a, b, d]) == (0, ())  # (fewer than told)
    assert told([a, d, b, e]) == (0, ())  # (reordered)
    assert told([a, b, e, d]) == (0, ())
    assert told([b, d, e]) == (0, ())  # (one left)
    assert kv.expected is None  # (read once)
    e.num_computed_tokens = 0  # (preempted by recompute, admitted again: in its prompt)
    assert told([a, b, d, e]) == (0, ())
    e.num_computed_tokens = e.prompt_len
    assert told([a, b, d, e], edges=[b]) == (4, [b])


@pytest.mark.parametrize("scheduler, params, least", [("autellix", {"base_quantum_s": 0.002}, (1000, 11)),
                                                      ("fastswitch", None, (50, 6)), ("hygen", None, (40, 0))])
def test_decode_runs_past_the_known_decodes_are_decodes(scheduler, params, least, monkeypatch):
    """The running pass's later runs of decodes (`SchedulerOutput.decode_runs`: Autellix's batch
    sorted by level puts new prompts before older decodes; FastSwitch's walk, admissions and
    swaps between them; HyGen's online pass after a prompt chunk) hold decodes only, in order,
    past the known ones, also after evictions took entries out before or inside them; the
    engine's split taking them gives the same run request for request as one testing every
    entry."""
    from servesim.replica import step_batch
    from servesim.replica.schedulers.vllm_steps import VLLMSteps

    evict = VLLMSteps.evict
    seen = {"runs": 0, "entries": 0, "shifted": 0}

    def counted(self, victim, out, *args, **kwargs):
        seen["shifted"] += bool(out.decode_runs)
        return evict(self, victim, out, *args, **kwargs)

    monkeypatch.setattr(VLLMSteps, "evict", counted)
    split = step_batch.split_batch

    def checked(out, now_s):
        last = out.num_known_decodes
        for start, end in out.decode_runs or ():
            assert last <= start <= end <= len(out.scheduled)
            for r, n in out.scheduled[start:end]:
                assert n == 1 and r.num_output_tokens and r.prompt_len + r.num_output_tokens == r.num_computed_tokens + 1
            seen["runs"] += 1
            seen["entries"] += end - start
            last = end
        return split(out, now_s)

    def untold(out, now_s):
        out.decode_runs = None
        return split(out, now_s)

    runs = []
    for hint in (checked, untold):
        monkeypatch.setattr("servesim.replica.engine.split_batch", hint)
        engine, sched, kv, loop, done = _overloaded(scheduler, params)
        runs.append(_preempting_run(engine, kv, loop, done, _requests(seed=13, n=120)))
    assert runs[0] == runs[1]
    # (taken, and kept in place by evictions: HyGen's victims here all come after its runs)
    assert seen["entries"] > least[0] and seen["shifted"] >= least[1], seen
