"""Conformance: hold the stage functions' declarations against a Dockerfile, statically, and name what
needs a person. A build runs every instruction of the file as written except those a deviation claims
(instructions.AsWritten.walk), so what can drift is only what this project declares: a stage with no
function, a changed FROM, a deviation whose anchor names no instruction or several, a deviated
instruction whose text is no longer the one accepted (pinned by digest in ACCEPTED), and an instruction
the runner cannot run as written. The same check refuses a build before any container work."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import json
from collections.abc import Mapping
from typing import Any, Final

from stagecache.report import text_table
from vllm_ci.args import flag_of
from vllm_ci.declare import STAGE_SETS, StageDeclaration, StageSet
from vllm_ci.deviations import Deviation, claimed
from vllm_ci.errors import UsageError
from vllm_ci.instructions import unrunnable
from vllm_ci.release import unpacked_source
from vllm_ci.upstream_file import FileStage, Instruction, UpstreamFile, digest

REPRODUCED: Final = "reproduced"
DEVIATION: Final = "deviation"
MISSING: Final = "missing"
CHANGED: Final = "changed upstream"
FAILING: Final = (MISSING, CHANGED)

GLOBAL: Final = "(global)"
# The digests of the deviated instructions as last accepted (`vllm-ci accept`): deviation id -> digest.
ACCEPTED: Final = "accepted-deviations.json"


@dataclasses.dataclass(frozen=True)
class Row:
    """One instruction of the file (or one declaration the file no longer has) and its status."""

    stage: str
    line: int | None  # None: nothing in the file (a stage or ARG removed upstream)
    instruction: str  # normalised text as the file has it now, or as it was declared
    status: str
    reason: str = ""  # a deviation's reason, or what exactly is missing or changed
    declared: str = ""  # for "changed upstream": what was declared or accepted (text, or a digest)
    diff: str = ""  # for a changed deviated instruction: the unified diff from the accepted text, when known
    holder: str = ""  # the function that holds what needs a person (module:function)


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
            details.append(f"- {r.stage}, line {'-' if r.line is None else r.line}: {r.reason} [{r.holder}]")
            details.append(r.diff or f"    was: {r.declared or '(nothing)'}\n    now: {r.instruction or '(nothing)'}")
        return "\n".join([text_table(rows), *filter(None, details), self.summary()])


def _short(text: str, width: int = 72) -> str:
    """An instruction cut to one table cell."""
    return text if len(text) <= width else text[: width - 1] + "…"


def deviation_id(decl: StageDeclaration, deviation: Deviation) -> str:
    """How the accepted digests name a deviation: its stage (`cpu:base` in the CPU set), kind and anchor."""
    stage = decl.name if decl.stage_set == "cuda" else f"{decl.stage_set}:{decl.name}"
    return f"{stage} {deviation.kind} {deviation.anchor}"


def accepted_digests() -> dict[str, str]:
    """The accepted digests of the deviated instructions, as this package holds them."""
    return json.loads(importlib.resources.files("vllm_ci").joinpath(ACCEPTED).read_text())["digests"]


def released_file(stage_set: StageSet = STAGE_SETS["cuda"]) -> UpstreamFile | None:
    """A stage set's Dockerfile in the release the accepted digests were taken from, when its sdist is unpacked
    in this machine's cache (the tests and bench keep it there), for diffs; None otherwise."""
    tree = unpacked_source()
    if tree is None or not (tree / stage_set.dockerfile).is_file():
        return None
    return UpstreamFile.parse((tree / stage_set.dockerfile).read_text(), f"vLLM {tree.name}'s {stage_set.dockerfile}")


def claimed_digest(instructions: list[Instruction]) -> str:
    """The digest that pins what a deviation claims (one instruction, or all above an anchor)."""
    return digest("\n".join(i.text for i in instructions))


def holder(decl: StageDeclaration) -> str:
    """Where a stage's declaration is, for a person: module:function."""
    return f"{decl.function.__module__}:{decl.function.__qualname__}"


def check(
    file: UpstreamFile,
    declarations: Mapping[str, StageDeclaration],
    accepted: Mapping[str, str] | None = None,
    released: UpstreamFile | None = None,
) -> ConformanceReport:
    """Hold a Dockerfile against the declared stage functions. accepted: deviation id -> accepted digest
    (default: this package's); released: the file those digests were accepted for, if at hand, for diffs."""
    accepted = accepted_digests() if accepted is None else accepted
    upstream = {n: d for n, d in declarations.items() if d.upstream}
    rows: list[Row] = [Row(GLOBAL, i.line, i.text, REPRODUCED) for i in file.global_args]
    for stage in file.stages:
        if stage.name not in upstream:
            rows.append(Row(stage.name, stage.line, stage.from_text, MISSING, "new stage: no stage function"))
            rows += [Row(stage.name, i.line, i.text, MISSING) for i in stage.instructions]
        else:
            rows += _stage_rows(file, stage, upstream[stage.name], accepted, released)
    for removed in sorted(set(upstream) - {s.name for s in file.stages}):
        decl = upstream[removed]
        declared = f"FROM {decl.from_} AS {removed}"
        rows.append(Row(removed, None, "", CHANGED, f"stage {removed} removed upstream", declared, holder=holder(decl)))
    return ConformanceReport(file.path, rows)


def _stage_rows(
    file: UpstreamFile,
    stage: FileStage,
    decl: StageDeclaration,
    accepted: Mapping[str, str],
    released: UpstreamFile | None,
) -> list[Row]:
    """A declared stage's FROM and instructions: run as written, deviated, or needing a person."""
    where = holder(decl)
    rows = [
        Row(stage.name, stage.line, stage.from_text, REPRODUCED)
        if decl.from_ == stage.base
        else Row(stage.name, stage.line, stage.from_text, CHANGED, "FROM changed", f"FROM {decl.from_}", holder=where)
    ]
    claimed_lines: dict[int, Deviation] = {}
    for deviation in decl.deviations:
        try:
            instructions = claimed(file.path, stage, deviation)
        except UsageError as err:
            rows.append(Row(stage.name, None, deviation.label(), CHANGED, str(err).rpartition(": ")[2], holder=where))
            continue
        claimed_lines |= dict.fromkeys((i.line for i in instructions), deviation)
        if deviation.portable:
            continue  # upstream's step unless the build passes the override: nothing to pin
        pin = accepted.get(deviation_id(decl, deviation))
        now = claimed_digest(instructions)
        if pin != now:
            rows.append(
                Row(
                    stage.name,
                    instructions[0].line if instructions else None,
                    deviation.label(),
                    CHANGED,
                    "deviated instruction changed since it was accepted" if pin else "deviation never accepted",
                    pin or "",
                    _diff(released, stage.name, deviation, instructions),
                    where,
                )
            )
    for instruction in stage.instructions:
        claimer = claimed_lines.get(instruction.line)
        problem = unrunnable(instruction)
        if claimer is not None and not claimer.portable:
            rows.append(Row(stage.name, instruction.line, instruction.text, DEVIATION, claimer.reason))
        elif problem:
            rows.append(Row(stage.name, instruction.line, instruction.text, MISSING, problem, holder=where))
        else:
            note = f"portable: {flag_of(claimer.portable)} replaces it when given" if claimer else ""
            rows.append(Row(stage.name, instruction.line, instruction.text, REPRODUCED, note))
    return sorted(rows, key=lambda r: (r.line is None, r.line or 0))


def _diff(released: UpstreamFile | None, stage: str, deviation: Deviation, now: list[Instruction]) -> str:
    """The unified diff from the accepted release's instruction(s) to the file's, when that release is at hand."""
    if released is None or stage not in {s.name for s in released.stages}:
        return ""
    try:
        was = claimed(released.path, released.stage(stage), deviation)
    except UsageError:
        return ""
    lines = difflib.unified_diff(
        [i.text for i in was], [i.text for i in now], f"{released.path} (accepted)", "this file", lineterm="", n=0
    )
    return "\n".join(lines)


def accept(file: UpstreamFile, declarations: Mapping[str, StageDeclaration]) -> dict[str, str]:
    """The accepted digests with this file's taken as they are now: every deviation's claimed instructions
    in the file, and the other stage sets' digests as this package holds them."""
    sets = {decl.stage_set for decl in declarations.values()}
    others = {d: pin for d, pin in accepted_digests().items() if stage_set_of_id(d) not in sets}
    return dict(sorted({**others, **digests_now(file, declarations)}.items()))


def stage_set_of_id(deviation: str) -> str:
    """The stage set a deviation id names (deviation_id): `cpu:base RUN …` the CPU set, `base RUN …` CUDA's."""
    stage = deviation.partition(" ")[0]
    return stage.partition(":")[0] if ":" in stage else "cuda"


def digests_now(file: UpstreamFile, declarations: Mapping[str, StageDeclaration]) -> dict[str, str]:
    """Every deviation's claimed instructions as the file has them now, by deviation id."""
    digests = {}
    for decl in declarations.values():
        if not decl.upstream or decl.name not in {s.name for s in file.stages}:
            continue
        for deviation in decl.deviations:
            if not deviation.portable:
                instructions = claimed(file.path, file.stage(decl.name), deviation)
                digests[deviation_id(decl, deviation)] = claimed_digest(instructions)
    return dict(sorted(digests.items()))


def refusal(report: ConformanceReport) -> UsageError:
    """A failing report as the one line a build is refused with (the first row that needs a person, and
    how many more), with that row's diff, when there is one, shown before it."""
    failing = [r for r in report.rows if r.status in FAILING]
    first = failing[0]
    where = f"{report.dockerfile}:{first.line}" if first.line is not None else report.dockerfile
    more = f" (and {len(failing) - 1} more: vllm-ci conformance)" if len(failing) > 1 else ""
    reason = first.reason or first.status
    return UsageError(
        f"{where}: stage {first.stage}: {reason}: {_short(first.instruction)} [{first.holder}]{more}", first.diff
    )
