"""OpenAI request bodies, checked as vLLM checks them, turned into what the simulation needs.

Only the fields that change timing or the response's shape are interpreted; the rest
(temperature, top_p, logit_bias...) are accepted and ignored, as they change neither the
simulated engine's work nor the filler text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from servesim.serve.errors import APIError, context_length_error
from servesim.serve.tokens import BOS, Encoder, chat_tokens, plan_output


class StreamOptions(BaseModel):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = 1
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    priority: int = 0  # vLLM's extra parameter: lower is served first by priority schedulers


class CompletionBody(_Common):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16  # vLLM's (and OpenAI's) default for /v1/completions


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_Common):
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


@dataclass(frozen=True)
class Job:
    """One request, ready for the driver and the response writer."""

    kind: Literal["completion", "chat"]
    tokens: list  # the prompt's tokens (ids or strings, depending on the tokenizer)
    output_len: int
    max_tokens: int
    finish_reason: str  # of the whole generation: stop | length
    stop_reason: str | None
    stream: bool
    include_usage: bool
    priority: int = 0
    continuous_usage: bool = False  # usage in every chunk (vLLM's stream_options.continuous_usage_stats)


def parse(kind: str, raw: bytes, encode: Encoder, max_model_len: int, served_name: str, eos_mean: float,
          seed: int = 0) -> Job:
    """Validate a body and decide the request's lengths; APIError (vLLM's status and message)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(f"Invalid JSON body: {e}") from None
    if not isinstance(data, dict):
        raise APIError("The request body must be a JSON object")
    try:
        body = (ChatBody if kind == "chat" else CompletionBody).model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise APIError(f"{where}: {first['msg']} (got {json.dumps(first.get('input'))[:80]})",
                       param=str(first["loc"][0])) from None
    if body.model is not None and body.model != served_name:
        raise APIError(f"The model `{body.model}` does not exist.", status=404, param="model")
    if body.n != 1:
        raise APIError(f"n={body.n} is not supported: servesim serve generates one choice per request (n=1)",
                       param="n")
    tokens = _prompt_tokens(body, encode) if kind == "completion" else chat_tokens(_messages(body), encode)
    max_tokens = body.max_tokens if kind == "completion" else (body.max_completion_tokens or body.max_tokens)
    max_tokens = _check_lengths(len(tokens), max_tokens, body.min_tokens, max_model_len)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    key = hashlib.blake2b(raw + f"\x00{seed}".encode()).digest()  # the body (with its own seed) and the server's
    n, finish, stop_reason = plan_output(key, max_tokens, body.min_tokens, body.ignore_eos, stop, eos_mean)
    opts = body.stream_options
    return Job(kind, tokens, n, max_tokens, finish, stop_reason, bool(body.stream),
               bool(body.stream and opts and opts.include_usage), body.priority,
               bool(body.stream and opts and opts.include_usage and opts.continuous_usage_stats))


def _check_lengths(prompt_len: int, max_tokens: int | None, min_tokens: int, max_model_len: int) -> int:
    if max_tokens is not None and max_tokens < 1:
        raise APIError(f"max_tokens must be at least 1, got {max_tokens}.", param="max_tokens")
    if min_tokens < 0:
        raise APIError(f"min_tokens must be greater than or equal to 0, got {min_tokens}.", param="min_tokens")
    if prompt_len >= max_model_len or (max_tokens is not None and prompt_len + max_tokens > max_model_len):
        raise context_length_error(max_model_len, prompt_len, max_tokens)
    max_tokens = max_tokens if max_tokens is not None else max_model_len - prompt_len  # vLLM: the rest
    if min_tokens > max_tokens:
        raise APIError(f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.",
                       param="min_tokens")
    return max_tokens


def _prompt_tokens(body: CompletionBody, encode: Encoder) -> list:
    prompt = body.prompt
    if isinstance(prompt, str):
        return [BOS] + encode(prompt)  # the tokenizer adds <|begin_of_text|> (add_special_tokens)
    if prompt and all(isinstance(p, int) for p in prompt):
        return list(prompt)  # token ids, used as given
    if len(prompt) == 1:
        return _prompt_tokens(body.model_copy(update={"prompt": prompt[0]}), encode)
    raise APIError(f"a list of {len(prompt)} prompts is not supported: send one prompt per request",
                   param="prompt")


def _messages(body: ChatBody) -> list[tuple[str, str]]:
    out = []
    for m in body.messages:
        content = m.content
        if isinstance(content, list):  # content parts: the text parts count
            content = "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
        out.append((m.role, content or ""))
    return out
