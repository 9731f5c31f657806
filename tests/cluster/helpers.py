"""Small cluster scenarios and a router that reads every field of every view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.cluster import routers
from servesim.cluster.routers.base import Router
from servesim.replica import fast_forward
from servesim.replica.kv_cache import KVCacheManager
from servesim.workload.feed import Feed

SESSIONS = str(Path(__file__).resolve().parents[2] / "examples" / "sessions.yaml")


class ReadsEverything(Router):
    """Test router: the replica with the least (outstanding, tokens, KV, running, waiting),
    so that every field of the views decides something; ties go to the lowest index."""

    def route(self, req, view):
        def key(i):
            v = view.view(i)
            return (v.num_outstanding + v.num_waiting, v.outstanding_prefill_tokens + v.outstanding_decode_tokens,
                    v.kv_used_blocks, v.num_running, i)
        return min(view.candidates, key=key)


@pytest.fixture
def reads_everything(monkeypatch):
    """Register `ReadsEverything` as router 'test-reads-everything' for one test."""
    routers.REGISTRY.available()  # load the real ones first
    ReadsEverything.name = "test-reads-everything"
    monkeypatch.setitem(routers.REGISTRY._classes, "test-reads-everything", ReadsEverything)
    return "test-reads-everything"


BASE = [
    "workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=40", "workload.num_requests=400",
    "workload.lengths.dataset=sharegpt", "engine.gpu_memory_utilization=0.3", "replicas=4",
]


def run(overrides: list[str], fast_forward: bool = True):
    sets = BASE + overrides + [f"engine.fast_forward={str(fast_forward).lower()}"]
    return simulate(load_scenario(None, sets), keep_steps=True)


def outcome(result) -> list[tuple]:
    """Everything a request went through, per request."""
    return [(r.id, int(r.state), r.replica, r.first_token_s, r.finish_s, tuple(r.token_steps), r.num_preemptions,
             r.num_cached_tokens) for r in result.requests]


def assert_same_steps(fast, slow) -> None:
    """Every replica's step log is the same column by column."""
    for a, b in zip(fast.replicas, slow.replicas):
        for col in ("start_s", "end_s", "prefill_tokens", "output_tokens", "num_running", "num_waiting",
                    "kv_used_blocks"):
            assert np.array_equal(getattr(a.steps, col), getattr(b.steps, col)), col


def count_calls(monkeypatch, cls, name: str, calls: dict, key: str) -> None:
    """Count in `calls[key]` the calls of method `name` of `cls` (which still runs), for one test."""
    method = getattr(cls, name)

    def counted(self, *args):
        calls[key] += 1
        return method(self, *args)

    monkeypatch.setattr(cls, name, counted)


def sessions_both(sets: list[str], monkeypatch) -> tuple:
    """`examples/sessions.yaml` with `sets`, fast-forwarded and stepped, and how many finishes
    the fast run told at their times (`Feed.notice`: inside stretches; stepping tells none)."""
    told = []
    notice = Feed.notice
    monkeypatch.setattr(Feed, "notice", lambda self, req, now_s: (told.append(req.id), notice(self, req, now_s)))
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    num_told = len(told)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(told) == num_told  # (stepping tells none early)
    return fast, slow, num_told


def joins_both(sets: list[str], monkeypatch, cls, counts=None) -> tuple:
    """`examples/sessions.yaml` with `sets`, fast-forwarded and stepped: (the two results, the
    fast run's keyed joins (the cached tokens of each), the turns `cls.joins_last` refused there,
    those `counts(sched, req)` says to count if given). Stepping joins and refuses none."""
    joins = keyed_joins(monkeypatch)
    refused = []
    joins_last = cls.joins_last

    def counted(self, req, now_s):
        last = joins_last(self, req, now_s)
        if not last and (counts is None or counts(self, req)):
            refused.append(req.id)
        return last

    monkeypatch.setattr(cls, "joins_last", counted)
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    n, m = len(joins), len(refused)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(joins) == n and len(refused) == m  # (stepping joins nothing)
    return fast, slow, joins, refused


def beside_rests(monkeypatch) -> dict[str, int]:
    """Count the turns that join beside a joined turn's rest (`keyed_join`'s chain: the stretch
    cut inside that turn's chunk steps) in the runs that follow, whole or with chunks of their own."""
    beside = {"whole": 0, "chunks": 0}
    keyed = fast_forward.keyed_join

    def counted(engine, st, now_s):
        chain = bool(st.rests) and st.rests[-1][0] >= st.k
        runs = len(st.prompt_runs)
        joined = keyed(engine, st, now_s)
        if chain and joined:
            beside["chunks" if len(st.prompt_runs) > runs else "whole"] += 1
        return joined

    monkeypatch.setattr(fast_forward, "keyed_join", counted)
    return beside


def keyed_joins(monkeypatch) -> list[int]:
    """Count the keyed joins of the runs that follow (`replica/keyed_join.py`): the list gets the
    cached tokens of each turn that joined (its hits, just admitted)."""
    joins = []
    keyed_join = fast_forward.keyed_join

    def counted(engine, st, now_s):
        joined = keyed_join(engine, st, now_s)
        if joined:
            joins.append(st.reqs[-1].num_computed_tokens)
        return joined

    monkeypatch.setattr(fast_forward, "keyed_join", counted)
    return joins


def count_tells(monkeypatch, module) -> tuple[list[int], list[int]]:
    """Count the finishes told at a stretch's last step before a join (`finish_notices.tell_last`
    as `module`, `keyed_join` or `stretch_join`, calls it) in the runs that follow: (the joins'
    steps where it told some, those of them it refused: a follow-up arriving at once)."""
    told, refused = [], []
    tell_last = module.tell_last

    def counted(engine, st, now_s):
        n = st.num_noticed
        may_join = tell_last(engine, st, now_s)
        if st.num_noticed > n:
            told.append(st.k)
            if not may_join:
                refused.append(st.k)
        return may_join

    monkeypatch.setattr(module, "tell_last", counted)
    return told, refused


def keep_kv_caches(m) -> list:
    """Every `KVCacheManager` made while monkeypatch `m` holds, in the order made (to read
    their counters after a run)."""
    caches: list = []
    init = KVCacheManager.__init__

    def kept(self, *args, **kw):
        init(self, *args, **kw)
        caches.append(self)

    m.setattr(KVCacheManager, "__init__", kept)
    return caches


def wrong_registrations(m) -> list:
    """The ids of keyed requests registered while monkeypatch `m` holds with blocks past the
    tokens they computed, or up to another count than theirs (a stretch's registrations are read
    where they are made: results alone cannot show one step off, as nobody else hits a
    conversation's blocks in that step). Filled as the run goes; empty when every one is right."""
    wrong: list = []
    register = KVCacheManager.cache_full_blocks_many

    def checked(self, reqs_tokens, more_tokens, last=None):
        wrong.extend(r.id for i, (r, c) in enumerate(reqs_tokens)
                     if c + (more_tokens if last is None or last[i] > more_tokens else last[i]) != r.num_computed_tokens)
        register(self, reqs_tokens, more_tokens, last)
        held = self._held
        wrong.extend(r.id for r, _ in reqs_tokens
                     if r.id in held and held[r.id].num_keyed > r.num_computed_tokens // self.block_size)

    m.setattr(KVCacheManager, "cache_full_blocks_many", checked)
    return wrong
