"""GPU time per sequence fit (validation/batch.py): which rows it fits, and that it recovers the
value the measurements were made with."""

from __future__ import annotations

from servesim.validation.batch import batched_rows, fit_seq_gpu
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions

from tests.validation.silicon_rows import silicon_row as row


def test_batched_rows_are_the_even_rows_above_the_user_threshold():
    rows = [row(i, concurrency=str(4 + 2 * i), batch_size=str(4 + 2 * i)) for i in range(8)]  # users 4, 6, ..., 18
    groups = batched_rows(rows, ("vllm",), min_users=8)
    # even positions with more than 8 users: r4 (12 users), r6 (16); odd r3, r5, r7 are held out
    assert [r.id for r in groups[("vllm", "h100_sxm")]] == ["r4", "r6"]
    assert [r.id for r in batched_rows(rows, ("vllm",), min_users=8, parity=1)[("vllm", "h100_sxm")]] == ["r3", "r5", "r7"]
    assert batched_rows(rows, ("sglang",)) == {}


def test_fit_recovers_the_gpu_time_per_sequence_of_the_measurements():
    # measurements made by servesim itself with 30 us per sequence: the fit finds 30 us and ships it
    options = ClientOptions(min_requests=4, requests_per_user=1)
    users = (16, 32, 48, 64)
    rows = [row(2 * i, concurrency=str(u), batch_size=str(u), osl="16") for i, u in enumerate(users)]
    measured = []
    for r in rows:
        sim = simulate_row(r, options, overrides={"seq_gpu_s": 30e-6})
        measured.append(row(int(r.id[1:]), concurrency=str(r.concurrency), batch_size=str(r.batch_size), osl="16",
                            silicon_ttft_ms=str(sim.ttft_s * 1e3), silicon_tpot_ms=str(sim.tpot_s * 1e3)))
    # odd filler rows (held out) so the measured rows sit at even positions
    interleaved = [x for m in measured for x in (m, row(99))]
    entries = fit_seq_gpu(interleaved, ("vllm",), options, min_fit_rows=4)
    assert len(entries) == 1
    assert entries[0].match == {"gpu": "h100-sxm", "engine": "vllm"}
    assert entries[0].values == {"seq_gpu_s": 30e-6}
    # without the term the same fit keeps it off: rows measured with 0 fit 0 and give no entry (0 set explicitly:
    # the rows' release, 0.18.0, ships a GPU time per sequence of its own)
    plain = [row(int(r.id[1:]), concurrency=str(r.concurrency), batch_size=str(r.batch_size), osl="16",
                 silicon_ttft_ms=str(s.ttft_s * 1e3), silicon_tpot_ms=str(s.tpot_s * 1e3))
             for r, s in ((r, simulate_row(r, options, overrides={"seq_gpu_s": 0.0})) for r in rows)]
    assert fit_seq_gpu([x for m in plain for x in (m, row(99))], ("vllm",), options, min_fit_rows=4) == []
