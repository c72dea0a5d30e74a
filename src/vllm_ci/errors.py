"""The errors a user must act on, each with its exit code; cli.main maps them to one line."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input, found before any container work (exit 2)."""

    exit_code = 2


class ConformanceFailed(Exception):
    """The stage functions do not conform to the Dockerfile (exit 1); carries the full report, so
    `dagger call`, which shows only the error, shows the report too."""

    exit_code = 1

    def __init__(self, summary: str, report: str) -> None:
        super().__init__(f"{report}\n{summary}")
        self.summary = summary
        self.report = report
