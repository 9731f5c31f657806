"""Rows without a version take the release the file records for the same deployment config (`_cfg<N>`)."""

from __future__ import annotations

from servesim.validation.silicon_file import recover_versions

from tests.validation.silicon_rows import silicon_row


def _row(name: str, version: str, **changes: str):
    r = silicon_row(0, **{"backend": "trtllm", "system": "b200_sxm", "backend_version": version, **changes})
    return type(r)(**{**r.__dict__, "id": name})


def test_an_empty_version_takes_the_one_release_of_its_config():
    rows = [_row("a_c4_cfg91", "1.2.0rc6.post2"), _row("a_c64_cfg91", ""), _row("b_c8_cfg7", "")]
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
    rows = [_row("2026_04_06_deepseek_r1_b200_sxm_trtllm_fp4_agg_1024x1024_c8_tp8_ep1_36", ""),
            _row("z_c4_cfg1", "1.2.0rc6.post2")]
    assert recover_versions(rows)[0].version == ""
