"""Shared pieces of the workload config models."""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict

# A token count: one number (fixed) or [low, high] (uniform integer, both ends included).
IntSpec = Union[int, tuple[int, int]]


def check_int_spec(name: str, value: IntSpec | None, minimum: int) -> None:
    """Raise ValueError unless value is an int >= minimum or an ordered [low, high] pair."""
    if value is None:
        return
    low, high = (value, value) if isinstance(value, int) else value
    if low < minimum or high < low:
        raise ValueError(
            f"{name} must be an integer >= {minimum} or [low, high] with {minimum} <= low <= high, "
            f"got {value!r}"
        )


class Strict(BaseModel):
    """Base of every workload config model: unknown keys are errors, fields carry docstrings
    (read by servesim.config_docs.field_doc)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
