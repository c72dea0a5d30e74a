"""`git` run on the host in a checkout that may be hostile: settings given on git's command line, which win
over the checkout's own .git/config (git-config(1), "-c"), so that no program that config names runs.

The read-only commands the host runs (describe --dirty, status, rev-parse, rev-list, log) run a program of
the repository's config in these cases only, each switched off here:
- core.fsmonitor: a hook run on every index refresh (status, describe --dirty);
- hooks (core.hooksPath, .git/hooks): post-index-change runs when they rewrite the index's stat cache;
- filter.<driver>.clean/process: run when a file's stat differs from the index and its content is compared;
- log.showSignature with gpg.program: run by log to verify signatures;
- any transport (core.sshCommand, ext:: URLs, credential helpers): none is used, protocol.allow=never.
Only command-line settings do this: setuptools-scm clears GIT_* from the environment of the git it runs."""

from __future__ import annotations

import pathlib
import subprocess
from typing import Final

SAFE_SETTINGS: Final = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "log.showSignature=false",
    "protocol.allow=never",
    "credential.helper=",
    "core.pager=cat",
)
# `git -c K=V …` for each of SAFE_SETTINGS: enough for commands that read no file content (rev-parse HEAD).
SAFE_GIT: Final = ("git", *(arg for setting in SAFE_SETTINGS for arg in ("-c", setting)))
# What switches a filter driver off: empty commands, and not required (a required driver with no command fails).
FILTER_OFF: Final = ("clean=", "smudge=", "process=", "required=false")


def filter_drivers(repo: pathlib.Path) -> list[str]:
    """The filter drivers the repository's config (with its includes) defines, read as data by `git config`."""
    listed = subprocess.run(
        [*SAFE_GIT, "config", "--name-only", "--get-regexp", r"^filter\."],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = {line.removeprefix("filter.").rpartition(".")[0] for line in listed.stdout.splitlines()}
    return sorted(name for name in names if name)


def safe_git_flags(repo: pathlib.Path) -> list[str]:
    """`-c` flags for every git run in the checkout: SAFE_SETTINGS and each of its filter drivers switched off;
    ValueError when one cannot be (vllm_ci.version refuses the checkout). No vllm_ci.errors: the Buildkite step
    imports this module, and no Dagger."""
    flags = list(SAFE_GIT[1:])
    for name in filter_drivers(repo):
        if "=" in name or "\n" in name:  # `-c` splits at the first "=": this driver could not be switched off
            raise ValueError(f"its config's filter driver {name!r} cannot be switched off on git's command line")
        flags += [arg for key in FILTER_OFF for arg in ("-c", f"filter.{name}.{key}")]
    return flags
