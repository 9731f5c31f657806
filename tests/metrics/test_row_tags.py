"""The kept `Request.extra` tags as typed columns: each row's tags read back as they were set."""

from __future__ import annotations

import numpy as np

from servesim.metrics.row_tags import RowTags


def test_tags_read_back_by_row_with_their_types() -> None:
    tags = RowTags()
    assert not tags and tags.get(0) == {} and not tags.has("lora_hit")
    tags.add(7, {"lora_hit": False, "lora_load_s": 0.25, "lora_num_loads": 2, "lora_num_storage_loads": True,
                 "other": "not kept"})
    tags.add(2, {"reject_reason": "prompt too long", "qoe_tds": 5})
    tags.add(5, {"lora_hit": True})
    tags.add(9, {"reject_reason": "no memory"})
    tags.add(4, {"reject_reason": "prompt too long"})
    assert tags and tags.has("lora_hit") and not tags.has("qoe_ttft_s")
    assert tags.get(7) == {"lora_hit": False, "lora_load_s": 0.25, "lora_num_loads": 2, "lora_num_storage_loads": 1}
    assert [type(v) for v in tags.get(7).values()] == [bool, float, int, int]
    assert tags.get(2) == {"reject_reason": "prompt too long", "qoe_tds": 5.0}
    assert tags.get(9) == {"reject_reason": "no memory"} and tags.get(4) == {"reject_reason": "prompt too long"}
    assert tags.get(3) == {} and tags.get(10) == {}

    present, hits = tags.at("lora_hit", np.array([9, 5, 7, 0, 5]))
    assert present.tolist() == [False, True, True, False, True] and hits.tolist() == [False, True, False, False, True]
    present, tds = tags.at("qoe_tds", np.arange(4), 10.0)
    assert present.tolist() == [False, False, True, False] and tds.tolist() == [10.0, 10.0, 5.0, 10.0]
    tags.add(0, {"qoe_tds": 1.5})  # a later add is read too
    assert tags.at("qoe_tds", np.arange(3), 10.0)[1].tolist() == [1.5, 10.0, 5.0]
