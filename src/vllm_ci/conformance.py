"""Conformance: hold the stage functions against a real docker/Dockerfile and name what drifted.

The Dockerfile is read with `dockerfile` (PyPI), a binding of BuildKit's own Go parser, so a file
is read exactly as BuildKit reads it (continuations joined, comments dropped, heredocs kept).
Each stage of the file is matched to the function that declares it (declare.py); each ARG to a
typed argument (args.py) with the same default, read by the same stages; each other instruction
to a `reproduces`/`deviates` marker by content (normalised text), never by line number."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import dockerfile

from stagecache.report import text_table
from vllm_ci.args import AUTOMATIC_ARGS, GLOBAL_DEFAULTS, PROJECT_ARGS
from vllm_ci.declare import StageDeclaration
from vllm_ci.errors import UsageError
from vllm_ci.steps import unquote

REPRODUCED: Final = "reproduced"
DEVIATION: Final = "deviation"
MISSING: Final = "missing"
CHANGED: Final = "changed upstream"
FAILING: Final = (MISSING, CHANGED)

GLOBAL: Final = "(global)"
KNOWN_INSTRUCTIONS: Final = frozenset(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD RUN SHELL "
    "STOPSIGNAL USER VOLUME WORKDIR".split()
)
# How close a declared instruction must be to an upstream one to be read as its edited version.
SAME_INSTRUCTION_EDITED: Final = 0.6


@dataclasses.dataclass(frozen=True)
class Row:
    """One instruction of the file (or one declaration the file no longer has) and its status."""

    stage: str
    line: int | None  # None: nothing in the file (a stage or ARG removed upstream)
    instruction: str  # normalised text as the file has it now, or as it was declared
    status: str
    reason: str = ""  # a deviation's reason, or what exactly is missing or changed
    declared: str = ""  # for "changed upstream": the text the step was written for


@dataclasses.dataclass
class ConformanceReport:
    """Every row of one check, in file order, with counts and a one-line summary."""

    dockerfile: str
    rows: list[Row]

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        return {
            status: sum(r.status == status for r in self.rows) for status in (REPRODUCED, DEVIATION, MISSING, CHANGED)
        }

    def stage_counts(self) -> dict[str, int]:
        """Stages of the file: with a function, missing, and removed upstream."""
        froms = [r for r in self.rows if r.instruction.startswith("FROM ")]
        return {
            "in file": sum(r.line is not None for r in froms),
            "built": sum(
                r.status in (REPRODUCED, DEVIATION) or (r.status == CHANGED and r.line is not None) for r in froms
            ),
            "missing": sum(r.status == MISSING for r in froms),
            "removed upstream": sum(r.line is None for r in froms),
        }

    def ok(self) -> bool:
        """True when nothing is missing or changed upstream."""
        return not any(r.status in FAILING for r in self.rows)

    def summary(self) -> str:
        """One line with the counts."""
        c, s = self.counts(), self.stage_counts()
        verdict = "conforms" if self.ok() else "does not conform"
        return (
            f"conformance: {self.dockerfile} {verdict}: stages {s['built']}/{s['in file']} built, {s['missing']} missing, "
            f"{s['removed upstream']} removed upstream; instructions {c[REPRODUCED]} reproduced, {c[DEVIATION]} deviations, "
            f"{c[MISSING]} missing, {c[CHANGED]} changed upstream"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "dockerfile": self.dockerfile,
            "ok": self.ok(),
            "counts": self.counts(),
            "stages": self.stage_counts(),
            "summary": self.summary(),
            "rows": [dataclasses.asdict(r) for r in self.rows],
        }

    def to_json(self) -> str:
        """The report as indented JSON, for CI."""
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """The report for a person: one row per instruction, then what changed upstream, then the summary."""
        rows = [["stage", "line", "instruction", "status"]]
        for r in self.rows:
            status = f"{r.status} ({r.reason})" if r.reason and r.status != CHANGED else r.status
            rows.append([r.stage, "-" if r.line is None else str(r.line), _short(r.instruction), status])
        changed = [r for r in self.rows if r.status == CHANGED]
        details = [f"\nchanged upstream ({len(changed)}): port the new text" if changed else ""]
        for r in changed:
            details.append(f"- {r.stage}, line {'-' if r.line is None else r.line}: {r.reason}")
            details.append(f"    was: {r.declared or '(nothing)'}")
            details.append(f"    now: {r.instruction if r.line is not None else '(nothing)'}")
        return "\n".join([text_table(rows), *filter(None, details), self.summary()])


def _short(text: str, width: int = 72) -> str:
    """An instruction cut to one table cell."""
    return text if len(text) <= width else text[: width - 1] + "…"


def normalise(original: str) -> str:
    """An instruction's text with all white space runs made one space."""
    return " ".join(original.split())


def parse(text: str, name: str) -> tuple[Any, ...]:
    """The file's instructions as BuildKit reads them; a file that is not a Dockerfile is a UsageError."""
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as err:
        raise UsageError(f"{name}: not a Dockerfile: {err}") from None
    for command in commands:
        if command.cmd not in KNOWN_INSTRUCTIONS:
            raise UsageError(f"{name}:{command.start_line}: not a Dockerfile: unknown instruction {command.cmd}")
    if not any(command.cmd == "FROM" for command in commands):
        raise UsageError(f"{name}: not a Dockerfile: no FROM instruction")
    return commands


def parse_instruction(text: str) -> str:
    """A declared instruction, normalised exactly as the file's are (by the same parser)."""
    commands = dockerfile.parse_string(text)
    if len(commands) != 1:
        raise ValueError(f"a marker must hold one instruction per string, got {len(commands)}: {text[:60]!r}")
    return normalise(commands[0].original)


@dataclasses.dataclass
class FileStage:
    """One stage of the file: its FROM and the instructions under it."""

    name: str
    base: str
    line: int
    text: str
    commands: list[Any]


def split_stages(commands: Sequence[Any]) -> tuple[list[Any], list[FileStage]]:
    """The global ARGs (before the first FROM) and the stages, in file order."""
    preamble: list[Any] = []
    stages: list[FileStage] = []
    for command in commands:
        if command.cmd == "FROM":
            value = [v for v in command.value]
            name = value[2].lower() if len(value) >= 3 and value[1].upper() == "AS" else f"stage-{len(stages)}"
            stages.append(FileStage(name, value[0], command.start_line, normalise(command.original), []))
        elif stages:
            stages[-1].commands.append(command)
        else:
            preamble.append(command)
    return preamble, stages


def arg_items(command: Any) -> list[tuple[str, str | None]]:
    """An ARG line's names and defaults (None: no default on the line)."""
    items = []
    for item in command.value:
        name, has_default, default = item.partition("=")
        items.append((name, unquote(default) if has_default else None))
    return items


def check(
    text: str,
    name: str,
    declarations: Mapping[str, StageDeclaration],
    arg_defaults: Mapping[str, str],
    project_args: Iterable[str] = (),
    not_built: Mapping[str, str] | None = None,
) -> ConformanceReport:
    """Hold a Dockerfile's text against the declared stage functions and typed arguments.

    arg_defaults: ARG name -> the typed argument's default as text; project_args: typed arguments
    of this project with no ARG upstream (both keyed by the ARG's name in lower case, as a Python
    argument spells it; no two of upstream's ARGs differ only in case); not_built: stage -> the reason it is not built."""
    preamble, stages = split_stages(parse(text, name))
    declarations = {n: d for n, d in declarations.items() if d.upstream}
    not_built = not_built or {}
    global_lines = {n: (d, c.start_line) for c in preamble if c.cmd == "ARG" for n, d in arg_items(c)}
    global_args = {n: (d or "", line) for n, (d, line) in global_lines.items()}
    rows: list[Row] = []
    for arg, (default, line) in global_lines.items():
        rows.append(_global_arg_row(arg, default, line, arg_defaults))
    in_file = {a.lower() for s in stages for c in s.commands if c.cmd == "ARG" for a, _ in arg_items(c)}
    in_file |= {a.lower() for a in global_args}
    for arg in sorted(set(arg_defaults) - in_file - set(project_args)):
        rows.append(
            Row(
                GLOBAL,
                None,
                f"ARG {arg}={arg_defaults[arg]}",
                CHANGED,
                f"ARG {arg} removed upstream",
                f"ARG {arg}={arg_defaults[arg]}",
            )
        )
    for stage in stages:
        if stage.name in not_built:
            rows += _not_built_rows(stage, not_built[stage.name])
        elif stage.name not in declarations:
            rows.append(Row(stage.name, stage.line, stage.text, MISSING, "new stage: no stage function"))
            rows += [Row(stage.name, c.start_line, normalise(c.original), MISSING) for c in stage.commands]
        else:
            rows += _stage_rows(stage, declarations[stage.name], global_args, arg_defaults)
    for removed in sorted(set(declarations) - {s.name for s in stages}):
        decl = declarations[removed]
        declared = f"FROM {decl.from_} AS {removed}"
        rows.append(Row(removed, None, declared, CHANGED, f"stage {removed} removed upstream", declared))
    return ConformanceReport(name, rows)


def _not_built_rows(stage: FileStage, reason: str) -> list[Row]:
    """Every instruction of a stage this project decided not to build, as deviations."""
    note = f"stage not built: {reason}"
    return [Row(stage.name, stage.line, stage.text, DEVIATION, note)] + [
        Row(stage.name, c.start_line, normalise(c.original), DEVIATION, note) for c in stage.commands
    ]


def _global_arg_row(arg: str, default: str | None, line: int, arg_defaults: Mapping[str, str]) -> Row:
    """A global ARG against its typed argument."""
    text = f"ARG {arg}" if default is None else f"ARG {arg}={default}"
    if arg.lower() not in arg_defaults:
        return Row(GLOBAL, line, text, MISSING, "new ARG: no typed argument")
    if arg_defaults[arg.lower()] != (default or ""):
        return Row(GLOBAL, line, text, CHANGED, f"ARG {arg} default changed", f"ARG {arg}={arg_defaults[arg.lower()]}")
    if (default is not None) != (arg in GLOBAL_DEFAULTS):
        declared = f"ARG {arg}={default or ''}" if arg in GLOBAL_DEFAULTS else f"ARG {arg}"
        return Row(
            GLOBAL,
            line,
            text,
            CHANGED,
            f"ARG {arg} {'gained' if default is not None else 'lost'} its default",
            declared,
        )
    return Row(GLOBAL, line, text, REPRODUCED)


def _stage_rows(
    stage: FileStage,
    decl: StageDeclaration,
    global_args: Mapping[str, tuple[str, int]],
    arg_defaults: Mapping[str, str],
) -> list[Row]:
    """A declared stage's FROM, ARGs and instructions against its function."""
    arg_rows: list[Row] = []
    order: list[Any] = []
    declared_from = f"FROM {decl.from_} AS {stage.name}"
    from_row = (
        Row(stage.name, stage.line, stage.text, REPRODUCED)
        if decl.from_ == stage.base
        else Row(stage.name, stage.line, stage.text, CHANGED, "FROM changed", declared_from)
    )
    file_args: dict[str, str | None] = {}
    for command in stage.commands:
        if command.cmd != "ARG":
            order.append(command)
            continue
        for arg, default in arg_items(command):
            file_args[arg] = default
            arg_rows.append(
                _stage_arg_row(stage.name, command.start_line, arg, default, decl, global_args, arg_defaults)
            )
    for arg in decl.also_reads:
        arg_rows.append(
            Row(stage.name, None, f"ARG {arg}", DEVIATION, "read by this project's file-layer install only")
        )
    for arg in decl.arg_names():
        if (
            arg not in file_args and arg not in PROJECT_ARGS and arg not in decl.also_reads
        ):  # project arguments have no ARG line
            arg_rows.append(
                Row(
                    stage.name,
                    None,
                    f"ARG {arg}",
                    CHANGED,
                    f"ARG {arg} is read here but not declared in this stage upstream",
                    f"ARG {arg}",
                )
            )
    in_file_order = sorted(
        [*arg_rows, *_instruction_rows(stage, decl, order)], key=lambda r: (r.line is None, r.line or 0)
    )
    return [from_row, *in_file_order]


def _stage_arg_row(
    stage: str,
    line: int,
    arg: str,
    default: str | None,
    decl: StageDeclaration,
    global_args: Mapping[str, tuple[str, int]],
    arg_defaults: Mapping[str, str],
) -> Row:
    """One ARG of a stage: read by its function, with a typed argument and the same default."""
    # As BuildKit scopes it: the stage's own default, else the global one, else unset.
    effective = default if default is not None else global_args.get(arg, ("", 0))[0]
    text = f"ARG {arg}" if default is None else f"ARG {arg}={default}"
    if arg not in decl.arg_names():
        return Row(stage, line, text, MISSING, "not read by the stage function")
    if arg in AUTOMATIC_ARGS:
        return Row(stage, line, text, REPRODUCED)
    if arg.lower() not in arg_defaults:
        return Row(stage, line, text, MISSING, "no typed argument")
    ported = decl.stage_default(arg)
    if ported is None:  # as scoped_value: the global default where the file gives one, else unset
        ported = arg_defaults[arg.lower()] if arg in GLOBAL_DEFAULTS else ""
    if ported != effective:
        return Row(stage, line, text, CHANGED, f"ARG {arg} default changed", f"ARG {arg}={ported}")
    return Row(stage, line, text, REPRODUCED)


def _instruction_rows(stage: FileStage, decl: StageDeclaration, commands: Sequence[Any]) -> list[Row]:
    """Match a stage's instructions to its function's markers by content; pair edited ones."""
    upstream = [(c.start_line, normalise(c.original)) for c in commands]
    declared = [(parse_instruction(text), step.reason) for step in decl.steps() for text in step.instructions]
    status: dict[int, Row] = {}
    unmatched: list[tuple[str, str]] = []
    for text, reason in declared:
        match = next((i for i, (_, up) in enumerate(upstream) if up == text and i not in status), None)
        if match is None:
            unmatched.append((text, reason))
            continue
        line = upstream[match][0]
        status[match] = Row(stage.name, line, text, DEVIATION if reason else REPRODUCED, reason)
    # A declared instruction with no exact match was written for an older text: pair it with the
    # most similar unmatched upstream instruction of the same kind.
    leftovers = [i for i in range(len(upstream)) if i not in status]
    stale: list[Row] = []
    for text, _reason in unmatched:
        kind = text.split(" ", 1)[0]
        scored = [
            (difflib.SequenceMatcher(None, text, upstream[i][1]).ratio(), i)
            for i in leftovers
            if upstream[i][1].split(" ", 1)[0] == kind
        ]
        best = max(scored, default=(0.0, -1))
        if best[0] >= SAME_INSTRUCTION_EDITED:
            line, now = upstream[best[1]]
            status[best[1]] = Row(stage.name, line, now, CHANGED, f"{kind} changed", text)
            leftovers.remove(best[1])
        else:
            stale.append(Row(stage.name, None, text, CHANGED, f"{kind} removed upstream", text))
    rows = [status.get(i) or Row(stage.name, line, text, MISSING) for i, (line, text) in enumerate(upstream)]
    return rows + stale
