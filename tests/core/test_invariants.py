"""The invariants checked after every run catch what they promise to catch."""

from __future__ import annotations

import dataclasses

import pytest

from servesim import simulate
from servesim.metrics.request_table import RequestTable
from servesim.replica.kv_cache import KVCacheManager
from servesim.scenario import validate_scenario
from servesim.invariants import check_invariants
from servesim.workload.request import RequestState


@pytest.fixture(scope="module")
def result():
    return simulate(validate_scenario({"workload": {"trace": {"name": "azure-conv", "end_s": 30}}}))


def fresh(result, tamper=None):
    """A copy of the run whose requests (the first one changed by `tamper`) make its table."""
    reqs = [dataclasses.replace(r, token_steps=list(r.token_steps)) for r in result.requests]
    if tamper is not None:
        tamper(reqs[0])
    return dataclasses.replace(result, table=RequestTable.from_requests(reqs), kept_requests=reqs)


def empty_kv():
    return KVCacheManager(10, 16)


def test_a_clean_run_passes(result):
    check_invariants(fresh(result), [empty_kv()])


@pytest.mark.parametrize("tamper,message", [
    (lambda r: setattr(r, "state", RequestState.RUNNING), "non-terminal state"),
    (lambda r: setattr(r, "num_output_tokens", r.num_output_tokens + 1), "token counts do not add up"),
    (lambda r: r.token_steps.extend([10**6, 10**6]), "token counts do not add up"),
    (lambda r: setattr(r, "id", r.id + 1), "seen twice"),
])
def test_a_broken_run_is_caught(result, tamper, message):
    broken = fresh(result, tamper)
    with pytest.raises(AssertionError, match=message):
        check_invariants(broken, [empty_kv()])


def test_leaked_blocks_are_caught(result):
    kv = empty_kv()
    req = result.requests[0]
    kv.allocate_slots(dataclasses.replace(req, num_computed_tokens=0), 20)
    with pytest.raises(AssertionError, match="KV blocks leaked"):
        check_invariants(fresh(result), [kv])
