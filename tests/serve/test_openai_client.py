"""The official openai client against the server, streaming and not; auth; models."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")

KEY = "sk-test"


def client(url: str, key: str = KEY):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_completion_non_streaming(server):
    out = client(server).completions.create(model="llama-3.1-8b", prompt="The capital of France is",
                                            max_tokens=7, extra_body={"ignore_eos": True})
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 7
    assert out.usage.prompt_tokens == 6  # <|begin_of_text|> + 5 approx tokens
    assert out.choices[0].text == " the of and to in is that"  # filler: one word a token


def test_chat_streaming_sends_role_with_first_token_and_usage_last(server):
    stream = client(server).chat.completions.create(
        model="llama-3.1-8b", messages=[{"role": "user", "content": "Hello there"}], max_completion_tokens=5,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
    assert len(contents) == 5 and all(contents)
    assert [c.choices[0].finish_reason for c in chunks[1:] if c.choices] == [None] * 4 + ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 1 + 4 + 2 + 1 + 4  # BOS, user header, 2 tokens, EOT, assistant header


def test_stop_ends_early_at_a_seeded_point(server):
    c = client(server)
    kw = dict(model="llama-3.1-8b", prompt="Count to a thousand", max_tokens=2000, stop=["\n"],
              extra_body={"ignore_eos": True})
    a, b = c.completions.create(**kw), c.completions.create(**kw)
    assert a.choices[0].finish_reason == "stop" and a.choices[0].stop_reason == "\n"
    assert 1 <= a.usage.completion_tokens < 2000
    assert a.usage.completion_tokens == b.usage.completion_tokens  # same request, same stop point


def test_min_tokens_holds_back_eos(server):
    out = client(server).completions.create(model="llama-3.1-8b", prompt="Hi", max_tokens=300,
                                            extra_body={"min_tokens": 300})
    assert out.usage.completion_tokens == 300 and out.choices[0].finish_reason == "length"


def test_models_lists_the_served_model(server):
    models = client(server).models.list().data
    assert [m.id for m in models] == ["llama-3.1-8b"]


def test_unknown_model_and_n_are_refused(server):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(server).completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="n=2"):
        client(server).completions.create(model="llama-3.1-8b", prompt="x", max_tokens=2, n=2)


def test_wrong_api_key_gets_401(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, "sk-wrong").models.list()


def test_continuous_usage_stats_put_usage_in_every_chunk(server):
    stream = client(server).completions.create(
        model="llama-3.1-8b", prompt="x", max_tokens=4, stream=True, extra_body={"ignore_eos": True},
        stream_options={"include_usage": True, "continuous_usage_stats": True})
    chunks = list(stream)
    assert [c.usage.completion_tokens for c in chunks] == [1, 2, 3, 4, 4]  # the last: the usage chunk
