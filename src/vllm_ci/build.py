"""One build: this project's arguments, the Dockerfile being built (the checkout's), and the ARG values
passed to it; and, per stage, the walk of that stage's instructions (instructions.AsWritten)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import StageDeclaration, StageSet, stage_set_for
from vllm_ci.deviations import Deviation
from vllm_ci.deviations import claimed as claimed_in
from vllm_ci.errors import UsageError
from vllm_ci.instructions import AUTOMATIC_VALUES, AsWritten, mount_options, mount_source
from vllm_ci.steps import Step, unquote
from vllm_ci.upstream_file import Instruction, UpstreamFile, expand

# The instructions that change only the image's config, never its files (WORKDIR makes its folder).
CONFIG_ONLY: Final = frozenset("ARG ENV USER LABEL ENTRYPOINT CMD EXPOSE".split())


def taken_from(instruction: Instruction) -> list[tuple[str, str]]:
    """What an instruction takes from another stage or image: (its name, the path), from COPY/ADD --from
    and RUN --mount from=, as written."""
    taken: list[tuple[str, str]] = []
    if instruction.kind in ("COPY", "ADD") and "from" in instruction.options():
        taken += [(instruction.options()["from"], path) for path in instruction.value[:-1]]
    for flag in instruction.flags if instruction.kind == "RUN" else ():
        options = mount_options(flag) if flag.startswith("--mount=") else {}
        if "from" in options:
            taken.append((options["from"], mount_source(options, "/")))
    return taken


class UndeclaredRead(LookupError):
    """A stage function read a value its @stage does not declare: a bug of this project's (exit 3)."""


@dataclasses.dataclass(frozen=True)
class Build:
    """A build's arguments and the file they apply to; refuses a --build-arg the file never declares."""

    args: BuildArgs
    file: UpstreamFile
    # Each upstream stage's walk, by stage name: what its function ran (checked when it returns).
    walks: dict[str, AsWritten] = dataclasses.field(default_factory=dict)
    # In a stage function's view (for_stage): the stage, and the values its key holds, the only ones it may read.
    stage: str = ""
    readable: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        """Refuse, in one line and before any container work, an ARG name the file does not declare."""
        unknown = sorted(set(self.passed) - self.file.names())
        if unknown:
            raise UsageError(f"--build-arg {unknown[0]}: {self.file.path} declares no ARG {unknown[0]}")

    @functools.cached_property
    def stage_set(self) -> StageSet:
        """The stage set of the Dockerfile being built (by its name: Dockerfile.cpu is the CPU set)."""
        return stage_set_for(self.file.path)

    @property
    def declarations(self) -> dict[str, StageDeclaration]:
        """The stage functions of this build's stage set, by stage name."""
        return self.stage_set.declared

    @functools.cached_property
    def passed(self) -> dict[str, str]:
        """The --build-arg values, exactly as given (parsed once per build)."""
        return self.args.passed()

    @functools.cached_property
    def global_values(self) -> dict[str, str | None]:
        """The global ARGs' values in this build (resolved once per build)."""
        return self.file.global_values(self.passed)

    def for_stage(self, decl: StageDeclaration, values: Mapping[str, str]) -> Build:
        """The build as one stage's function sees it: `value` gives the values its key holds (`values`,
        from key_values), and refuses any name the stage does not read (its ARGs above its tail, and
        also_reads), so the key and the function cannot disagree."""
        above = self.tails[decl.name] - 1 if decl.name in self.tails else None
        stage = self.file.stage(decl.name) if decl.upstream else None
        scoped = self.file.scoped_args(stage, self.passed, AUTOMATIC_VALUES, above) if stage is not None else []
        readable = {**{name: value or "" for name, value in scoped}, **{name: values[name] for name in decl.also_reads}}
        return dataclasses.replace(self, stage=decl.name, readable=MappingProxyType(readable))

    def value(self, name: str) -> str:
        """An ARG's value in this build (passed, else the file's default expanded; empty when unset), or an
        argument of this project's (lower case); in a stage's view, the value its key holds."""
        if self.readable is not None:
            if name not in self.readable:
                raise UndeclaredRead(f"stage {self.stage} reads {name}, which its @stage does not declare")
            return self.readable[name]
        if name in self.own_names:
            return str(getattr(self.args, name))
        stage, _, arg = name.rpartition(":")
        if stage:  # an ARG as a stage of the file sees it at its end
            return self.file.stage_values(self.file.stage(stage), self.passed, AUTOMATIC_VALUES).get(arg) or ""
        return self.global_values.get(name) or ""

    @functools.cached_property
    def own_names(self) -> frozenset[str]:
        """The names of this project's own arguments a stage may read (the fields of BuildArgs)."""
        return frozenset(field.name for field in dataclasses.fields(self.args))

    def site_packages(self) -> str:
        """Where the stage set's image installs Python packages (StageSet.site_packages)."""
        return self.stage_set.site_packages.format(version=self.value(self.stage_set.python_version))

    def pip_index_flags(self) -> list[str]:
        """pip flags for the indexes the build's PIP_INDEX_URL and PIP_EXTRA_INDEX_URL name."""
        index, extra = self.value("PIP_INDEX_URL"), self.value("PIP_EXTRA_INDEX_URL")
        return (["--index-url", index] if index else []) + (["--extra-index-url", extra] if extra else [])

    def from_image(self, stage: str) -> str:
        """What a stage's FROM names, expanded with the global ARGs (and a mirror's copy, --image-rewrite)."""
        image = self.file.from_image(self.file.stage(stage), self.passed)
        return self.args.image_rewrites().get(image, image)

    def env_value(self, stage: str, name: str) -> str:
        """The value the stage's last `ENV name=...` gives (as written, unquoted); empty when it sets none."""
        value = ""
        for instruction in self.file.stage(stage).instructions:
            if instruction.kind == "ENV":
                pairs = dict(zip(instruction.value[::2], instruction.value[1::2]))
                value = unquote(pairs.get(name, value))
        return value

    def upstream(self, stage: str, ctx: StageContext, register: bool = True) -> AsWritten:
        """The walk of a stage's instructions for its function (one per build of the stage; register=False:
        another stage's function walks them, and the stage's own check does not count it)."""
        decl = self.declarations[stage]
        walk = AsWritten(
            self.file.stage(stage),
            self.file,
            self.passed,
            ctx,
            decl.deviations,
            self.args.portable(),
            tuple(p for p in decl.reads if p.endswith("/")),
            self.args.rewrites(),
            until=self.tails.get(stage),
        )
        if register:
            self.walks[stage] = walk
        return walk

    def instructions_run_from(self, stage: str, deviation: Deviation | None) -> list[Instruction]:
        """Instructions of a stage another stage runs: the ones a deviation of it claims (None: all but ARGs)."""
        file_stage = self.file.stage(stage)
        if deviation is None:
            return [i for i in file_stage.instructions if i.kind != "ARG"]
        return claimed_in(self.file.path, file_stage, deviation)

    def step_elsewhere(self, stage: str, deviation: Deviation, ctx: StageContext) -> Step:
        """The as-written step of an instruction another stage declares as done here (test's editable
        install of the test utilities, run in test-deps), in that stage's ARG scope at its line."""
        walk = self.upstream(stage, ctx, register=False)
        instruction = walk.anchored(deviation)
        walk.values.update(self.file.stage_values(walk.stage, self.passed, AUTOMATIC_VALUES, instruction.line))
        return walk.step_of(instruction)

    def reads(self, decl: StageDeclaration) -> tuple[str, ...]:
        """The source paths a stage reads: what it declares, and what its instructions (and those it runs of
        other stages) name, as the file has them now: COPY/ADD sources, and the folders RUNs bind unless a
        deviation claims the RUN (it declares the files it opens there). "." is all of the source."""
        stages = [(decl.name, None)] if decl.upstream else []
        named: list[str] = []
        for name, deviation in [*stages, *decl.runs_from]:
            stage = self.file.stage(name)
            scope = self.file.stage_values(stage, self.passed, AUTOMATIC_VALUES)
            claimed = {i.line for d in self.declarations[name].deviations for i in claimed_in(self.file.path, stage, d)}
            for instruction in self.instructions_run_from(name, deviation):
                if instruction.kind in ("COPY", "ADD") and "from" not in instruction.options():
                    named += [expand(path, scope) for path in instruction.value[:-1]]
                elif instruction.kind == "RUN" and instruction.line not in claimed:
                    for flag in instruction.flags:
                        options = mount_options(expand(flag, scope)) if flag.startswith("--mount=") else {}
                        if options.get("type", "bind") == "bind" and options and "from" not in options:
                            named.append(mount_source(options, "."))
        return tuple(dict.fromkeys([*decl.reads, *named]))

    def taken_from(self, stage: str) -> list[str]:
        """The paths the file's other stages copy or bind from a stage (COPY --from, RUN --mount from=),
        a path under another one left out: all a child can see of it."""
        paths = [
            path
            for other in self.file.stages
            for instruction in other.instructions
            for name, path in taken_from(instruction)
            if name == stage
        ]
        kept = sorted({"/" + p.strip("/") for p in paths})
        return [p for p in kept if not any(p.startswith(q + "/") for q in kept if q != p)]

    def files_only(self, decl: StageDeclaration) -> tuple[str, ...]:
        """The parents a stage reads files of alone: named by its COPY --from or RUN --mount from=, and not
        the stage it builds on; their config (Build.tails) is not in its key."""
        if not decl.upstream:
            return ()
        stage = self.file.stage(decl.name)
        named = {name for instruction in stage.instructions for name, _ in taken_from(instruction)}
        return tuple(p for p in decl.parents if p in named and p not in (decl.from_, stage.base))

    @functools.cached_property
    def tails(self) -> dict[str, int]:
        """Where the tail of a stage another stage reads files of alone starts (its first line): its last
        instructions that change only the image's config (CONFIG_ONLY) and no deviation claims. Walked apart
        onto its entry (tail_step), they are in neither its entry nor its key, nor in that reader's key."""
        tails: dict[str, int] = {}
        for name in {p for decl in self.declarations.values() for p in self.files_only(decl)}:
            decl = self.declarations[name]
            stage = self.file.stage(name) if decl.upstream else None
            if stage is None:
                continue
            claimed = {i.line for d in decl.deviations for i in claimed_in(self.file.path, stage, d)}
            for instruction in reversed(stage.instructions):
                if instruction.kind not in CONFIG_ONLY or instruction.line in claimed:
                    break
                tails[name] = instruction.line
        return tails

    def tail_step(self, stage: str) -> Step:
        """A stage's tail (tails), as written, in the scope the stage has where the tail starts."""
        walk = self.upstream(stage, StageContext(source=dag.directory(), parents={}), register=False)
        line = self.tails[stage]
        for instruction in walk.stage.instructions:  # the ARGs and ENVs above it set the scope
            if instruction.line < line and instruction.kind in ("ARG", "ENV"):
                walk.step_of(instruction)
        steps = [walk.step_of(i) for i in walk.stage.instructions if i.line >= line]

        def apply(ctr: dagger.Container) -> dagger.Container:
            for step in steps:
                ctr = step(ctr)
            return ctr

        return apply

    def key_values(self, decl: StageDeclaration, until: int | None = None) -> dict[str, str]:
        """The ARGs a stage reads (above line `until`, when given: its tail's), each with the value its RUNs
        see at its line (unset ones left out; one declared twice keyed `NAME@2`), and what only this project's
        steps read (also_reads)."""
        values: dict[str, str] = {}
        if decl.upstream:
            stage = self.file.stage(decl.name)
            above = until - 1 if until is not None else None
            for name, value in self.file.scoped_args(stage, self.passed, AUTOMATIC_VALUES, above):
                key = name if name not in values else f"{name}@{sum(k.split('@')[0] == name for k in values) + 1}"
                if value is not None:
                    values[key] = value
        if self.args.url_rewrite and (decl.upstream or decl.runs_from):
            values["url_rewrite"] = " ".join(self.args.url_rewrite)
        for other, _ in decl.runs_from:
            for name, value in self.file.stage_values(self.file.stage(other), self.passed, AUTOMATIC_VALUES).items():
                if value is not None:
                    values[f"{other}:{name}"] = value
        for name in decl.also_reads:
            values[name] = self.value(name)
        return values
