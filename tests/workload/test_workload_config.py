import pytest
from pydantic import ValidationError

from servesim.config_docs import field_doc
from servesim.workload.config import ArrivalConfig, WorkloadConfig


def all_models(model, seen=None):
    seen = seen if seen is not None else set()
    if model in seen:
        return seen
    seen.add(model)
    for f in model.model_fields.values():
        for arg in getattr(f.annotation, "__args__", ()) + (f.annotation,):
            if isinstance(arg, type) and hasattr(arg, "model_fields"):
                all_models(arg, seen)
            for sub in getattr(arg, "__args__", ()):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    all_models(sub, seen)
    return seen


def test_every_field_has_a_default_and_a_docstring():
    models = all_models(WorkloadConfig)
    assert len(models) >= 10
    for model in models:
        model()  # every field has a default
        for name, f in model.model_fields.items():
            assert field_doc(model, name), f"{model.__name__}.{name} has no docstring"


def test_short_forms():
    cfg = WorkloadConfig.model_validate({"trace": "azure-conv"})
    assert cfg.trace is not None and cfg.trace.name == "azure-conv" and cfg.trace.speedup == 1
    cfg = WorkloadConfig.model_validate({"lengths": {"prompt_tokens": [10, 20], "output_tokens": 5}})
    assert cfg.lengths.prompt_tokens == (10, 20)


def test_generated_default_limit_is_1000_requests():
    assert WorkloadConfig().request_limit == 1000
    assert WorkloadConfig(duration_s=10).request_limit is None
    assert WorkloadConfig.model_validate({"trace": "azure-conv"}).request_limit is None


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"arrival": {"rate_per_s": -1}}, ["rate_per_s", "-1"]),
        ({"arrival": {"process": "poisson", "cv": 3}}, ["arrival.cv", "poisson"]),
        ({"arrival": {"process": "zipf"}}, ["process", "zipf"]),
        ({"lengths": {"prompt_tokens": [9, 3]}}, ["lengths.prompt_tokens", "(9, 3)"]),
        ({"trace": "azure-conv", "arrival": {"rate_per_s": 3}}, ["workload.arrival"]),
        ({"trace": {"name": "azure-conv", "speedup": 0}}, ["speedup"]),
        ({"num_requests": 0}, ["num_requests"]),
        ({"bogus": 1}, ["bogus"]),
        ({"programs": {"calls": [{"parents": [0]}]}}, ["parents"]),
        ({"sessions": {}, "programs": {}}, ["exclusive"]),
        ({"arrival": {"curve": {"kind": "piecewise", "points": [[5, 1]]}}}, ["time 0"]),
        ({"attributes": {"tenants": {"a": -1}}}, ["tenants"]),
        ({"arrival": {"curve": {"kind": "piecewise", "points": [[0, 1], [60, 2]], "period_s": 30}}}, ["period_s", "30"]),
    ],
)
def test_bad_values_are_named(bad, words):
    with pytest.raises(ValidationError) as info:
        WorkloadConfig.model_validate(bad)
    for w in words:
        assert w in str(info.value)


def test_arrival_fields_listed_per_process():
    assert ArrivalConfig(process="gamma", cv=4).cv == 4
