"""vLLM's real Dockerfile (the one the args file names: docker/Dockerfile, or docker/Dockerfile.cpu) as a fork
runs it on this machine: upstream's file, byte for byte, except the few commands upstream hard-codes with no ARG
(the portable deviations the stage functions declare, vllm_ci.deviations.Deviation.portable), each replaced as
ours replaces it when the args file sets its argument, and a FROM image the args file rewrites (--image-rewrite,
a mirror's copy); the args file's --build-arg values are the build args. What BuildKit builds when the bench
compares like with like."""

from __future__ import annotations

import dataclasses

import dockerfile
from dagger import dag

from stagecache import StageContext
from tools import BenchError
from vllm_ci import stages  # noqa: F401  (the stage functions, each declaring its deviations)
from vllm_ci.args import BuildArgs, read_args_file
from vllm_ci.build import Build
from vllm_ci.declare import stage_set_for
from vllm_ci.errors import UsageError
from vllm_ci.upstream_file import Instruction, UpstreamFile


@dataclasses.dataclass(frozen=True)
class Fork:
    """The Dockerfile to build and the build args to pass it."""

    dockerfile: str
    build_args: dict[str, str]


def replaced(upstream: str, args_file: str) -> list[tuple[str, Instruction, str]]:
    """Each instruction of upstream's Dockerfile a portable command of the args file replaces: its stage,
    the instruction, and the script ours runs instead (AsWritten.portable_script). A BenchError when the
    two do not fit (a flag that is no constructor argument, an ARG upstream does not declare, a deviation
    whose anchor names no instruction or several)."""
    try:
        args = BuildArgs(**read_args_file(args_file))
        build = Build(args, UpstreamFile.parse(upstream, args.dockerfile))
    except (ValueError, UsageError) as err:
        raise BenchError(str(err)) from None
    portable = build.args.portable()
    found = []
    for decl in stage_set_for(args.dockerfile).declared.values():
        deviations = [d for d in decl.deviations if d.portable and portable[d.portable]]
        if not decl.upstream or not deviations:
            continue
        try:
            walk = build.upstream(decl.name, StageContext(dag.directory(), {}), register=False)
            for deviation in deviations:
                instruction = walk.anchored(deviation)
                found.append((decl.name, instruction, walk.portable_script(instruction)))
        except (KeyError, UsageError) as err:
            raise BenchError(f"stage {decl.name}: {err}") from None
    return found


def fork(upstream: str, args_file: str) -> Fork:
    """Upstream's Dockerfile with the args file's portable commands in place of upstream's (each
    instruction rewritten as one line, its continuation lines dropped), and the args file's --build-arg
    values as build args, exactly as given."""
    ends = {command.start_line: command.end_line for command in dockerfile.parse_string(upstream)}
    lines = upstream.splitlines(keepends=True)
    for stage, instruction, script in replaced(upstream, args_file):
        if instruction.kind != "RUN" or instruction.json or "\n" in script:
            raise BenchError(f"stage {stage}: line {instruction.line} is no one-line shell-form RUN to replace")
        lines[instruction.line - 1] = " ".join(["RUN", *instruction.flags, script]) + "\n"
        for index in range(instruction.line, ends[instruction.line]):
            lines[index] = ""
    args = BuildArgs(**read_args_file(args_file))
    for old, new in args.image_rewrites().items():  # `FROM old AS x` -> `FROM new AS x`, as a mirror's fork has it
        lines = [
            f"FROM {new}{line[len(f'FROM {old}') :]}" if line.startswith(f"FROM {old} ") else line for line in lines
        ]
    return Fork("".join(lines), args.passed())
