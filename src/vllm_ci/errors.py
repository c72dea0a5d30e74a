"""The failures a user acts on, as kinds of the one error type (stagecache's StageError), each
with its exit code; cli.main maps every one to one line. Exit codes (README, "Exit codes"):
0 done, 1 a build, cache, engine or conformance failure, 2 bad input, 3 unexpected, 130 interrupted."""

from __future__ import annotations

from stagecache.errors import InputError, StageError


class UsageError(InputError):
    """Bad input, found before any container work (exit 2), as the command line names it."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message, phase="usage", output=output)
        # Shown as given: the message names the flag or file at fault. A detail (a diff) is shown before
        # it, also by `dagger call`, which shows only the error.
        self.args = (f"{output}\n{message}" if output else message,)

    def __str__(self) -> str:
        return str(self.args[0])


class ConformanceFailed(StageError):
    """The stage functions do not conform to the Dockerfile (exit 1). The message carries the whole
    report too, so `dagger call`, which shows only the error, shows the report."""

    def __init__(self, summary: str, report: str) -> None:
        super().__init__(summary, phase="conformance", output=report)
        self.summary = summary
        self.args = (f"{report}\n{summary}",)

    def __str__(self) -> str:
        return str(self.args[0])
