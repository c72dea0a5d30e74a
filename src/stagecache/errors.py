"""The stage cache's one user-facing error type, and the words its messages put failures in:
a failed command, a refused push, an image the engine cannot use, a bad reference."""

from __future__ import annotations

import re
from typing import TextIO

import dagger

from stagecache.redact import without_userinfo


class StageError(Exception):
    """The one user-facing failure: one line naming the phase, the stage, its key and the ref
    involved, an exit code, and optionally a longer output (a report) to show before that line."""

    exit_code = 1

    def __init__(
        self, message: str, *, stage: str = "", key: str = "", ref: str = "", phase: str = "build", output: str = ""
    ):
        self.stage, self.key, self.ref, self.phase, self.output = stage, key, ref, phase, output
        where = ", ".join(p for p in (f"stage {stage}" if stage else "", f"key {key[:12]}" if key else "", ref) if p)
        super().__init__(f"{phase}: {message}" + (f" ({where})" if where else ""))


class InputError(StageError):
    """Bad input, found before any container work (exit 2): a reference, an ignore file, an argument."""

    exit_code = 2


def first_stage_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from concurrent stages' failures: the first StageError in the (possibly
    nested) group; the group itself when none is one."""
    for error in group.exceptions:
        found = first_stage_error(error) if isinstance(error, BaseExceptionGroup) else error
        if isinstance(found, StageError):
            return found
    return group


def unusable_reason(message: str) -> str:
    """What the engine said of an image it could not use, in a few words."""
    if corrupt := re.search(r"unexpected commit digest \S+, expected (sha256:[0-9a-f]{64})", message):
        return f"layer {corrupt[1][:19]} is corrupt (its bytes do not match its digest)"
    # "failed to resolve image \"<ref>\": <cause>": the ref is already named; keep the cause.
    first = re.sub(r'image "[^"]*"', "image", message.splitlines()[0])
    return first if len(first) <= 300 else first[:140] + " … " + first[-150:]


def exec_summary(err: dagger.ExecError) -> str:
    """A failed command in one line, with the last lines of its error output, URL credentials blanked."""
    tail = " | ".join(line for line in (err.stderr or "").strip().splitlines()[-5:])
    return without_userinfo(f"command {' '.join(err.command)!r} exited {err.exit_code}" + (f": {tail}" if tail else ""))


def export_failure(err: dagger.QueryError, registry: str) -> str:
    """Why a publish failed, in words a user can act on."""
    text = str(err)
    # \b: a bare "401" also occurs inside the sha256 digests and cache keys the engine's message quotes.
    if re.search(r"\b401\b", text) or "unauthorized" in text.lower() or "unexpected status from HEAD request" in text:
        return f"registry {registry} refused the push (401?): credentials needed or refused"
    if "connection refused" in text or "no such host" in text or "dial tcp" in text:
        return f"registry {registry} unreachable"
    if status := re.search(r"unexpected status from (\w+) request to \S+: ([^\n]+)", text):
        # The status is at the end, after a long URL: keep it, not the first 300 characters.
        return f"registry {registry} answered {status[2].strip()[:100]} to a {status[1]} of the push"
    return text.splitlines()[0][:300]


def warn(log: TextIO, message: str) -> None:
    """One line on the log stream, URL credentials blanked."""
    print(without_userinfo(message), file=log, flush=True)
