"""Prompt/output lengths of generated requests: fixed, uniform, or sampled from a table."""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import numpy as np

from servesim.workload.config import LengthsConfig
from servesim.workload.length_tables import read_length_table
from servesim.workload.sampling import BLOCK, int_spec_stream

# The ServeGen PMF datasets (reasoning, multimodal) are not row tables; servegen_data loads them.
PMF_DATASETS = ("deepseek-r1", "mm-image")


def length_pairs(cfg: LengthsConfig, rng: np.random.Generator,
                 table: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[tuple[int, int]]:
    """An endless stream of (prompt_len, output_len) following the config (`table`: the
    dataset's rows clipped as `clipped_table` clips them, if already loaded)."""
    if cfg.dataset is None:
        pairs: Iterator[tuple[int, int]] = zip(
            int_spec_stream(cfg.prompt_tokens, rng), int_spec_stream(cfg.output_tokens, rng)
        )
    elif cfg.dataset.removeprefix("servegen-") in PMF_DATASETS:
        from servesim.workload.servegen_data import pmf_length_pairs

        pairs = pmf_length_pairs(cfg.dataset.removeprefix("servegen-"), rng)
    else:
        # Rows are sampled whole, keeping each prompt's real output length with it: a block of
        # row indices per numpy call, as `sampling.stream` draws, gathered from the clipped columns.
        block = row_blocks(*(table if table is not None else clipped_table(cfg)), rng)
        return itertools.chain.from_iterable(iter(lambda: zip(*block()), None))
    return _clipped(pairs, cfg.max_prompt_tokens, cfg.max_output_tokens)


def row_blocks(prompts: np.ndarray, outputs: np.ndarray, rng: np.random.Generator) -> Callable[[], tuple[list[int], list[int]]]:
    """The draw behind a dataset's `length_pairs`: each call samples the next BLOCK rows (one
    numpy call of row indices) and gives their prompt and output lengths as two lists. A plain
    workload takes a block per block of arrival times from it (`GeneratedWorkload._plain_arrivals`),
    the same draws as the stream's without a tuple per row."""

    def block() -> tuple[list[int], list[int]]:
        index = rng.integers(0, len(prompts), size=BLOCK)
        return prompts[index].tolist(), outputs[index].tolist()

    return block


def _clipped(pairs: Iterator[tuple[int, int]], max_prompt: int | None, max_output: int | None) -> Iterator[tuple[int, int]]:
    # Zero-length prompts or outputs cannot be served; clamp to 1 token.
    mp = max_prompt or 1 << 62
    mo = max_output or 1 << 62
    for p, o in pairs:
        yield min(max(p, 1), mp), min(max(o, 1), mo)


def clipped_table(cfg: LengthsConfig) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's (prompts, outputs) columns clipped once as `_clipped` clips each pair (at
    least 1, at most max_prompt_tokens / max_output_tokens), not each time a row is drawn."""
    prompts, outputs = read_length_table(cfg.dataset)
    return (np.clip(prompts, 1, cfg.max_prompt_tokens or 1 << 62),
            np.clip(outputs, 1, cfg.max_output_tokens or 1 << 62))


def dataset_table(cfg: LengthsConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """The clipped table of a dataset of rows (`clipped_table`); None without one (fixed or
    uniform lengths, a ServeGen PMF)."""
    if cfg.dataset is not None and cfg.dataset.removeprefix("servegen-") not in PMF_DATASETS:
        return clipped_table(cfg)
    return None


def length_streams(cfg: LengthsConfig, rngs: list[np.random.Generator],
                   table: tuple[np.ndarray, np.ndarray] | None = None) -> list[Iterator[tuple[int, int]]]:
    """For each generator, the endless stream of (prompt_len, output_len); a dataset table is
    read and clipped once for all (a session workload's first turns and follow-ups; `table`:
    `dataset_table`'s, if the caller read it)."""
    if table is None:
        table = dataset_table(cfg)
    return [length_pairs(cfg, rng, table) for rng in rngs]

