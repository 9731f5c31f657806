"""Prompt tokens, output filler text and where an emulated generation stops.

Prompts are counted with tiktoken's cl100k_base when it can be loaded (a real byte-level BPE,
close to Llama 3's), otherwise with `approx_pieces`: GPT-style pre-tokenization (a word with
its leading space, up to 3 digits, a punctuation run, a whitespace run), words longer than
`APPROX_WORD_CHARS` letters counted as one token per started chunk of that many letters. Chat
messages are wrapped as Llama 3's chat template does (see `chat_tokens`). The token sequence
also gives the prompt's chained block hashes, so requests sharing a prefix hit the simulated
prefix cache exactly as they would hit vLLM's.

Output text is filler: one short common word per token (each is one token for both counters),
deterministic. Where a generation ends is deterministic too (`plan_output`).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Callable, Sequence

APPROX_WORD_CHARS = 8  # letters per token for long words (English averages ~4 characters a token)
_PIECE = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+")
FILLER = (" the", " of", " and", " to", " in", " is", " that", " for", " it", " as", " with",
          " on", " was", " be", " at", " by", " this", " from", " or", " an")
# Llama 3 chat template: <|begin_of_text|>, then per message <|start_header_id|> role
# <|end_header_id|> "\n\n" content <|eot_id|>, then the assistant header (generation prompt).
BOS, HEADER, HEADER_END, BLANK, EOT = "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "\n\n", "<|eot_id|>"

Encoder = Callable[[str], list]


def approx_pieces(text: str) -> list[str]:
    """The approximate tokenization of `text` (a list of token strings)."""
    out: list[str] = []
    for piece in _PIECE.findall(text):
        n = len(piece.lstrip(" "))
        if n <= APPROX_WORD_CHARS or not piece.strip().isalpha():
            out.append(piece)
        else:
            out.extend(piece[i:i + APPROX_WORD_CHARS] for i in range(0, len(piece), APPROX_WORD_CHARS))
    return out


def load_encoder(kind: str) -> tuple[str, Encoder]:
    """(name, encode function) for `auto`, `tiktoken` or `approx`."""
    if kind != "approx":
        try:
            import tiktoken

            enc = tiktoken.get_encoding("cl100k_base")
            return "tiktoken:cl100k_base", enc.encode_ordinary
        except Exception as e:  # not installed, or its vocabulary file cannot be fetched
            if kind == "tiktoken":
                from servesim.errors import InputError

                raise InputError(f"tokenizer tiktoken is unavailable ({type(e).__name__}: {e}); "
                                 "allowed: auto, tiktoken, approx") from None
    return "approx", approx_pieces


def chat_tokens(messages: Sequence[tuple[str, str]], encode: Encoder) -> list:
    """Tokens of a chat prompt: Llama 3's template around each (role, content) message, and
    the assistant header that asks for the reply."""
    toks: list = [BOS]
    for role, content in messages:
        toks += [HEADER, role, HEADER_END, BLANK]
        toks += encode(content)
        toks.append(EOT)
    return toks + [HEADER, "assistant", HEADER_END, BLANK]


def block_hashes(tokens: Sequence, block_tokens: int) -> tuple[int, ...]:
    """Chained hashes of the prompt's full blocks: entry k identifies tokens [0, (k+1)*block)."""
    out = []
    h = b""
    for k in range(len(tokens) // block_tokens):
        block = "\x00".join(map(str, tokens[k * block_tokens:(k + 1) * block_tokens]))
        h = hashlib.blake2b(h + block.encode(), digest_size=8).digest()
        out.append(int.from_bytes(h, "big") >> 1)  # non-negative 63-bit ints
    return tuple(out)


def filler(start: int, count: int) -> list[str]:
    """`count` filler tokens, the first being FILLER[start % len]."""
    n = len(FILLER)
    return [FILLER[(start + i) % n] for i in range(count)]


def _stop_after(key: bytes, kind: str, mean_tokens: float) -> int:
    """Tokens a model would generate before stopping by itself: a geometric draw with this
    mean (a constant chance per token), made from a hash so that it is random-free."""
    digest = hashlib.blake2b(kind.encode() + b"\x00" + key, digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2**64  # uniform in (0, 1)
    p = 1.0 / mean_tokens
    return 1 if p >= 1 else 1 + int(math.log(u) / math.log1p(-p))


def plan_output(key: bytes, max_tokens: int, min_tokens: int, ignore_eos: bool, stop: Sequence[str],
                mean_tokens: float) -> tuple[int, str, str | None]:
    """(tokens to generate, finish_reason, stop_reason) of one request.

    The end-of-sequence token comes after a seeded number of tokens unless `ignore_eos`; a
    `stop` string after another one (stop_reason = the first stop string); `min_tokens`
    suppresses both before it (as vLLM does); `max_tokens` cuts everything ("length").
    `key` identifies the request's content and seed, so the same request stops at the same place.
    """
    natural = []
    if not ignore_eos:
        natural.append((_stop_after(key, "eos", mean_tokens), None))
    if stop:
        natural.append((_stop_after(key, "stop", mean_tokens), stop[0]))
    if natural:
        n, reason = min(natural, key=lambda x: x[0])
        n = max(n, min_tokens, 1)
        if n < max_tokens:
            return n, "stop", reason
    return max_tokens, "length", None
