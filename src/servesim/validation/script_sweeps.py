"""What a benchmark script changes in a silicon row's scenario (`Recipe`), and the sweeps the
scripts ran: which (TP, EP, shape, users) points a config covered, so that a row plays a script
only inside it. Shared by the InferenceMAX scripts of every engine (`validation/inferencemax.py`,
`validation/inferencemax_vllm.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from servesim.validation.silicon_file import SiliconRow


@dataclass(frozen=True)
class Recipe:
    """What one benchmark script changes in a row's scenario."""

    engine: dict  # engine-section fields
    scheduler: dict  # scheduler-section fields
    perf: dict = field(default_factory=dict)  # perf-section fields (e.g. the KV cache's precision)
    kernels: str = ""  # the engine whose kernels the script selects (kernel_constants); "" = the row's own
    constants: dict = field(default_factory=dict)  # perf constants the script's flags fix (e.g. no overlap scheduler)


def model_name(row: SiliconRow) -> str:
    """The row's model without its organisation, lower case (`deepseek-ai/DeepSeek-R1` -> `deepseek-r1`)."""
    return row.model.lower().split("/")[-1]


SHAPES = ((1024, 1024), (1024, 8192), (8192, 1024))


def every_shape(fewest: int, most: int, most_8k1k: int | None = None) -> dict:
    return {**{shape: (fewest, most) for shape in SHAPES}, (8192, 1024): (fewest, most_8k1k or most)}


def in_sweep(sweep: dict, row: SiliconRow) -> bool:
    """Whether a config's sweep, (TP, EP) -> {(ISL, OSL): (fewest users, most users)}, ran `row`'s point."""
    users = sweep.get((row.tp, row.moe_ep), {}).get((row.isl, row.osl))
    return bool(users) and users[0] <= row.concurrency <= users[1]
