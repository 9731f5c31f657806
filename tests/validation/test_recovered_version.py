"""Rows without a version take the release the file records for the same deployment config (`_cfg<N>`),
then the release of their twins (the same measurement under another id)."""

from __future__ import annotations

import csv


from servesim.validation.silicon_file import CONFIG_ID, open_measured, read_rows, recover_versions, twin_versions

from tests.validation.silicon_rows import SILICON, silicon_row


def _row(name: str, version: str, **changes: str):
    r = silicon_row(0, **{"backend": "trtllm", "system": "b200_sxm", "backend_version": version, **changes})
    return type(r)(**{**r.__dict__, "id": name})


def test_an_empty_version_takes_the_one_release_of_its_config():
    rows = [_row("a_c4_cfg91", "1.2.0rc6.post2"), _row("a_c64_cfg91", ""), _row("b_c8_cfg7", "", silicon_ttft_ms="21")]
    out = recover_versions(rows)
    assert [r.version for r in out] == ["1.2.0rc6.post2", "1.2.0rc6.post2", ""]
    assert out[1].id == "a_c64_cfg91" and out[1].ttft_s == rows[1].ttft_s  # nothing else changes


def test_other_engines_systems_or_several_releases_leave_it_empty():
    rows = [_row("a_c4_cfg5", "1.2.0rc6.post2"), _row("a_c8_cfg5", "1.2.0rc6.post3"), _row("a_c64_cfg5", ""),
            _row("x_c4_cfg6", "1.2.0rc6.post2", system="h200_sxm"), _row("x_c64_cfg6", ""),
            _row("y_c4_cfg8", "0.5.9", backend="sglang"), _row("y_c64_cfg8", "")]
    assert [r.version for r in recover_versions(rows)] == [
        "1.2.0rc6.post2", "1.2.0rc6.post3", "", "1.2.0rc6.post2", "", "0.5.9", ""]


def test_rows_without_a_config_id_are_untouched():
    rows = [_row("2026_04_06_deepseek_r1_b200_sxm_trtllm_fp4_agg_1024x1024_c8_tp8_ep1_36", "", silicon_ttft_ms="21"),
            _row("z_c4_cfg1", "1.2.0rc6.post2")]
    assert recover_versions(rows)[0].version == ""


def test_a_twin_gives_its_release_to_a_row_without_one():
    twin = _row("2026_04_06_deepseek_r1_b200_sxm_trtllm_fp4_agg_1024x1024_c64_tp8_ep1_61", "",
                model_path="deepseek-ai/DeepSeek-R1")
    rows = [_row("dsr1_b200_trtllm_fp4_agg_1024x1024_c64_cfg91", "", model_path="deepseek-ai/DeepSeek-V3"),
            _row("dsr1_b200_trtllm_fp4_agg_1024x1024_c4_cfg91", "1.2.0rc6.post2", silicon_ttft_ms="99"), twin]
    out = recover_versions(rows)  # the config's release first, then the twin takes it from the recovered row
    assert [r.version for r in out] == ["1.2.0rc6.post2"] * 3
    assert out[2].model == "deepseek-ai/DeepSeek-R1" and out[2].id == twin.id  # only the version changes


def test_a_near_twin_another_engine_system_or_two_releases_give_nothing():
    base = _row("a", "1.2.0rc6.post2")
    others = [_row("b", "", silicon_tpot_ms="10.000001"), _row("c", "", concurrency="4"),
              _row("d", "", system="h200_sxm"), _row("e", "", backend="sglang"), _row("f", "", mode="disagg")]
    assert [r.version for r in twin_versions([base, *others])] == ["1.2.0rc6.post2"] + [""] * 5
    assert twin_versions([base, _row("g", "1.2.0rc6.post3"), _row("h", "")])[2].version == ""


def test_the_measured_file_gives_18_trtllm_b200_rows_their_twins_release():
    with open_measured(SILICON) as f:
        recorded = {r["id"]: r["backend_version"] for r in csv.DictReader(f)}
    by_twin = [r for r in read_rows(SILICON) if r.version != recorded[r.id] and not CONFIG_ID.search(r.id)]
    assert len(by_twin) == 18 and {r.version for r in by_twin} == {"1.2.0rc6.post2"}
    assert all(r.id.startswith("2026_04_06_deepseek_r1_b200_sxm_trtllm_") and recorded[r.id] == "" for r in by_twin)


def test_a_dated_build_plays_as_the_release_tag_its_twins_record():
    tag = _row("2026_03_25_qwen3_5_397b_b200_sxm_sglang_bf16_agg_1024x1024_c4", "nightly-dev", backend="sglang")
    build = _row("qwen3_5_b200_sglang_bf16_agg_1024x1024_c4_cfg587", "nightly-dev-20260216-d3bae71e", backend="sglang")
    out = twin_versions([tag, build])
    assert [r.version for r in out] == ["nightly-dev", "nightly-dev"]
    assert out[0].version_recorded and not out[1].version_recorded and out[1].id == build.id
    # a build of another tag, or a near twin (TPOT one digit off), keeps the release it records
    other = _row("o_cfg9", "0.5.9-20260216-d3bae71e", backend="sglang")
    near = _row("n_cfg9", "nightly-dev-20260216-d3bae71e", backend="sglang", silicon_tpot_ms="10.000001")
    assert [r.version for r in twin_versions([tag, other, near])][1:] == [other.version, near.version]


def test_the_measured_file_plays_the_15_dated_sglang_nightly_rows_as_nightly_dev():
    with open_measured(SILICON) as f:
        recorded = {r["id"]: r["backend_version"] for r in csv.DictReader(f)}
    moved = [r for r in read_rows(SILICON) if recorded[r.id] and r.version != recorded[r.id]]
    assert len(moved) == 15 and {(r.backend, r.system, r.version) for r in moved} == {("sglang", "b200_sxm", "nightly-dev")}
    assert {recorded[r.id] for r in moved} == {"nightly-dev-20260216-d3bae71e"} and all(r.id.endswith("_cfg587") for r in moved)
