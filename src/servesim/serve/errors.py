"""Errors as vLLM's OpenAI server returns them: a status code and an OpenAI error body."""

from __future__ import annotations

from http import HTTPStatus


class APIError(Exception):
    """A request the server refuses; `body()` is what vLLM sends for the same problem."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param

    @property
    def type(self) -> str:
        # vLLM names the error type after the HTTP status (BadRequestError, NotFoundError...)
        return {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError",
                500: "InternalServerError"}.get(self.status, HTTPStatus(self.status).phrase.replace(" ", "") + "Error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}}


def context_length_error(max_model_len: int, prompt_tokens: int, max_tokens: int | None) -> APIError:
    """vLLM's message when the prompt, or prompt plus max_tokens, exceeds max_model_len."""
    if max_tokens is None or prompt_tokens >= max_model_len:
        return APIError(f"This model's maximum context length is {max_model_len} tokens. However, your "
                        f"request has {prompt_tokens} input tokens. Please reduce the length of the input messages.")
    return APIError(f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum "
                    f"context length is {max_model_len} tokens and your request has {prompt_tokens} input tokens "
                    f"({max_tokens} > {max_model_len} - {prompt_tokens}).", param="max_tokens")
