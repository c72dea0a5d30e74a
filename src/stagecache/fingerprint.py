"""A stage's code fingerprint: its build function's source and, transitively, the source of every
function and class it calls and the value of every constant it reads, within the packages named.

Editing a stage function (or a step it calls) moves that stage's key, and through the parent keys
its descendants', and no other stage's: no hand-kept recipe number to bump. What is not seen:
methods reached through a variable (`args.expand(...)`), since the variable's type is not
followed; keep such methods free of what changes a stage's result, or call them as functions."""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import textwrap
import types
from collections.abc import Callable, Sequence
from typing import Any

# Constants, by value; mutable module state (a registry dict) is not part of what code does.
DATA = (str, bytes, int, float, bool, tuple, frozenset, type(None))


def code_fingerprint(function: Callable[..., Any], within: Sequence[str]) -> str:
    """sha256 over the sources and constants a function reaches inside the given packages."""
    parts: dict[str, str] = {}
    todo: list[Any] = [function]
    while todo:
        obj = todo.pop()
        name = f"{obj.__module__}.{obj.__qualname__}"
        if name in parts:
            continue
        source, names = _definition(obj)
        parts[name] = source
        namespace = vars(inspect.getmodule(obj) or types.ModuleType("?"))
        for used in sorted(names):
            value = namespace.get(used)
            if _is_code(value) and _inside(value.__module__, within):
                todo.append(value)
            elif isinstance(value, DATA) and _inside(obj.__module__, within):
                parts[f"{obj.__module__}.{used}"] = _canonical(value)
    text = "\n".join(f"# {name}\n{parts[name]}" for name in sorted(parts))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def _definition(obj: Any) -> tuple[str, frozenset[str]]:
    """A function's or class's source and the names it reads, parsed once per process: the stages
    share most of what they call, and a graph's fingerprints otherwise parse it once per stage."""
    source = textwrap.dedent(inspect.getsource(obj))
    return source, frozenset(_names_used(source))


def _canonical(value: Any) -> str:
    """A constant's text, the same in every process: a set's items sorted (their order follows
    string hashing, which is randomised per process), inside tuples too."""
    if isinstance(value, frozenset):
        return "frozenset({" + ", ".join(sorted(_canonical(item) for item in value)) + "})"
    if isinstance(value, tuple):
        return "(" + "".join(_canonical(item) + ", " for item in value) + ")"
    return repr(value)


def _names_used(source: str) -> set[str]:
    """Names a definition reads, leaving out annotations (types do not change what it does) and
    decorators (a registering decorator is not the code; its arguments are in the hashed text)."""
    tree = ast.parse(source)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:
                skipped |= {id(n) for n in ast.walk(decorator)}
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [
                *node.args.args,
                *node.args.kwonlyargs,
                *node.args.posonlyargs,
                node.args.vararg,
                node.args.kwarg,
            ]:
                if arg is not None and arg.annotation is not None:
                    skipped |= {id(n) for n in ast.walk(arg.annotation)}
            if node.returns is not None:
                skipped |= {id(n) for n in ast.walk(node.returns)}
        if isinstance(node, ast.AnnAssign):
            skipped |= {id(n) for n in ast.walk(node.annotation)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in skipped}


def _is_code(value: Any) -> bool:
    """A function or class defined in Python source."""
    return inspect.isfunction(value) or inspect.isclass(value)


def _inside(module: str, packages: Sequence[str]) -> bool:
    """Whether a module belongs to one of the packages."""
    return any(module == p or module.startswith(p + ".") for p in packages)
