"""The summary sections (fairness, QoE, LoRA, programs) over a spilled table: a chunk of rows at a
time, their values per request in files, and the very bytes of the sections over whole columns.

Every size that decides what stays in memory is made tiny, so a small run goes through the file
paths; each test asserts that they ran."""

from __future__ import annotations

import json

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.metrics import request_table, row_spill
from servesim.metrics.exact import WeightedValues
from servesim.metrics.sections import fairness, lora, qoe
from servesim.metrics.stream_stats import StreamValues

CASES = {  # scenario, overrides, the sections it reports
    "tenants-andes": ("examples/azure-conv.yaml",
                      ["workload.trace.speedup=12", "workload.trace.end_s=60", "scheduler.name=andes",
                       "workload.attributes.tenants={a: 1, b: 2}", "replicas=2"], {"fairness", "qoe"}),
    "lora": ("examples/multi-lora.yaml", ["workload.num_requests=300"], {"lora"}),
    "programs": ("examples/agent-programs.yaml", ["workload.num_requests=300"], {"programs"}),
}


def test_stream_values_give_numpys_mean_percentiles_and_min_from_a_file(monkeypatch, tmp_path):
    monkeypatch.setattr(StreamValues, "memory_values", 100)
    monkeypatch.setattr(WeightedValues, "memory_pairs", 150)
    rng = np.random.default_rng(7)
    for n in (101, 997, 5_003):
        values = np.round(rng.lognormal(0, 1.5, n), 4)  # ties, several binades
        s = StreamValues(tmp_path)
        for part in np.array_split(values, 13):
            s.add(part)
        assert s._file is not None and len(s) == n  # the values went to a file
        assert s.mean() == np.mean(values) and s.min() == values.min()
        for q in (0, 1, 10, 33.3, 50, 66.7, 90, 99, 99.9, 100):  # interpolation weights above and below 0.5
            assert s.percentile(q) == np.percentile(values, q), (n, q)  # bit for bit
        s.close()


@pytest.mark.parametrize("case", list(CASES))
def test_sections_of_a_spilled_table_equal_those_of_whole_columns(case, monkeypatch):
    path, sets, keys = CASES[case]
    whole = simulate(load_scenario(path, sets), keep_requests=True)
    assert not whole.table.spilled
    expected = {k: v for k, v in whole.summary().items() if k in keys}
    assert set(expected) == keys  # the run reports the sections it is for

    monkeypatch.setattr(request_table, "FLUSH_ROWS", 50)
    monkeypatch.setattr(request_table, "ROWS_PER_PASS", 64)
    monkeypatch.setattr(row_spill, "BLOCK_ROWS", 100)
    monkeypatch.setattr(StreamValues, "memory_values", 40)
    monkeypatch.setattr(WeightedValues, "memory_pairs", 300)
    made: list[StreamValues] = []

    class Recorded(StreamValues):
        def __init__(self, folder=None):
            super().__init__(folder)
            self.spilled = False
            made.append(self)

        def _spill(self, v):
            self.spilled = True
            super()._spill(v)

    for module in (fairness, qoe, lora):
        monkeypatch.setattr(module, "StreamValues", Recorded)
    spilled = simulate(load_scenario(path, sets), keep_requests=False)
    assert spilled.table.spilled and len(spilled.table) > 64
    got = {k: v for k, v in spilled.summary().items() if k in keys}
    assert json.dumps(got) == json.dumps(expected)  # the same keys in the same order, the same bits
    assert len(list(spilled.table.chunks())) > 1  # the sections read the table a chunk at a time
    if keys != {"programs"}:  # (programs keeps a program's four numbers, not a value per request)
        assert any(s.spilled for s in made)  # values per request went to files
