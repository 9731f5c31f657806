"""Prompt counting, filler text, prefix hashes and seeded stop points."""

from __future__ import annotations

from servesim.serve.tokens import (FILLER, approx_pieces, block_hashes, chat_tokens, filler, plan_output)


def test_approx_pieces_split_words_numbers_punctuation():
    assert approx_pieces("Hello, world! 12345") == ["Hello", ",", " world", "!", " 123", "45"]
    assert approx_pieces(" internationalization") == [" interna", "tionaliz", "ation"]  # 8 letters a token


def test_filler_is_one_approx_token_per_word():
    words = filler(3, 50)
    assert words[0] == FILLER[3] and len(words) == 50
    assert len(approx_pieces("".join(words))) == 50


def test_block_hashes_chain_and_share_prefixes():
    a = block_hashes(list(range(40)), 16)
    b = block_hashes(list(range(32)) + [99] * 8, 16)
    c = block_hashes([1] + list(range(1, 40)), 16)
    assert len(a) == 2 and a == b  # the partial third block is not hashed
    assert c[0] != a[0] and c[1] != a[1]  # a change in block 0 changes every later hash


def test_chat_tokens_wrap_messages_in_the_template():
    toks = chat_tokens([("system", "Be brief"), ("user", "Hi")], approx_pieces)
    assert len(toks) == 1 + (4 + 2 + 1) + (4 + 1 + 1) + 4


def test_plan_output_rules():
    key = b"request-1"
    eos_n, reason, stop = plan_output(key, 10_000, 0, False, [], 50.0)
    assert reason == "stop" and stop is None and 1 <= eos_n < 10_000
    assert plan_output(key, 10_000, 0, False, [], 50.0) == (eos_n, "stop", None)  # deterministic
    assert plan_output(key, 10_000, 0, True, [], 50.0) == (10_000, "length", None)  # ignore_eos
    assert plan_output(key, eos_n, 0, False, [], 50.0) == (eos_n, "length", None)  # max_tokens cuts first
    assert plan_output(key, 10_000, eos_n + 5, False, [], 50.0) == (eos_n + 5, "stop", None)  # min_tokens
    n, reason, stop = plan_output(key, 10_000, 0, True, ["END"], 50.0)
    assert reason == "stop" and stop == "END" and n != eos_n  # its own draw
    lengths = [plan_output(str(i).encode(), 10**6, 0, False, [], 50.0)[0] for i in range(2000)]
    assert 45 < sum(lengths) / len(lengths) < 55  # geometric with mean 50
