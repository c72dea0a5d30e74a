"""What a build did, per stage: hit or miss, which ref, seconds, bytes — as a table and as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Final, TextIO

import cattrs
import cattrs.cols

from stagecache.refs import ImageRef


def one_line(text: str) -> str:
    """Text as one line of a log: each character that is not printable (a newline, one of the other line
    breaks Python and terminals honour: \\x1c-\\x1e, \\x85, \\u2028) written as its escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def shown_path(path: str) -> str:
    """A path as one log line shows it: as is, or quoted with escapes when it holds a newline or
    another character that is not printable (a file name can hold any byte but / and NUL)."""
    return path if path.isprintable() else repr(path)


@dataclasses.dataclass
class StageRecord:
    """One stage's outcome in one build."""

    stage: str
    key: str
    outcome: str  # "hit", "exported" (built and exported), "built" (no cache to write), "export-failed", "unused"
    ref: ImageRef | None = None  # the cache entry that hit, or the one written (pinned to its digest)
    build_seconds: float = 0.0
    export_seconds: float = 0.0
    bytes_pulled: int | None = None  # measured at the registry, when a meter is attached
    bytes_pushed: int | None = None
    note: str = ""
    why: str = ""  # for a stage that was built: what changed since the newest cache entry of it
    # Timeline, in seconds since the build started: planned (queued for its parents), running
    # (its own work; pulls of what it needs happen inside), built, then ended (exported, if it was).
    queued_at: float | None = None
    started_at: float | None = None
    built_at: float | None = None
    ended_at: float | None = None


@dataclasses.dataclass
class BuildReport:
    """A build's stages in build order, the image it produced and the time it took."""

    target: str
    stages: list[StageRecord] = dataclasses.field(default_factory=list)
    image: ImageRef | None = None  # the image published, pinned to its digest
    total_seconds: float = 0.0
    traffic: dict[str, int] | None = None  # bytes through the registry for the whole run, when measured
    registry_retries: int = 0  # registry requests asked again after a 429, a 5xx or a reset
    lookup_failures: list[str] = dataclasses.field(default_factory=list)  # why look-ups found nothing

    def record(self, name: str) -> StageRecord:
        """The record of a stage by name."""
        return next(r for r in self.stages if r.stage == name)

    def outcomes(self) -> dict[str, str]:
        """Stage name to outcome."""
        return {r.stage: r.outcome for r in self.stages}

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "target": self.target,
            "image": str(self.image or ""),
            "total_seconds": round(self.total_seconds, 3),
            "dominated_by": self.dominated_by(),
            "traffic": self.traffic,
            "headline": self.headline(),
            "registry_retries": self.registry_retries,
            "lookup_failures": self.lookup_failures,
            "stages": [dataclasses.asdict(r) | {"ref": str(r.ref or "")} for r in self.stages],
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BuildReport:
        """Read a report written by to_json; ValueError naming the first field that is wrong."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildReport:
        """Read a report as to_dict gives it (keys it does not know are passed over, as its derived
        ones: headline, dominated_by); ValueError naming the first field that is missing or mistyped."""
        try:
            return _READER.structure(data, cls)
        except cattrs.BaseValidationError as err:
            raise ValueError("; ".join(cattrs.transform_error(err)[:2])) from None

    def headline(self) -> str:
        """The first line: how many stages came from the cache, and why look-ups failed if they did."""
        hits = sum(r.outcome == "hit" for r in self.stages)
        failed = f": {'; '.join(self.lookup_failures)}" if self.lookup_failures else ""
        return f"{hits}/{len(self.stages)} stages from cache{failed}"

    def dominated_by(self) -> str:
        """The stage and phase that took longest, in words."""
        if not self.stages:
            return ""
        slowest = max(self.stages, key=lambda r: r.build_seconds + r.export_seconds)
        phase = "export" if slowest.export_seconds > slowest.build_seconds else "build"
        return f"{slowest.stage} {phase} ({slowest.build_seconds + slowest.export_seconds:.1f} s)"

    def rows(self) -> list[list[str]]:
        """Table rows: header first."""
        rows = [["stage", "outcome", "ref", "build s", "export s", "pulled", "pushed", "why built; note"]]
        for r in self.stages:
            why = r.why if r.outcome != "hit" else ""
            rows.append(
                [
                    r.stage,
                    r.outcome,
                    r.ref.short(host=False) if r.ref else "",
                    f"{r.build_seconds:.1f}",
                    f"{r.export_seconds:.1f}",
                    human_bytes(r.bytes_pulled),
                    human_bytes(r.bytes_pushed),
                    "; ".join(filter(None, [why, r.note])),
                ]
            )
        return rows

    def table(self) -> str:
        """A plain-text table for a terminal or a log, with the totals under it."""
        return self.headline() + "\n" + text_table(self.rows()) + "\n" + self._summary()

    def markdown(self) -> str:
        """A markdown table (for a Buildkite annotation or a PR comment)."""
        return self.headline() + "\n\n" + markdown_table(self.rows()) + "\n\n" + self._summary()

    def timeline(self) -> str:
        """Per stage: waiting for parents, running, exporting, in seconds since the build started."""
        rows = [["stage", "queued", "running", "exporting", "critical"]]
        last = max((r.ended_at or 0.0 for r in self.stages), default=0.0)
        for r in self.stages:
            rows.append(
                [
                    r.stage,
                    span(r.queued_at, r.started_at),
                    span(r.started_at, r.built_at),
                    span(r.built_at, r.ended_at) if r.outcome != "built" else "-",
                    "*" if r.ended_at is not None and r.ended_at == last and last > 0 else "",
                ]
            )
        return text_table(rows)

    def _summary(self) -> str:
        """One line: total time, what dominated, bytes moved."""
        hits = sum(r.outcome == "hit" for r in self.stages)
        moved = (
            f"; registry traffic: pulled {human_bytes(self.traffic['pulled'])}, pushed {human_bytes(self.traffic['pushed'])}"
            if self.traffic
            else ""
        )
        retried = f"; {self.registry_retries} registry requests retried" if self.registry_retries else ""
        return (
            f"total {self.total_seconds:.1f} s, {hits}/{len(self.stages)} stages from cache, "
            f"dominated by {self.dominated_by() or 'nothing'}{moved}{retried}"
        )


def _strict(*kinds: type) -> Callable[[Any, type], Any]:
    """A cattrs hook that takes a value only of these JSON types, a number only when finite: cattrs
    itself converts ("3" to 3.0, anything to a string), so a mistyped field would pass."""

    def structure(value: Any, kind: type) -> Any:
        infinite = isinstance(value, float) and not math.isfinite(value)
        if not isinstance(value, kinds) or isinstance(value, bool) or infinite:
            raise ValueError(f"not a {'finite number' if float in kinds else kind.__name__}: {value!r}"[:80])
        return kind(value)

    return structure


def _reader() -> cattrs.Converter:
    """The converter that reads reports: types checked field by field from the dataclasses' own
    hints (cattrs, dagger-io's own dependency), so the record types are the one schema."""
    reader = cattrs.Converter(forbid_extra_keys=False)
    reader.register_structure_hook(str, _strict(str))
    reader.register_structure_hook(int, _strict(int))
    reader.register_structure_hook(float, _strict(int, float))
    # A report read back is where its refs enter again: parsed here, once ("" is none).
    reader.register_structure_hook_func(lambda kind: kind == ImageRef | None, _image_ref)

    def strict_list(kind: type) -> Callable[[Any, type], Any]:
        items = cattrs.cols.list_structure_factory(kind, reader)

        def structure(value: Any, kind: type) -> Any:
            if not isinstance(value, list):
                raise ValueError(f"not a list: {value!r}"[:80])
            return items(value, kind)

        return structure

    reader.register_structure_hook_factory(lambda kind: typing.get_origin(kind) is list, strict_list)
    return reader


def _image_ref(value: Any, kind: type) -> ImageRef | None:
    """A ref of a report read back: a fully qualified reference, or "" (or null) for none."""
    if value in ("", None):
        return None
    if not isinstance(value, str):
        raise ValueError(f"not an image reference: {value!r}"[:80])
    return ImageRef.parse(value)


_READER: Final = _reader()


def span(start: float | None, end: float | None) -> str:
    """A timeline interval in seconds, or '-' when the phase did not happen."""
    return "-" if start is None or end is None or end <= start else f"{start:.1f}-{end:.1f}"


def text_table(rows: list[list[str]]) -> str:
    """Rows (header first) as aligned plain text, with a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    """Rows (header first) as a markdown table."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def human_bytes(value: int | None) -> str:
    """Bytes as B/kB/MB/GB, or '-' when not measured."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class Progress:
    """A live view of a build: one line when a stage starts and one when it ends, with its outcome,
    seconds and bytes pushed. With `groups`, each stage opens a Buildkite log group (`--- `) and a
    failure re-opens it (`^^^ +++`), so the failing stage's output is the one expanded.

    `Progress.running` names the stages building right now in this process, for whoever must say
    what a build was doing when it stopped (the client command, when the engine dies)."""

    running: ClassVar[list[str]] = []

    def __init__(self, stream: TextIO = sys.stderr, groups: bool = False):
        self.stream, self.groups = stream, groups

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def hit(self, stage: str, ref: ImageRef) -> None:
        """A stage imported from the cache: nothing runs."""
        self._line(f"stage {stage}: hit {ref.short(host=False)}")

    def started(self, stage: str, why: str) -> None:
        """A stage starts building."""
        prefix = "--- " if self.groups else ""
        Progress.running.append(stage)
        self._line(f"{prefix}stage {stage}: building" + (f" ({why})" if why else ""))

    def ended(self, record: StageRecord) -> None:
        """A stage ends: its outcome, seconds (from its timeline) and what its export pushed."""
        seconds = (record.ended_at or 0.0) - (record.started_at or 0.0)
        pushed = f", pushed {human_bytes(record.bytes_pushed)}" if record.bytes_pushed is not None else ""
        _forget(record.stage)
        self._line(f"stage {record.stage}: {record.outcome} in {seconds:.1f} s{pushed}")

    def failed(self, stage: str) -> None:
        """A stage failed: in Buildkite, expand its group."""
        if self.groups:
            self._line("^^^ +++")
        _forget(stage)
        self._line(f"stage {stage}: failed")


def _forget(stage: str) -> None:
    """A stage is no longer building."""
    if stage in Progress.running:
        Progress.running.remove(stage)
