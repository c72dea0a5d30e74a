"""The Dockerfile being built, read as BuildKit reads it: its stages in order, the instructions of
each, and its ARGs with their defaults and scopes. This is the only source of upstream's instruction
text and ARG defaults: nothing of either is written in this project.

Read with `dockerfile` (PyPI), a binding of BuildKit's own Go parser: continuations joined, comments
dropped, heredocs kept, exactly as BuildKit sees the file.

ARGs are scoped as BuildKit scopes them: a global ARG (before the first FROM) is seen by FROM lines
and, in a stage, only where the stage declares it again; a stage's ARG is seen from its line on, with
its own default, else the global default, else unset; a passed value (`--build-arg NAME=VALUE`)
replaces any default and is used exactly as given; a default is expanded with the ARGs in scope."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Final

import dockerfile

from vllm_ci.errors import UsageError
from vllm_ci.steps import unquote

KNOWN_INSTRUCTIONS: Final = frozenset(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD RUN SHELL "
    "STOPSIGNAL USER VOLUME WORKDIR".split()
)
# ARGs BuildKit fills in itself from the build's platform (a stage still declares them to see them).
AUTOMATIC_ARGS: Final = frozenset(
    {
        "TARGETPLATFORM",
        "TARGETARCH",
        "TARGETOS",
        "TARGETVARIANT",
        "BUILDPLATFORM",
        "BUILDARCH",
        "BUILDOS",
        "BUILDVARIANT",
    }
)
Values = Mapping[str, "str | None"]  # ARG name -> its value in a scope; None: declared and unset


def normalise(original: str) -> str:
    """An instruction's text with all white space runs made one space."""
    return " ".join(original.split())


def digest(text: str) -> str:
    """The short digest of an instruction's normalised text that pins it (12 hex digits)."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction of the file: its kind, line, flags and values as BuildKit's parser gives them."""

    kind: str  # RUN, COPY, ...
    line: int
    original: str
    flags: tuple[str, ...]
    value: tuple[str, ...]
    json: bool  # exec form (["a", "b"])

    @property
    def text(self) -> str:
        """The instruction's normalised text."""
        return normalise(self.original)

    @property
    def digest(self) -> str:
        """The digest that pins this instruction's text."""
        return digest(self.original)

    def options(self) -> dict[str, str]:
        """The instruction's flags as name -> value (`--from=build` -> from: build; `--link` -> link: "")."""
        return dict(flag.removeprefix("--").partition("=")[::2] for flag in self.flags)

    def arg_items(self) -> list[tuple[str, str | None]]:
        """An ARG line's names and defaults (None: no default on the line)."""
        items = []
        for item in self.value:
            name, has_default, default = item.partition("=")
            items.append((name, unquote(default) if has_default else None))
        return items


@dataclasses.dataclass(frozen=True)
class FileStage:
    """One stage of the file: its name, what FROM names, and the instructions under it."""

    name: str
    base: str  # FROM's argument as written: an image (maybe with ${ARG}s), a stage's name, or scratch
    line: int
    instructions: tuple[Instruction, ...]

    @property
    def from_text(self) -> str:
        """The FROM line, normalised."""
        return f"FROM {self.base} AS {self.name}"

    def args(self) -> list[tuple[Instruction, str, str | None]]:
        """Each ARG this stage declares: its line, name and default on that line, in file order."""
        return [(i, name, default) for i in self.instructions if i.kind == "ARG" for name, default in i.arg_items()]


@dataclasses.dataclass(frozen=True)
class UpstreamFile:
    """A parsed Dockerfile: its global ARGs and its stages, in file order."""

    path: str
    global_args: tuple[Instruction, ...]
    stages: tuple[FileStage, ...]

    @classmethod
    def parse(cls, text: str, path: str) -> UpstreamFile:
        """Read a Dockerfile's text; a file that is not a Dockerfile is one UsageError line naming it."""
        try:
            commands = dockerfile.parse_string(text)
        except dockerfile.GoParseError as err:
            raise UsageError(f"{path}: not a Dockerfile: {err}") from None
        preamble: list[Instruction] = []
        stages: list[tuple[str, str, int, list[Instruction]]] = []
        for command in commands:
            if command.cmd not in KNOWN_INSTRUCTIONS:
                raise UsageError(f"{path}:{command.start_line}: not a Dockerfile: unknown instruction {command.cmd}")
            instruction = Instruction(
                command.cmd,
                command.start_line,
                command.original,
                tuple(command.flags),
                tuple(command.value),
                bool(command.json),
            )
            if command.cmd == "FROM":
                value = list(command.value)
                named = len(value) >= 3 and value[1].upper() == "AS"
                stages.append((value[2].lower() if named else f"stage-{len(stages)}", value[0], command.start_line, []))
            elif stages:
                stages[-1][3].append(instruction)
            elif command.cmd == "ARG":
                preamble.append(instruction)
            else:
                raise UsageError(f"{path}:{command.start_line}: {command.cmd} before the first FROM")
        if not stages:
            raise UsageError(f"{path}: not a Dockerfile: no FROM instruction")
        return cls(path, tuple(preamble), tuple(FileStage(n, b, line, tuple(i)) for n, b, line, i in stages))

    def stage(self, name: str) -> FileStage:
        """The stage of this name."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def names(self) -> set[str]:
        """Every ARG name the file declares, globally or in a stage: what a build may pass."""
        names = {name for i in self.global_args for name, _ in i.arg_items()}
        return names | {name for stage in self.stages for _, name, _ in stage.args()}

    def global_values(self, passed: Mapping[str, str]) -> dict[str, str | None]:
        """The global ARGs' values: passed ones as given, else the default expanded with those above it."""
        values: dict[str, str | None] = {}
        for instruction in self.global_args:
            for name, default in instruction.arg_items():
                values[name] = passed[name] if name in passed else expand_maybe(default, values)
        return values

    def from_image(self, stage: FileStage, passed: Mapping[str, str]) -> str:
        """What a stage's FROM names, expanded with the global ARGs as BuildKit does."""
        return expand(stage.base, self.global_values(passed))

    def scoped_args(
        self, stage: FileStage, passed: Mapping[str, str], automatic: Mapping[str, str], until_line: int | None = None
    ) -> list[tuple[str, str | None]]:
        """Each ARG a stage declares up to a line (all of them when None), in file order, with the value it
        gets at its line (None: unset); a name declared twice is there twice."""
        global_values = self.global_values(passed)
        scope: dict[str, str | None] = {}
        declared: list[tuple[str, str | None]] = []
        for instruction, name, default in stage.args():
            if until_line is not None and instruction.line > until_line:
                break
            scope[name] = arg_value(name, default, passed, automatic, global_values, scope)
            declared.append((name, scope[name]))
        return declared

    def stage_values(
        self, stage: FileStage, passed: Mapping[str, str], automatic: Mapping[str, str], until_line: int | None = None
    ) -> dict[str, str | None]:
        """The ARGs a stage has declared up to a line (all of them when None), each with its value there."""
        return dict(self.scoped_args(stage, passed, automatic, until_line))


def arg_value(
    name: str,
    default: str | None,
    passed: Mapping[str, str],
    automatic: Mapping[str, str],
    global_values: Values,
    scope: Values,
) -> str | None:
    """One stage ARG line's value: BuildKit's platform value, else the passed one as given, else the
    line's default expanded with the scope above it, else the global value (None: unset)."""
    if name in AUTOMATIC_ARGS:
        return automatic.get(name, "")
    if name in passed:
        return passed[name]
    if default is not None:
        return expand(default, scope)
    return global_values.get(name)


def expand_maybe(text: str | None, values: Values) -> str | None:
    """A default expanded, or None for no default."""
    return None if text is None else expand(text, values)


_VARIABLE: Final = re.compile(r"\$\{(\w+)(?::([-+])([^{}$]*))?\}|\$(\w+)")


def expand(text: str, values: Values) -> str:
    """$NAME, ${NAME}, ${NAME:-word} and ${NAME:+word} of the ARGs in scope replaced as BuildKit expands
    them (innermost first, so a modifier's word may name another ARG), each value once: a substituted
    value is never read for variables again; a variable not in scope is left as written."""
    held: list[str] = []  # what was substituted, held out of the text until the end

    def hold(value: str) -> str:
        held.append(value)
        return f"\0{len(held) - 1}\0"

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        if name not in values:
            return match.group(0).replace("$", "\1")  # left as written, and not matched again
        own, modifier, word = values[name] or "", match.group(2), match.group(3)
        if modifier == "+":
            return word if own else ""
        if modifier == "-":
            return hold(own) if own else word
        return hold(own)

    while True:
        expanded = _VARIABLE.sub(substitute, text)
        if expanded == text:
            break
        text = expanded
    text = re.sub(r"\0(\d+)\0", lambda m: held[int(m.group(1))], text)
    return text.replace("\1", "$")


def parse_build_args(pairs: Sequence[str], known: set[str] | None = None) -> dict[str, str]:
    """`--build-arg NAME=VALUE` values as NAME -> VALUE (the last one wins, as in buildx); a pair with
    no `=` or no name, or, given the file's names, a name the file never declares, is a UsageError."""
    passed: dict[str, str] = {}
    for pair in pairs:
        name, has_value, value = pair.partition("=")
        if not has_value or not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise UsageError(f"--build-arg {pair!r}: expected NAME=VALUE")
        if known is not None and name not in known:
            raise UsageError(f"--build-arg {name}: the Dockerfile declares no ARG {name}")
        passed[name] = value
    return passed
