"""What a stage function declares it does differently from the Dockerfile: one instruction (or the ones
above it) named by kind and a short anchor of its text, never by line, with the reason; and the handler
that does it instead when the instruction does not simply run as written."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import dagger

from vllm_ci.errors import UsageError
from vllm_ci.steps import Step
from vllm_ci.upstream_file import FileStage, Instruction


@dataclasses.dataclass(frozen=True)
class Deviation:
    """One instruction of a stage done differently on purpose, named by its kind and a short anchor of its
    text (unique among the stage's instructions of that kind), and why. portable: this project's argument
    that replaces the instruction's commands holding the anchor (`whole`: its whole script); when the
    build leaves it empty, the instruction runs exactly as written and is no deviation. above: the
    deviation claims every instruction above the anchored one instead (ARG lines only enter the scope),
    done elsewhere (vllm-openai-base's dependencies, in openai-deps)."""

    kind: str
    anchor: str
    reason: str = ""
    portable: str = ""
    whole: bool = False
    above: bool = False

    def claims(self, instruction: Instruction) -> bool:
        """Whether this deviation names the instruction."""
        return instruction.kind == self.kind and self.anchor in instruction.text

    def label(self) -> str:
        """How a person finds it: kind and anchor."""
        return f"{self.kind} …{self.anchor}…"


def anchored(path: str, stage: FileStage, deviation: Deviation) -> Instruction:
    """The one instruction a deviation's anchor names; refused in one line when it names none or several."""
    found = [i for i in stage.instructions if deviation.claims(i)]
    if len(found) != 1:
        lines = ", ".join(str(i.line) for i in found) or "none"
        raise UsageError(
            f"{path}: stage {stage.name}: deviation {deviation.label()} must name one instruction, names {lines}"
        )
    return found[0]


def claimed(path: str, stage: FileStage, deviation: Deviation) -> list[Instruction]:
    """The instructions a deviation claims: the one it anchors, or (above) every one above it but ARGs."""
    named = anchored(path, stage, deviation)
    if not deviation.above:
        return [named]
    return [i for i in stage.instructions if i.line < named.line and i.kind != "ARG"]


# A deviation's handler: the container so far and the instruction's own step (as written) -> the container.
Handler = Callable[[dagger.Container, Step], dagger.Container]


def skipped(ctr: dagger.Container, _: Step) -> dagger.Container:
    """A handler for an instruction not run (its reason says why, or another handler does its work)."""
    return ctr
