"""The shipped length tables' numpy arrays (workload/length_tables.py) equal their CSV sources,
and sampling from them draws what the row-by-row parse and per-pair clipping drew."""

import numpy as np
import pytest

from servesim.errors import InputError
from servesim.workload import length_tables
from servesim.workload.config import LengthsConfig
from servesim.workload.length_tables import array_path, length_tables as shipped_tables, parse_length_table
from servesim.workload.lengths import length_pairs, length_streams
from servesim.workload.traces.registry import SHIPPED_TRACES


def test_two_shipped_tables_have_arrays():
    names = sorted(t.relpath for t in shipped_tables())
    assert len(names) == 2 and all(n.startswith("length_distributions/") for n in names)


@pytest.mark.parametrize("shipped", shipped_tables(), ids=lambda t: t.name)
def test_array_equals_its_csv(shipped):
    # (if this fails, the CSV changed: rebuild with `python -m servesim.workload.length_tables`)
    prompts, outputs = parse_length_table(shipped.path, shipped.name)
    table = np.load(array_path(shipped))
    assert table.shape == (2, shipped.rows) == (2, len(prompts))
    assert np.array_equal(table[0], prompts) and np.array_equal(table[1], outputs)


def test_a_shipped_table_is_read_from_its_array(monkeypatch):
    expected = parse_length_table(SHIPPED_TRACES["arxiv"].path, "arxiv")
    monkeypatch.setattr(length_tables, "parse_length_table", lambda *a: pytest.fail("parsed the CSV"))
    prompts, outputs = length_tables.read_length_table("arxiv")
    assert prompts.dtype == outputs.dtype == np.int64
    assert np.array_equal(prompts, expected[0]) and np.array_equal(outputs, expected[1])


def test_a_users_file_is_parsed_with_the_readers_checks(tmp_path):
    good = tmp_path / "lens.csv"
    good.write_text("input_tokens,output_tokens\n10,3\n0,7\n")
    prompts, outputs = length_tables.read_length_table(str(good))
    assert prompts.tolist() == [10, 0] and outputs.tolist() == [3, 7]
    bad = tmp_path / "bad.csv"
    bad.write_text("input_tokens,output_tokens\n10,x\n")
    with pytest.raises(InputError, match="line 2, column output_tokens"):
        length_tables.read_length_table(str(bad))
    empty = tmp_path / "empty.csv"
    empty.write_text("input_tokens,output_tokens\n")
    with pytest.raises(InputError, match="has no rows"):
        length_tables.read_length_table(str(empty))


def _row_by_row(cfg: LengthsConfig, rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """The earlier sampler: every row parsed and clipped in Python, a block of 4,096 row indices
    drawn per numpy call."""
    shipped = SHIPPED_TRACES["sharegpt"]
    prompts, outputs = parse_length_table(shipped.path, shipped.name)
    mp, mo = cfg.max_prompt_tokens or 1 << 62, cfg.max_output_tokens or 1 << 62
    rows = [(min(max(p, 1), mp), min(max(o, 1), mo)) for p, o in zip(prompts.tolist(), outputs.tolist())]
    out: list[tuple[int, int]] = []
    while len(out) < n:
        out += [rows[i] for i in rng.integers(0, len(rows), size=4096).tolist()]
    return out[:n]


@pytest.mark.parametrize("limits", [{}, {"max_prompt_tokens": 1024, "max_output_tokens": 128}])
def test_sampling_draws_what_the_row_by_row_sampler_drew(limits):
    cfg = LengthsConfig(dataset="sharegpt", **limits)
    n = 9000  # (three blocks of draws)
    first, follow = length_streams(cfg, [np.random.default_rng(5), np.random.default_rng(6)])
    drawn = [next(first) for _ in range(n)]
    assert drawn == _row_by_row(cfg, np.random.default_rng(5), n)
    assert [next(follow) for _ in range(n)] == _row_by_row(cfg, np.random.default_rng(6), n)
    assert all(type(p) is int and type(o) is int for p, o in drawn[:10])
    if limits:
        assert max(p for p, _ in drawn) == 1024 and max(o for _, o in drawn) == 128
    alone = length_pairs(cfg, np.random.default_rng(5))  # (the table loaded by the stream itself)
    assert [next(alone) for _ in range(100)] == drawn[:100]
