"""Config field docs are read from the attribute docstrings when asked (servesim/config_docs.py),
not by pydantic as each class is built."""

import subprocess
import sys

from pydantic import BaseModel, Field

from servesim.config_docs import attribute_docs, field_doc
from servesim.workload.config_source import LengthsConfig


class _Base(BaseModel):
    inherited: int = 1
    """Declared on the base.

    Second paragraph."""


class _Child(_Base):
    own: str = "x"
    """Declared here."""
    explicit: int = Field(0, description="From Field.")
    """Not this one."""
    undocumented: int = 0
    after_a_comment: int = 0
    # a comment is not a docstring, the next statement is not one either
    x: int = 0


def test_docstrings_of_a_model_its_bases_and_explicit_descriptions():
    assert field_doc(_Child, "own") == "Declared here."
    assert field_doc(_Child, "inherited") == "Declared on the base.\n\nSecond paragraph."
    assert field_doc(_Child, "explicit") == "From Field."
    assert field_doc(_Child, "undocumented") == "" and field_doc(_Child, "after_a_comment") == ""
    assert attribute_docs(_Base) == {"inherited": "Declared on the base.\n\nSecond paragraph."}


def test_a_shipped_config_field_and_pydantic_left_descriptions_unset():
    assert field_doc(LengthsConfig, "output_tokens") == "Without dataset: fixed output length, or [low, high] uniform."
    assert LengthsConfig.model_fields["output_tokens"].description is None  # (not read at import)


def test_importing_the_configs_reads_no_source():
    # pydantic's docstring reading goes through inspect.getsource / findsource; none at import
    code = ("import inspect, sys; calls = []; real = inspect.findsource; "
            "inspect.findsource = lambda *a: calls.append(a) or real(*a); "
            "import servesim.scenario, servesim.simulation; print(len(calls))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0"]
