"""vLLM's stages as data for the stage cache, from each stage function's one declaration (declare.py)
and the Dockerfile being built: parents, the source files it reads (its filter and its key's input),
the ARG values its RUNs see and the text of its instructions (its key), its code fingerprint."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import dagger
from dagger import dag

from stagecache import Stage, StageContext, Tail
from stagecache.errors import StageError
from stagecache.fingerprint import code_fingerprint
from stagecache.stages import BuildFunction, ordered
from vllm_ci import stages
from vllm_ci.build import Build
from vllm_ci.declare import StageDeclaration, StageSet
from vllm_ci.instructions import INDEX_NETRC


def targets(stage_set: StageSet) -> tuple[str, ...]:
    """The stages a build of a stage set can target, as the file names them."""
    return tuple(stage_set.declared)


# The packages whose code a stage's fingerprint follows.
OWN_CODE = ("vllm_ci",)


def include_patterns(reads: tuple[str, ...]) -> tuple[str, ...]:
    """A stage's reads as include patterns: a folder ("cmake/") is everything under it, "." all of the
    source, a glob itself, and a path the file names without saying which it is both a file and a folder."""
    patterns: list[str] = []
    for path in (p.removeprefix("./") for p in reads):
        if path in (".", "", "**"):
            patterns.append("**")
        elif path.endswith("/") or any(c in path for c in "*?["):
            patterns.append(path + "**" if path.endswith("/") else path)
        else:
            patterns += [path, path + "/**"]
    return tuple(dict.fromkeys(patterns))


def steps_of(decl: StageDeclaration, build: Build, until: int | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """An upstream stage's instructions (above line `until`, when given: its tail's) as its key reads them,
    label ("RUN 3": the third RUN) -> digest, and where each is now ("line 912"); ARG lines are in the key as
    their values instead."""
    steps: dict[str, str] = {}
    notes: dict[str, str] = {}
    stage = build.file.stage(decl.name) if decl.upstream else None
    if stage is not None:
        steps["FROM"] = build.from_image(decl.name) if not decl.parents else stage.base
        notes["FROM"] = f"line {stage.line}"
    seen: dict[str, int] = {}
    for instruction in stage.instructions if stage is not None else ():
        if instruction.kind == "ARG":
            continue
        seen[instruction.kind] = seen.get(instruction.kind, 0) + 1
        label = f"{instruction.kind} {seen[instruction.kind]}"
        if until is None or instruction.line < until:
            steps[label], notes[label] = instruction.digest, f"line {instruction.line}"
    counted: dict[tuple[str, str], int] = {}
    for other, deviation in decl.runs_from:
        for instruction in build.instructions_run_from(other, deviation):
            counted[other, instruction.kind] = counted.get((other, instruction.kind), 0) + 1
            label = f"{other} {instruction.kind} {counted[other, instruction.kind]}"
            steps[label], notes[label] = instruction.digest, f"line {instruction.line}"
    return steps, notes


def tail_of(decl: StageDeclaration, build: Build, steps: Mapping[str, str], values: Mapping[str, str]) -> Tail:
    """A stage's tail (Build.tails) for the cache: its steps, and the steps and values of its key that its
    entry's key (`steps`, `values`) leaves out."""
    every_step, _ = steps_of(decl, build)
    return Tail(
        build.tail_step(decl.name),
        args={name: value for name, value in build.key_values(decl).items() if name not in values},
        steps={label: digest for label, digest in every_step.items() if label not in steps},
    )


def walked(decl: StageDeclaration, build: Build) -> BuildFunction:
    """The stage function, given its view of the build (Build.for_stage), and checked when it returns: an
    upstream stage's function must have walked every instruction of the stage (instructions.AsWritten.walk),
    or the build fails naming the stage."""

    async def run(ctx: StageContext) -> dagger.Container:
        # The parents by the names the stage function knows them by (the file's), not the cache's.
        cache_name = build.stage_set.cache_name
        named = {name: ctx.parents[cache_name(name)] for name in decl.parents if cache_name(name) in ctx.parents}
        result = await decl.function(build, dataclasses.replace(ctx, parents=named))
        if decl.upstream and not (decl.name in build.walks and build.walks[decl.name].complete()):
            raise StageError(
                f"stage {decl.name}: its function did not walk every instruction of {build.file.path}'s stage "
                f"(an instruction neither run as written nor deviated)",
                phase="build",
            )
        return result

    return run


def stage_graph(build: Build) -> list[Stage]:
    """Every stage of the build's stage set, wired to its stage function with this build, parents before
    children, named as the cache names them (StageSet.cache_name: the set in every key and tag)."""
    graph = []
    cache_name = build.stage_set.cache_name
    for decl in build.declarations.values():
        until = build.tails.get(decl.name)  # its entry's key stops above its tail
        steps, notes = steps_of(decl, build, until)
        values = build.key_values(decl, until)  # resolved once: the key and the function's view read these
        graph.append(
            Stage(
                name=cache_name(decl.name),
                function=walked(decl, build.for_stage(decl, values)),
                parents=tuple(map(cache_name, decl.parents)),
                reads=include_patterns(build.reads(decl)),
                args=values,
                code=code_fingerprint(decl.function, OWN_CODE),
                not_read=tuple(map(cache_name, decl.not_read)),
                steps=steps,
                step_notes=notes,
                incremental=decl.incremental,
                tail=tail_of(decl, build, steps, values) if until is not None else None,
                files_only=tuple(map(cache_name, build.files_only(decl))),
            )
        )
    by_name = {s.name: s for s in graph}
    return list({s.name: s for each in graph for s in ordered(by_name, each.name)}.values())


async def secrets_of(
    aws_access_key_id: dagger.Secret | None,
    aws_secret_access_key: dagger.Secret | None,
    index_netrc: dagger.Secret | None = None,
) -> dict[str, dagger.Secret]:
    """The build's secrets by the id the RUNs mount them with: the AWS keys as the one credentials file
    sccache reads (--mount=type=secret,id=aws-credentials), made as a secret; the private-index netrc as
    given (every RUN run as written mounts it, instructions.INDEX_NETRC). No text of either reaches a
    layer, a log, a key or the report."""
    secrets = {INDEX_NETRC: index_netrc} if index_netrc is not None else {}
    if aws_access_key_id is None or aws_secret_access_key is None:
        return secrets
    text = (
        f"[default]\naws_access_key_id = {await aws_access_key_id.plaintext()}\n"
        f"aws_secret_access_key = {await aws_secret_access_key.plaintext()}\n"
    )
    return {**secrets, stages.AWS_CREDENTIALS: dag.set_secret(stages.AWS_CREDENTIALS, text)}
