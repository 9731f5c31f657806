"""`servesim catalog autoscalers`: every registered autoscaler with its parameters, summary
and reference decision interval."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from servesim.cli import app


def test_catalog_autoscalers_lists_each_with_reference_defaults() -> None:
    out = CliRunner().invoke(app, ["catalog", "autoscalers", "--json"])
    assert out.exit_code == 0, out.output
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert sorted(rows) == ["aibrix-apa", "dynamo-planner", "forecast", "hpa", "kpa", "llm-d-wva", "llumnix"]
    assert rows["kpa"]["interval_s"] == 2.0 and rows["hpa"]["interval_s"] == 15.0
    assert rows["dynamo-planner"]["interval_s"] == 180.0 and rows["llumnix"]["interval_s"] == 10.0
    assert rows["llm-d-wva"]["parameters"] == ("kv_cache_threshold=0.8, queue_length_threshold=5.0, "
                                               "kv_spare_trigger=0.1, queue_spare_trigger=3.0")
    assert rows["kpa"]["description"].startswith("Knative Pod Autoscaler")
