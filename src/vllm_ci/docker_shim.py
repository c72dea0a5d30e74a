"""A `docker` for an agent with no Docker daemon: `docker run [--rm] [--user U] [--entrypoint E] IMAGE [ARG...]`,
as vLLM's image-build-smoke-test step writes it, run through the module's ``run-image`` (the engine pulls the
image as for a build). Anything else is refused in one line with docker's own exit code for it, 125.
Put ``ci/docker-shim`` first on the agent's PATH for a local run only; the container's stderr is shown on failure.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

REFUSED = 125  # docker run's exit code when docker itself cannot run the container


class _Parser(argparse.ArgumentParser):
    """An argument parser that refuses in one line with exit 125."""

    def error(self, message: str) -> NoReturn:
        """One line, docker's exit code."""
        print(f"vllm-ci docker shim: error: {message}", file=sys.stderr)
        sys.exit(REFUSED)


def _parser() -> _Parser:
    """The subset of `docker run` the smoke test uses."""
    parser = _Parser(prog="docker", add_help=False, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", add_help=False, allow_abbrev=False)
    run.add_argument("--rm", action="store_true")  # always so: the engine keeps no container
    run.add_argument("-u", "--user", default="")
    run.add_argument("--entrypoint", default="")
    run.add_argument("image")
    run.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def cli_args(argv: Sequence[str]) -> list[str]:
    """The `python -m vllm_ci` arguments for a `docker run` command line (without the `docker`)."""
    parsed = _parser().parse_args(list(argv))
    if "" in parsed.args:
        _parser().error("an empty argument cannot be passed on (the module's lists drop empty items)")
    args = ["run-image", "--image", parsed.image, "--user", parsed.user, "--entrypoint", parsed.entrypoint]
    if parsed.args:
        line = io.StringIO()
        csv.writer(line, quoting=csv.QUOTE_ALL, lineterminator="").writerow(parsed.args)  # CSV, as `dagger call`
        args.append(f"--args={line.getvalue()}")
    return args


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Replace this process with `python -P -m vllm_ci run-image ...` (its output, exit code and signals)."""
    args = cli_args(sys.argv[1:] if argv is None else argv)
    os.execv(sys.executable, [sys.executable, "-P", "-m", "vllm_ci", *args])


if __name__ == "__main__":
    main()
