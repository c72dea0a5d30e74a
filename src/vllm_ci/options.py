"""The client command's options: each module function's arguments and the constructor's, read as
`dagger call` reads them (types, defaults, docs, ignore patterns), and the parser built from them."""

from __future__ import annotations

import argparse
import builtins
import csv
import dataclasses
import inspect
import types
import typing
from typing import Any, NoReturn

import dagger

from vllm_ci.args import flag_of, kebab
from vllm_ci.entry import PROG
from vllm_ci.errors import UsageError
from vllm_ci.main import VllmCi

_M = typing.TypeVar("_M")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The type behind Optional[...], and whether None was allowed."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


@dataclasses.dataclass(frozen=True)
class Option:
    """One argument of a function or the constructor, as the command line sees it."""

    python_name: str
    kind: Any
    doc: str
    default: Any
    required: bool
    ignore: list[str] | None

    @property
    def flag(self) -> str:
        """The --flag spelling."""
        return flag_of(self.python_name)


def _last_meta(hint: Any, kind: type[_M]) -> _M | None:
    """The last metadata of a kind in an Annotated type hint, None when there is none."""
    if typing.get_origin(hint) is not typing.Annotated:
        return None
    return next((meta for meta in reversed(typing.get_args(hint)) if isinstance(meta, kind)), None)


def get_doc(hint: Any) -> str | None:
    """An option's help, read as the SDK reads it for `dagger call` (dagger.mod's private get_doc):
    the last dagger.Doc of an Annotated hint, else the docstring of a class or function of our own
    (not a builtin's, nor a dataclass's generated signature)."""
    if doc := _last_meta(hint, dagger.Doc):
        return doc.documentation
    if inspect.getmodule(hint) == builtins or (not inspect.isclass(hint) and not inspect.isroutine(hint)):
        return None
    try:
        text = hint.__doc__
    except AttributeError:
        return None
    if not isinstance(text, str):
        return None
    if (
        text
        and inspect.isclass(hint)
        and dataclasses.is_dataclass(hint)
        and text.startswith(f"{hint.__name__}(")
        and text.endswith(")")
    ):
        return None
    return inspect.cleandoc(text)


def get_ignore(hint: Any) -> list[str] | None:
    """The patterns of the last dagger.Ignore of an Annotated hint, as the SDK reads them."""
    meta = _last_meta(hint, dagger.Ignore)
    return meta.patterns if meta else None


def options_of(func: Any, hints_of: Any = None) -> list[Option]:
    """The options of a callable, from its signature and Annotated docs."""
    hints = typing.get_type_hints(hints_of or func, include_extras=True)
    opts = []
    for param in inspect.signature(func).parameters.values():
        if param.name == "self":
            continue
        annotated = hints[param.name]
        kind, _ = _unwrap(
            typing.get_args(annotated)[0] if typing.get_origin(annotated) is typing.Annotated else annotated
        )
        required = param.default is inspect.Parameter.empty
        opts.append(
            Option(
                param.name,
                kind,
                get_doc(annotated) or "",
                None if required else param.default,
                required,
                get_ignore(annotated),
            )
        )
    return opts


def module_functions() -> dict[str, Any]:
    """The module's @function methods by command name, in the order `dagger functions` lists them."""
    # @object_type sets __dagger_object_type__ at run time; the SDK declares it nowhere.
    functions = VllmCi.__dagger_object_type__.functions  # type: ignore[attr-defined]
    return {kebab(fn.original_name): getattr(VllmCi, fn.original_name) for fn in functions.values()}


def constructor_options() -> list[Option]:
    """The module object's constructor arguments (the Dockerfile's ARGs)."""
    hints = typing.get_type_hints(VllmCi, include_extras=True)
    opts = []
    for field in dataclasses.fields(VllmCi):
        kind, _ = _unwrap(typing.get_args(hints[field.name])[0])
        opts.append(Option(field.name, kind, get_doc(hints[field.name]) or "", field.default, False, None))
    return opts


def _add(parser: argparse.ArgumentParser, opt: Option) -> None:
    """Add one option to a parser, typed as the module declares it."""
    kind = opt.kind
    shown = "" if opt.default in (None, "", ()) else f" (default: {opt.default})"
    help_text = opt.doc + shown
    if kind is bool:
        parser.add_argument(
            opt.flag,
            dest=opt.python_name,
            type=_parse_bool,
            nargs="?",
            const=True,
            default=opt.default,
            help=help_text,
            metavar="BOOL",
        )
    elif typing.get_origin(kind) is list:
        parser.add_argument(
            opt.flag,
            dest=opt.python_name,
            type=_parse_list,
            action="extend",
            default=opt.default,
            required=opt.required,
            help=help_text + " (comma-separated, or the flag repeated)",
            metavar="A,B",
        )
    else:
        metavar = {
            dagger.Directory: "DIR",
            dagger.File: "FILE",
            dagger.Secret: "env:NAME|file:PATH",
            dagger.Service: "tcp://HOST:PORT",
        }.get(kind, kind.__name__.upper())
        parser.add_argument(
            opt.flag,
            dest=opt.python_name,
            type=kind if kind in (int, float) else str,
            default=opt.default,
            required=opt.required,
            help=help_text,
            metavar=metavar,
        )


def _parse_bool(text: str) -> bool:
    """true/false, as `dagger call` takes them."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _parse_list(text: str) -> list[str]:
    """A comma-separated list, as `dagger call` reads one (CSV: an item in double quotes may hold commas)."""
    try:
        return [item for row in csv.reader([text]) for item in row if item]
    except csv.Error as err:  # a line break in an unquoted item, as `dagger call` refuses it
        raise argparse.ArgumentTypeError(f"not a comma-separated list: {err}") from None


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list[Option]]]:
    """The whole command line: constructor flags, then one sub-command per module function."""
    parser = _Parser(prog=PROG, description=VllmCi.__doc__)
    for opt in constructor_options():
        _add(parser, opt)
    parser.add_argument(
        "-o", "--output", help="Write the result to this host path (a file, or a folder for a directory)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Show the engine's progress on stderr")
    subs = parser.add_subparsers(dest="function", metavar="FUNCTION", parser_class=_Parser)
    per_function = {}
    for name, method in module_functions().items():
        doc = (inspect.getdoc(method) or "").splitlines()[0]
        sub = subs.add_parser(name, help=doc, description=doc)
        per_function[name] = options_of(method)
        for opt in per_function[name]:
            _add(sub, opt)
    return parser, per_function
