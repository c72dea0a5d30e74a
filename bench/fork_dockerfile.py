"""vLLM's real docker/Dockerfile as a fork runs it on this machine: upstream's file, byte for byte,
except the few commands upstream hard-codes with no ARG (the project's portable arguments, whose
defaults are upstream's exact text); the fork's values for them, and for every upstream ARG its
args file sets, come from that file. What BuildKit builds when the bench compares like with like."""

from __future__ import annotations

import dataclasses

from tools import BenchError
from vllm_ci.args import PORTABLE_COMMANDS, PROJECT_ARGS, arg_defaults, read_args_file
from vllm_ci.conformance import arg_items, normalise, parse


@dataclasses.dataclass(frozen=True)
class Fork:
    """The Dockerfile to build and the build args to pass it."""

    dockerfile: str
    build_args: dict[str, str]


def fork(upstream: str, args_file: str) -> Fork:
    """Upstream's Dockerfile with the args file's portable commands in place of upstream's, and the
    args file's other flags as build args under upstream's ARG names. A BenchError when the two do
    not fit (a portable command not found once, an ARG upstream does not declare)."""
    flags = read_args_file(args_file)
    defaults = arg_defaults()
    commands = parse(upstream, "docker/Dockerfile")
    lines = upstream.splitlines(keepends=True)
    for name in PORTABLE_COMMANDS:
        if flags.get(name, defaults[name]) == defaults[name]:
            continue
        found = [c for c in commands if defaults[name] in normalise(c.original)]
        if len(found) != 1:
            raise BenchError(f"{name}: upstream's command is in {len(found)} instructions, not one")
        command = found[0]
        lines[command.start_line - 1] = normalise(command.original).replace(defaults[name], flags[name]) + "\n"
        for index in range(command.start_line, command.end_line):
            lines[index] = ""
    declared = {arg.lower(): arg for c in commands if c.cmd == "ARG" for arg, _ in arg_items(c)}
    build_args = {}
    for name, value in flags.items():
        if name in PROJECT_ARGS:
            continue
        if name not in declared:
            raise BenchError(f"--{name.replace('_', '-')}: upstream's Dockerfile declares no ARG {name.upper()}")
        build_args[declared[name]] = value
    return Fork("".join(lines), build_args)
