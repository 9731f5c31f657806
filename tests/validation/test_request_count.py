"""The request count a measured mean was taken over, read from its decimals (validation/request_count.py)."""

from __future__ import annotations

import csv


from servesim.validation.request_count import campaign_rounds, rounds_read, whole_ns
from tests.validation.silicon_rows import BASE, SILICON


def mean_ms(total_ns: int, n: int) -> str:
    """The file's text for the mean of n requests whose times add up to total_ns."""
    return repr(total_ns / n / 1e6)


def test_a_mean_is_whole_nanoseconds_only_times_its_count():
    # 7 users x 20 rounds; 41,234,567,891 ns is not divisible by 7, so no count without the 7 fits
    text = mean_ms(41_234_567_891, 140)
    assert whole_ns(text, 140) and whole_ns(text, 280)
    assert not whole_ns(text, 20) and not whole_ns(text, 139) and not whole_ns(text, 141)


def test_rounds_per_user_allow_lost_requests_and_skip_rounded_means():
    text = mean_ms(41_234_567_891, 7 * 20 - 2)  # two of the 140 requests lost
    assert 20 in rounds_read(text, 7)
    assert 10 not in rounds_read(text, 7) and 5 not in rounds_read(text, 7)
    assert rounds_read("190.954507", 8) == frozenset()  # six decimals: every count would pass


def test_campaign_takes_the_count_most_rows_allow(tmp_path):
    path = tmp_path / "rows.csv"
    rows = [
        # 8 and 16 users x 20 rounds; one sum also divides by 10, so that row allows 10 rounds too
        ("a", "8", mean_ms(30_552_721_101, 160)),
        ("b", "8", mean_ms(30_552_721_110, 160)),  # divisible by 10: allows 10 (and 20)
        ("c", "16", mean_ms(46_072_295_611, 320)),
        ("d", "4", "12.5"),  # a rounded mean: read as nothing, counted among the campaign's rows
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(BASE))
        writer.writeheader()
        for rid, users, text in rows:
            writer.writerow({**BASE, "id": rid, "concurrency": users, "silicon_ttft_ms": text})
    assert campaign_rounds(path) == {("vllm", "h100_sxm", "0.18.0"): (20, 3, 4)}


def test_the_measured_file_records_twenty_requests_per_user_in_two_tensorrt_llm_campaigns():
    read = campaign_rounds(SILICON)
    # AIConfigurator's benchmark script (bench_run.sh.j2: BENCH_MULTI_ROUND 20 per user)
    rounds, agreeing, total = read[("trtllm", "h100_sxm", "1.0.0rc3")]
    assert (rounds, total) == (20, 177) and agreeing >= 120
    assert read[("trtllm", "gb200", "1.3.0rc1")][0] == 20
    # the other campaigns' means were not taken over whole nanoseconds: none is read
    assert set(read) == {("trtllm", "h100_sxm", "1.0.0rc3"), ("trtllm", "gb200", "1.3.0rc1")}


def test_campaigns_whose_means_record_their_count_play_it():
    from servesim.validation.silicon import RECORDED_ROUNDS, ClientOptions, parse_row, row_request_counts

    assert RECORDED_ROUNDS == {("trtllm", "h100_sxm", "1.0.0rc3"): 20}
    h100 = parse_row({**BASE, "backend": "trtllm", "backend_version": "1.0.0rc3", "system": "h100_sxm",
                      "model_path": "meta-llama/Llama-3.1-8B-Instruct", "concurrency": "16", "batch_size": "16"})
    counts = row_request_counts(h100, ClientOptions())
    assert (counts.warmup, counts.measured, counts.trailing) == (0, 320, 0)  # 20 per user, as the script sent
    other = row_request_counts(parse_row({**BASE, "concurrency": "16", "batch_size": "16"}), ClientOptions())
    assert (other.measured, other.trailing) == (64, 16)  # 4 per user and a trailing round
    off = row_request_counts(h100, ClientOptions(recorded_rounds=False))
    assert (off.measured, off.trailing) == (64, 16)
