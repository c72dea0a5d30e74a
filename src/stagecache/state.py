"""What a stage cache learns while it plans, builds and publishes, in one object its parts share."""

from __future__ import annotations

import dataclasses
import time

from stagecache.inputs import SourceFile
from stagecache.registry import ImageRef


@dataclasses.dataclass
class BuildState:
    """The mutable state of a cache's plans and builds. It lives as long as the cache (one per
    command); a plan resets `files` and `ignored`, a build `started` and `pulled`; the rest grows."""

    imported: list[ImageRef] = dataclasses.field(default_factory=list)  # cache hits this build imported
    mounted: set[tuple[str, str]] = dataclasses.field(
        default_factory=set
    )  # (repository ref, blob digest) already in place
    corrupt: dict[str, str] = dataclasses.field(default_factory=dict)  # stage -> why its entry could not be used
    pulled: set[str] = dataclasses.field(default_factory=set)  # stages whose files a stage built in this run reads
    files: dict[str, SourceFile] = dataclasses.field(
        default_factory=dict
    )  # the planned source's files, as hashed on the client
    lookup_failures: set[str] = dataclasses.field(default_factory=set)  # why look-ups found nothing to use, once each
    ignored: list[str] = dataclasses.field(default_factory=list)  # the source's ignore patterns, read by each plan
    unsealed: set[str] = dataclasses.field(
        default_factory=set
    )  # hits (ref@digest) found without their record: sealed when used
    started: float = dataclasses.field(default_factory=time.monotonic)  # reset by each build: the timeline's zero

    def now(self) -> float:
        """Seconds since this build started, for the report's timeline."""
        return round(time.monotonic() - self.started, 3)
