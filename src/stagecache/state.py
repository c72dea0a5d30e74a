"""What a stage cache learns while it plans, builds and publishes, in one object its parts share."""

from __future__ import annotations

import dataclasses
import time

from stagecache.inputs import SourceFile
from stagecache.refs import ImageRef


@dataclasses.dataclass
class BuildState:
    """The mutable state of a cache's plans and builds. It lives as long as the cache (one per
    command); a plan resets `files` and `ignored`, a build `started` and `pulled`; the rest grows."""

    # cache hits this build imported
    imported: list[ImageRef] = dataclasses.field(default_factory=list)
    # (repository ref, blob digest) already in place
    mounted: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    # stage -> why its entry could not be used
    corrupt: dict[str, str] = dataclasses.field(default_factory=dict)
    # stages whose files a stage built in this run reads
    pulled: set[str] = dataclasses.field(default_factory=set)
    # the planned source's files, as hashed on the client
    files: dict[str, SourceFile] = dataclasses.field(default_factory=dict)
    # why look-ups found nothing to use, once each
    lookup_failures: set[str] = dataclasses.field(default_factory=set)
    # the source's ignore patterns, read by each plan
    ignored: list[str] = dataclasses.field(default_factory=list)
    # hits (pinned to their digest) found without their record: sealed when used
    unsealed: set[ImageRef] = dataclasses.field(default_factory=set)
    # reset by each build: the timeline's zero
    started: float = dataclasses.field(default_factory=time.monotonic)

    def now(self) -> float:
        """Seconds since this build started, for the report's timeline."""
        return round(time.monotonic() - self.started, 3)
