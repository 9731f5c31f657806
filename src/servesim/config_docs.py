"""The docs of configuration fields, read from their attribute docstrings when asked.

Every config field is documented by the string literal under it (DESIGN.md). pydantic's
`use_attribute_docstrings` copies those into `FieldInfo.description` as each class is built, by
walking the interpreter's stack and re-reading the class's source: about 70 ms of every process
that imports the configs (a sixth of a small `servesim run`'s start-up), for text that only
`--help` shows. The models leave it off; `field_doc` reads a module's docstrings from its
source the first time a field of it is asked for (one parse per module).
"""

from __future__ import annotations

import ast
import inspect
import sys
from functools import lru_cache


@lru_cache(maxsize=None)  # (derived from source code, which does not change within a process)
def _module_docs(module_name: str) -> dict[str, dict[str, str]]:
    """Class qualified name -> {attribute: docstring} for every class of a module."""
    try:
        tree = ast.parse(inspect.getsource(sys.modules[module_name]))
    except (KeyError, OSError, TypeError):  # (no source: a frozen or compiled-only module)
        return {}
    out: dict[str, dict[str, str]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                out[prefix + node.name] = _attribute_docs(node.body)
                visit(node.body, prefix + node.name + ".")

    visit(tree.body, "")
    return out


def _attribute_docs(body: list[ast.stmt]) -> dict[str, str]:
    """A string literal right after an annotated assignment documents it (as pydantic reads it)."""
    docs = {}
    for prev, stmt in zip(body, body[1:]):
        if (isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name) and isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
            docs[prev.target.id] = inspect.cleandoc(stmt.value.value)
    return docs


def attribute_docs(cls: type) -> dict[str, str]:
    """{attribute: docstring} of the attributes `cls` itself declares."""
    return _module_docs(cls.__module__).get(cls.__qualname__, {})


def field_doc(model: type, name: str) -> str:
    """The doc of field `name` of a pydantic model: its `Field(description=...)`, else the
    docstring under it in the first class of the model's MRO that declares it ("" if none)."""
    field = model.model_fields[name]
    if field.description:
        return field.description
    for cls in model.__mro__:
        if name in vars(cls).get("__annotations__", {}):
            return attribute_docs(cls).get(name, "")
    return ""
