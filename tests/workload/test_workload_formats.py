"""Trace files: round trips, aliases, and bad rows (file, line, column; skip with a count)."""

import gzip

import pytest

from servesim.errors import InputError
from servesim.workload.traces import TraceReader
from servesim.workload.traces.writers import write_trace
from tests.workload.helpers import make


def fields(reqs):
    return [(round(r.arrival_s, 3), r.prompt_len, r.output_len, r.hash_ids, r.hash_block_tokens, r.tenant,
             r.priority, r.slo_class, r.ttft_slo_s, r.is_offline, r.session_id, r.turn, r.lora) for r in reqs]


ATTRS = {"tenants": {"a": 1, "b": 2}, "priorities": {0: 1, 2: 1}, "offline_share": 0.3,
         "slo_classes": {"chat": {"share": 1, "ttft_s": 0.5, "tpot_s": 0.05}, "batch": {"share": 1}},
         "loras": {"count": 5, "share": 0.7}}


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".jsonl", ".jsonl.gz"])
def test_round_trip_keeps_every_field(tmp_path, suffix):
    cfg = {"sessions": {"turns": 1}, "attributes": ATTRS, "num_requests": 300}
    original = list(make(cfg).arrivals())
    path = tmp_path / f"t{suffix}"
    assert write_trace(original, path) == 300
    again = list(make({"trace": str(path)}).arrivals())
    shift = original[0].arrival_s  # replay times start at the first row
    for r in original:
        r.arrival_s -= shift
    assert fields(again) == fields(original)


def test_mooncake_jsonl_is_written_byte_identical(tmp_path):
    path = tmp_path / "m.jsonl"
    write_trace(make({"trace": "mooncake-conversation", "num_requests": 500}).arrivals(), path)
    from servesim.workload.traces.registry import SHIPPED_TRACES

    with gzip.open(SHIPPED_TRACES["mooncake-conversation"].path, "rt") as fh:
        head = [next(fh) for _ in range(500)]
    assert path.read_text() == "".join(head)


def test_bad_cell_names_file_line_and_column(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,prompt_len,output_len\n0,10,5\n1,abc,5\n2,3,4\n")
    with pytest.raises(InputError, match=r"^trace.csv line 3, column prompt_len: 'abc' is not a non-negative integer$"):
        list(make({"trace": str(path)}).arrivals())


@pytest.mark.parametrize("body, message", [
    ("0,10,5\n-1.5,3,4\n", "line 3, column arrival_s: '-1.5' is not a non-negative number"),
    ("5,10,5\n2,3,4\n", "line 3, column arrival_s: 2.0 s is earlier than the previous row"),
    ("0,10,5\n1,3\n", "line 3: has 2 fields, the header has 3"),
    ("0,10,5\n1,3,4.5\n", "line 3, column output_len: '4.5' is not a non-negative integer"),
    ("0,10,5\n1,3000000000,4\n", "line 3, column prompt_len: '3000000000' is above the largest count, 2,147,483,647"),
])
def test_bad_rows(tmp_path, body, message):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_len,output_len\n" + body)
    with pytest.raises(InputError, match=message):
        list(make({"trace": str(path)}).arrivals())


def test_whole_numbers_written_as_floats_are_counts(tmp_path):
    # pandas writes an integer column that holds an empty cell as floats ("512.0")
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_len,output_len,max_tokens\n0,512.0,64,\n1.5,1e3,7.0,100.0\n")
    reqs = list(make({"trace": str(path)}).arrivals())
    assert [(r.prompt_len, r.output_len, r.max_tokens) for r in reqs] == [(512, 64, None), (1000, 7, 100)]


def test_jsonl_rows_with_one_attribute_keep_it(tmp_path):
    # (rows of four fields skipped their attributes: a tenant or priority alone was lost)
    path = tmp_path / "t.jsonl"
    path.write_text('{"arrival_s": 0, "prompt_len": 5, "output_len": 1, "tenant": "a"}\n'
                    '{"arrival_s": 1, "prompt_len": 5, "output_len": 1, "priority": 3}\n'
                    '{"arrival_s": 2, "prompt_len": 5, "output_len": 1}\n')
    assert [(r.tenant, r.priority) for r in make({"trace": str(path)}).arrivals()] == [("a", 0), ("default", 3),
                                                                                      ("default", 0)]
    path.write_text('{"arrival_s": 0, "prompt_len": 5, "output_len": 1, "priority": 1e308}\n')
    with pytest.raises(InputError, match="t.jsonl line 1, field priority: 1e\\+308 is beyond a 64-bit integer"):
        list(make({"trace": str(path)}).arrivals())


def test_bad_jsonl_and_azure_timestamp(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 9, "input_length": 5\n')
    with pytest.raises(InputError, match="t.jsonl line 2: not valid JSON"):
        list(make({"trace": str(path)}).arrivals())
    az = tmp_path / "az.csv"
    az.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,1,2\n2023-11-16 1x:15:47,1,2\n")
    with pytest.raises(InputError, match="az.csv line 3, column TIMESTAMP: .* is not a timestamp"):
        list(make({"trace": str(az)}).arrivals())


def test_skip_bad_rows_counts_them(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_len,output_len,tenant\n0,10,5,x\n1,abc,5,x\n2,3,4,y\n3,1\n4,5,6,\n")
    w = make({"trace": {"name": str(path), "skip_bad_rows": True}})
    reqs = list(w.arrivals())
    assert [(r.arrival_s, r.prompt_len, r.tenant) for r in reqs] == [(0, 10, "x"), (2, 3, "y"), (4, 5, "default")]
    assert w.skipped_rows == 2


def test_missing_length_column_is_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_len\n0,10\n")
    with pytest.raises(InputError, match="no output length column; expected one of output_len"):
        list(TraceReader(path).rows())


def test_lora_mix_zipf_shares_and_seed(tmp_path):
    cfg = {"attributes": {"loras": {"count": 4, "zipf_s": 1.0, "share": 0.5}}, "num_requests": 20000}
    reqs = list(make(cfg).arrivals())
    names = [r.lora for r in reqs]
    with_adapter = [n for n in names if n is not None]
    assert abs(len(with_adapter) / len(names) - 0.5) < 0.02
    harmonic = 1 + 1 / 2 + 1 / 3 + 1 / 4  # Zipf s=1 over 4 adapters: lora-k has share 1 / ((k + 1) * H4)
    for k in range(4):
        assert abs(with_adapter.count(f"lora-{k}") / len(with_adapter) - 1 / ((k + 1) * harmonic)) < 0.02
    assert names == [r.lora for r in make(cfg).arrivals()]  # same seed, same adapters
    assert names != [r.lora for r in make(cfg, seed=1).arrivals()]
    # adding adapters does not change the other attributes' draws
    base = {"attributes": {"tenants": {"a": 1, "b": 1}}, "num_requests": 200}
    both = {"attributes": {"tenants": {"a": 1, "b": 1}, "loras": {"count": 3}}, "num_requests": 200}
    assert [r.tenant for r in make(base).arrivals()] == [r.tenant for r in make(both).arrivals()]
    # an exponent whose powers pass a float's range: the most popular adapter takes every request
    steep = {"attributes": {"loras": {"count": 300, "zipf_s": 200.0}}, "num_requests": 50}
    assert {r.lora for r in make(steep).arrivals()} == {"lora-0"}
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_len,output_len,lora\n0,10,5,sql\n1,10,5,\n")
    assert [r.lora for r in make({"trace": str(path)}).arrivals()] == ["sql", None]
