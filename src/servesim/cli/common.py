"""Helpers shared by CLI commands: one-line errors, and help text generated from a schema."""

from __future__ import annotations

import functools
import sys
import typing
from typing import Any, Callable

import typer
from typer.core import TyperCommand

from servesim.errors import InputError


def fail(message: str) -> typer.Exit:
    """Print `error: message` to stderr and return the exit to raise (code 2)."""
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def warn(message: str) -> None:
    """Print `warning: message` to stderr: the run completed, but probably not as meant."""
    print(f"warning: {message}", file=sys.stderr)


def user_errors(fn: Callable) -> Callable:
    """Turn InputError into one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            raise fail(str(e)) from None

    return wrapper


def lazy_help(build: Callable[[], str]) -> type[TyperCommand]:
    """A command class whose long help is `build()`, called only when that help is shown.

    The scenario-key listings of `run` and `serve` need the whole schema and every policy
    imported; building them at registration made every `servesim ...` start-up pay for that.
    Pass the first paragraph as `help=` so `servesim --help` still lists the command.
    """

    class LazyHelpCommand(TyperCommand):
        def format_help(self, ctx: Any, formatter: Any) -> None:
            self.help = build()
            return super().format_help(ctx, formatter)

    return LazyHelpCommand


def _model_in(ann: Any) -> type | None:
    """The pydantic model behind `Model` or `Model | None`, else None."""
    from pydantic import BaseModel

    for a in (ann, *typing.get_args(ann)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _type_name(ann: Any) -> str:
    args = typing.get_args(ann)
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # (a tuple of any length)
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        return f"[{', '.join(_type_name(a) for a in args)}]"
    if origin in (dict, list):
        return f"{origin.__name__} of {' to '.join(_type_name(a) for a in args)}"
    if args:
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    return getattr(ann, "__name__", str(ann))


def schema_help(model: type, prefix: str = "") -> list[str]:
    """One line per scenario key: `key  (type, default) docstring`, nested sections flattened."""
    from pydantic import BaseModel
    from rich.markup import escape

    from servesim.config_docs import field_doc

    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        key = f"{prefix}{name}"
        sub = _model_in(ann)
        default = field.get_default(call_default_factory=True)
        if sub is not None and (default is None or isinstance(default, BaseModel)):  # (not `Model | str = "name"`)
            lines.extend(schema_help(sub, key + "."))
            continue
        doc = field_doc(model, name).replace("\n", " ")
        # Typer renders help with Rich, which would swallow `[low, high]` as a markup tag
        lines.append(escape(f"{key} ({_type_name(ann)}, default {default!r}): {doc}"))
    return lines
