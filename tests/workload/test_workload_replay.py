import numpy as np
import pytest

from servesim.errors import InputError
from tests.workload.helpers import make


def test_azure_conv_has_19366_requests_starting_at_zero():
    reqs = list(make({"trace": "azure-conv"}).arrivals())
    assert len(reqs) == 19366
    assert reqs[0].arrival_s == 0.0
    assert (reqs[0].prompt_len, reqs[0].output_len) == (374, 44)  # first row of the file
    assert reqs[1].arrival_s == pytest.approx(50.9951690 - 46.6805900)
    assert [r.id for r in reqs] == list(range(19366))
    times = np.array([r.arrival_s for r in reqs])
    assert np.all(np.diff(times) >= 0)
    assert times[-1] / 60 == pytest.approx(58.4, abs=0.05)  # README: 58.4 min span


def test_azure_code_has_8819_requests():
    w = make({"trace": "azure-code"})
    assert w.expected_num_requests == 8819
    assert sum(1 for _ in w.arrivals()) == 8819


def test_mooncake_carries_512_token_hash_blocks():
    reqs = list(make({"trace": "mooncake-conversation"}).arrivals())
    assert len(reqs) == 12031
    assert reqs[0].hash_ids == tuple(range(14)) and reqs[0].hash_block_tokens == 512
    assert reqs[0].prompt_len == 6758
    assert all(len(r.hash_ids) == -(-r.prompt_len // 512) for r in reqs[:1000])


def test_speedup_and_slice_and_limits():
    base = list(make({"trace": "azure-conv"}).arrivals())
    fast = list(make({"trace": {"name": "azure-conv", "speedup": 2}}).arrivals())
    assert fast[100].arrival_s == pytest.approx(base[100].arrival_s / 2)
    sliced = list(make({"trace": {"name": "azure-conv", "start_s": 600, "end_s": 1200}}).arrivals())
    inside = [r for r in base if 600 <= r.arrival_s <= 1200]
    assert len(sliced) == len(inside)
    assert sliced[0].arrival_s == pytest.approx(inside[0].arrival_s - 600)
    assert len(list(make({"trace": "azure-conv", "num_requests": 50}).arrivals())) == 50
    capped = list(make({"trace": "azure-conv", "duration_s": 60}).arrivals())
    assert len(capped) == sum(r.arrival_s <= 60 for r in base)


def test_length_table_is_not_replayable():
    with pytest.raises(InputError, match="lengths: {dataset: sharegpt}"):
        make({"trace": "sharegpt"})


def test_unknown_trace_lists_shipped_names():
    with pytest.raises(InputError, match="azure-conv"):
        make({"trace": "no-such-trace"})
