"""How a stage function says what of vLLM's docker/Dockerfile it reproduces.

Each stage function carries one `@stage(...)` declaration: the Dockerfile stage it builds, its FROM,
and the ARGs it reads (Dockerfile syntax, with the stage's own default where the stage gives one).
Inside the function, each step that reproduces an instruction is wrapped, where it is applied, in
`reproduces(INSTRUCTION, step)`; an instruction done differently on purpose is wrapped in
`deviates(INSTRUCTION, REASON, step)`. The instruction is upstream's text: matched by content,
never by line number, so upstream may insert lines freely. Conformance (conformance.py) reads
these markers from the function's source without running it."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

F = TypeVar("F", bound=Callable[..., Any])
Instructions = str | Sequence[str]

# Every stage function declared so far, by the Dockerfile stage name it builds.
DECLARED: dict[str, StageDeclaration] = {}


@dataclasses.dataclass(frozen=True)
class DeclaredStep:
    """One marker in a stage function: the instructions it covers, and the reason if it deviates."""

    instructions: tuple[str, ...]
    reason: str = ""  # empty: reproduced as upstream wrote it


@dataclasses.dataclass(frozen=True)
class StageDeclaration:
    """What a stage function says of itself: its Dockerfile stage, FROM and the ARGs it reads."""

    name: str
    from_: str | None  # FROM's argument as upstream writes it (image or stage); None: a stage of ours only
    args: tuple[str, ...]  # "NAME" or "NAME=default" (the stage's own default), as upstream's ARG lines
    function: Callable[..., Any]
    parents: tuple[str, ...] = ()  # the stages whose results it uses
    reads: tuple[str, ...] = ()  # the source files it reads: its COPY set, its filter and its key's input
    # Parents whose files it never reads: it only adds file layers onto them or merges their folders in.
    not_read: tuple[str, ...] = ()
    # ARGs only this project's way of doing a step reads (the file-layer install reads PYTHON_VERSION
    # for the site-packages path), which upstream's stage does not declare: in the key, not in RUNs.
    also_reads: tuple[str, ...] = ()

    @property
    def upstream(self) -> bool:
        """Whether the stage is one of the Dockerfile's (not a fast path of this project's)."""
        return self.from_ is not None

    def arg_names(self) -> list[str]:
        """The ARGs this stage reads, by name (also_reads included: they are in its key)."""
        return [spec.partition("=")[0] for spec in self.args] + list(self.also_reads)

    def stage_default(self, name: str) -> str | None:
        """The stage's own default for an ARG, or None when the stage gives none."""
        for spec in self.args:
            arg, has_default, default = spec.partition("=")
            if arg == name and has_default:
                return default
        return None

    def steps(self) -> list[DeclaredStep]:
        """The reproduces/deviates markers of the stage function, in source order."""
        return declared_steps(self.function)


def stage(
    name: str,
    *,
    from_: str | None,
    parents: Sequence[str] = (),
    reads: Sequence[str] = (),
    args: Sequence[str] = (),
    not_read: Sequence[str] = (),
    also_reads: Sequence[str] = (),
) -> Callable[[F], F]:
    """Declare, once and on the function, the stage it builds: its Dockerfile FROM (None for a
    stage of this project only), the stages it builds on, the source files and the ARGs it reads,
    the parents whose files it never reads, only adding layers onto them or merging their folders in
    (`not_read`: those are never pulled), and the ARGs only this project's deviation reads (`also_reads`)."""

    def register(function: F) -> F:
        if name in DECLARED:
            raise ValueError(
                f"stage {name!r} is declared twice: {DECLARED[name].function.__qualname__} and {function.__qualname__}"
            )
        if set(not_read) - set(parents):
            raise ValueError(
                f"stage {name!r}: not_read={sorted(set(not_read) - set(parents))!r} are not among its parents"
            )
        DECLARED[name] = StageDeclaration(
            name,
            from_,
            tuple(args),
            function,
            tuple(parents),
            tuple(reads),
            not_read=tuple(not_read),
            also_reads=tuple(also_reads),
        )
        return function

    return register


@runtime_checkable
class RunsInstructions(Protocol):
    """Something that turns upstream's instruction text itself into a step (instructions.AsWritten)."""

    def step(self, instructions: Instructions) -> Callable[[Any], Any]:
        """The step that runs these instructions as written."""


def reproduces(instructions: Instructions, step: Callable[[Any], Any] | RunsInstructions) -> Callable[[Any], Any]:
    """Mark a step as reproducing upstream's instruction(s) exactly; returns the step unchanged,
    or, given a runner of upstream's text, the step that runs these very instructions."""
    return step.step(instructions) if isinstance(step, RunsInstructions) else step


def deviates(
    instructions: Instructions, reason: str, step: Callable[[Any], Any] | RunsInstructions | None = None
) -> Callable[[Any], Any]:
    """Mark a step as doing upstream's instruction(s) differently, for a reason; None: not done at all.
    Given a runner of upstream's text, the text runs as written and the reason says what differs
    around it (a bind mount holding only the files the stage reads)."""
    if isinstance(step, RunsInstructions):
        return step.step(instructions)
    return step if step is not None else (lambda container: container)


MARKERS = {reproduces.__name__: 1, deviates.__name__: 2}  # marker name -> arguments before the step


@functools.cache
def declared_steps(function: Callable[..., Any]) -> list[DeclaredStep]:
    """Read the markers from a function's source, in source order, without running it."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in MARKERS
    ]
    steps = []
    for call in sorted(calls, key=lambda node: (node.lineno, node.col_offset)):
        assert isinstance(call.func, ast.Name)  # as the filter above chose it
        values = [_literal(node, function) for node in call.args[: MARKERS[call.func.id]]]
        values += [_literal(kw.value, function) for kw in call.keywords if kw.arg in ("instructions", "reason")]
        instructions = values[0]
        reason = values[1] if len(values) > 1 else ""
        steps.append(DeclaredStep((instructions,) if isinstance(instructions, str) else tuple(instructions), reason))
    return steps


def _literal(node: ast.expr, function: Callable[..., Any]) -> Any:
    """A marker's argument: a literal, a module-level constant of the function's module, or a tuple
    of those (`(*COPIES, INSTALL)`)."""
    if isinstance(node, ast.Name):
        return function.__globals__[node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        items: list[Any] = []
        for element in node.elts:
            if isinstance(element, ast.Starred):
                items.extend(_literal(element.value, function))
            else:
                items.append(_literal(element, function))
        return tuple(items)
    return ast.literal_eval(node)
