"""Prompt/output lengths of generated requests: fixed, uniform, or sampled from a table."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from servesim.errors import InputError
from servesim.workload.config import LengthsConfig
from servesim.workload.sampling import int_spec_stream, stream
from servesim.workload.traces.readers import TraceReader
from servesim.workload.traces.registry import resolve_trace

# The ServeGen PMF datasets (reasoning, multimodal) are not row tables; servegen_data loads them.
PMF_DATASETS = ("deepseek-r1", "mm-image")


def load_length_table(name_or_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_lens, output_lens) of every row of a shipped table or trace file."""
    path, display, _ = resolve_trace(name_or_path)
    reader = TraceReader(path, display_name=display)
    prompts: list[int] = []
    outputs: list[int] = []
    for row in reader.rows():
        prompts.append(row[1])
        outputs.append(row[2])
    if not prompts:
        raise InputError(f"lengths.dataset {name_or_path!r} has no rows")
    return np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64)


def length_pairs(cfg: LengthsConfig, rng: np.random.Generator,
                 table: tuple[list[int], list[int]] | None = None) -> Iterator[tuple[int, int]]:
    """An endless stream of (prompt_len, output_len) following the config (`table`: the
    dataset's rows as (prompts, outputs) lists, if already loaded)."""
    if cfg.dataset is None:
        pairs: Iterator[tuple[int, int]] = zip(
            int_spec_stream(cfg.prompt_tokens, rng), int_spec_stream(cfg.output_tokens, rng)
        )
    elif cfg.dataset.removeprefix("servegen-") in PMF_DATASETS:
        from servesim.workload.servegen_data import pmf_length_pairs

        pairs = pmf_length_pairs(cfg.dataset.removeprefix("servegen-"), rng)
    else:
        plist, olist = table if table is not None else _table_lists(cfg.dataset)
        # Rows are sampled whole, keeping each prompt's real output length with it; the rows
        # are clipped once here, not each time one is drawn (a lookup per request).
        rows_clipped = list(_clipped(zip(plist, olist), cfg.max_prompt_tokens, cfg.max_output_tokens))
        rows: Iterator[int] = stream(lambda n: rng.integers(0, len(plist), size=n))
        return map(rows_clipped.__getitem__, rows)
    return _clipped(pairs, cfg.max_prompt_tokens, cfg.max_output_tokens)


def _clipped(pairs: Iterator[tuple[int, int]], max_prompt: int | None, max_output: int | None) -> Iterator[tuple[int, int]]:
    # Zero-length prompts or outputs cannot be served; clamp to 1 token.
    mp = max_prompt or 1 << 62
    mo = max_output or 1 << 62
    for p, o in pairs:
        yield min(max(p, 1), mp), min(max(o, 1), mo)


def _table_lists(name_or_path: str) -> tuple[list[int], list[int]]:
    prompts, outputs = load_length_table(name_or_path)
    return prompts.tolist(), outputs.tolist()


def length_samplers(cfg: LengthsConfig, rngs: list[np.random.Generator]) -> list[Callable[[], tuple[int, int]]]:
    """For each generator, a function returning the next (prompt_len, output_len); a dataset
    table is read once for all (it is parsed row by row with the trace reader's checks; a
    session workload's two streams read 61,000 rows, about 3 % of its run)."""
    table = None
    if cfg.dataset is not None and cfg.dataset.removeprefix("servegen-") not in PMF_DATASETS:
        table = _table_lists(cfg.dataset)
    return [length_pairs(cfg, rng, table).__next__ for rng in rngs]
