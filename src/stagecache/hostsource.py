"""A source that is a folder of this machine, as the client uploads it (a host directory less its exclude
patterns): what a plan reads of it (its ignore file, which files it has) is answered here, with no upload, and
a build uploads the few files a stage needs of it alone. The engine uploads a whole host directory the first
time anything reads it: seconds at vLLM's size on a fresh agent, for a plan that needs none of the contents.

The patterns are matched as the engine matches them (moby's patternmatcher: the last pattern that matches a
path or a folder above it decides, `!` keeps); each pattern is cleaned and translated by docker's own Python
client (docker.utils.build.Pattern, docker.utils.fnmatch), matched case-sensitively as the engine does. That
translation has no backslash escape and reads `[!` and `[^` otherwise than Go: a pattern with one of them is
left to the engine (matchable). An engine test holds the listing equal to the engine's on a tree built to trip
it."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterator, Sequence
from typing import TypeVar

import dagger
from dagger import dag
from docker.utils.build import Pattern
from docker.utils.fnmatch import translate

from stagecache.inputs import GLOB_CHARS, literal

T = TypeVar("T")


class Excluder:
    """Which paths exclude patterns (`!` exceptions among them) leave out, as the engine decides."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = [p for p in map(Pattern, patterns) if p.dirs]  # "." alone excludes nothing
        self.regexes = [re.compile(translate(p.cleaned_pattern)) for p in self.patterns]
        # Whether any of them matches a path, in one pass: most paths match none (each regex is anchored both ends).
        self.any_regex = re.compile("|".join(f"(?:{r.pattern})" for r in self.regexes)) if self.regexes else None
        # What an exception names before its first wildcard: a walk goes into an excluded folder only
        # when an exception may keep something under it.
        self.kept_prefixes = [prefix_of(p.cleaned_pattern) for p in self.patterns if p.exclusion]

    def matched(self, path: str, above: Sequence[bool] | None = None) -> tuple[bool, ...]:
        """Which patterns match a path or a folder above it, given which match its folder or one above it."""
        above = above or [False] * len(self.patterns)
        if self.any_regex is None or self.any_regex.match(path) is None:
            return tuple(above)
        return tuple(hit or regex.match(path) is not None for hit, regex in zip(above, self.regexes))

    def decides(self, matched: Sequence[bool]) -> bool:
        """Whether a path is left out, given which patterns match it or a folder above it: the last one decides."""
        excluded = False
        if not any(matched):
            return excluded
        for pattern, hit in zip(self.patterns, matched):
            # An exclude cannot change an excluded path, nor an exception a kept one.
            if hit and pattern.exclusion == excluded:
                excluded = not excluded
        return excluded

    def excludes(self, path: str) -> bool:
        """Whether the patterns leave a path out."""
        matched: tuple[bool, ...] | None = None
        parts = path.split("/")
        for n in range(len(parts)):
            matched = self.matched("/".join(parts[: n + 1]), matched)
        return self.decides(matched or ())

    def may_keep_under(self, folder: str) -> bool:
        """Whether an exception may keep a path under a folder these patterns exclude."""
        return any(kept.startswith(folder + "/") or (folder + "/").startswith(kept) for kept in self.kept_prefixes)


def matchable(patterns: Sequence[str]) -> bool:
    """Whether patterns are matched here as the engine matches them: none holds a `\\` escape or a `[!`, `[^` class."""
    return not any("\\" in p or "[!" in p or "[^" in p for p in patterns)


def prefix_of(pattern: str) -> str:
    """A pattern's text before its first wildcard."""
    return next((pattern[:at] for at, char in enumerate(pattern) if char in GLOB_CHARS), pattern)


@dataclasses.dataclass(frozen=True)
class HostFolder:
    """A folder of this machine as the client uploads it: `root`, less what `exclude` leaves out; as a build
    context, also less what its ignore file's patterns (`ignored`) leave out of that."""

    root: str
    exclude: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()

    @functools.cached_property
    def uploaded(self) -> Excluder:
        """What the upload leaves out (`exclude`), compiled once."""
        return Excluder(self.exclude)

    def text(self, path: str) -> str | None:
        """A file's text as the upload holds it; None when it holds no such regular file."""
        full = os.path.join(self.root, path)
        inside = os.path.realpath(full).startswith(os.path.realpath(self.root) + os.sep)
        if not inside or not os.path.isfile(full) or self.uploaded.excludes(path):
            return None
        with open(full, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def holds_file(self, path: str) -> bool:
        """Whether the upload holds a file or a symlink at a path."""
        full = os.path.join(self.root, path)
        real_file = os.path.lexists(full) and (os.path.islink(full) or not os.path.isdir(full))
        return real_file and not self.uploaded.excludes(path)

    def files(self) -> list[str]:
        """The files and symlinks the upload holds, less what `ignored` leaves out, as paths relative to the root,
        sorted: what the engine lists of the upload (filtered by the ignore file's patterns)."""
        excluders = [self.uploaded, Excluder(self.ignored)]
        return sorted(self._walk("", excluders, [None] * len(excluders)))

    def _walk(self, folder: str, excluders: list[Excluder], above: list[tuple[bool, ...] | None]) -> Iterator[str]:
        """The kept files under a folder (relative; "" the root; `above`: each excluder's patterns that match it or
        a folder above it), into excluded folders only where an exception may keep something."""
        with os.scandir(os.path.join(self.root, folder)) as entries:
            for entry in entries:
                path = f"{folder}/{entry.name}" if folder else entry.name
                matched = [e.matched(path, hits) for e, hits in zip(excluders, above)]
                excluded = [e for e, hits in zip(excluders, matched) if e.decides(hits)]
                if entry.is_dir(follow_symlinks=False):
                    if all(e.may_keep_under(path) for e in excluded):
                        yield from self._walk(path, excluders, list(matched))
                elif not excluded:
                    yield path

    def only(self, paths: Sequence[str]) -> dagger.Directory:
        """These files of the folder and nothing else, uploaded alone (each path matched literally)."""
        return dag.host().directory(self.root, include=[literal(path) for path in paths], no_cache=True)


# The directories of this machine a build was given, by the object it got: a build that knows where its source is
# plans it here and uploads parts of it alone.
_ON_HOST: dict[int, tuple[object, HostFolder]] = {}


def on_host(directory: T, path: str, exclude: Sequence[str] = ()) -> T:
    """Note that a directory is the folder `path` of this machine uploaded less `exclude` (what the client
    passed to the engine); returns it."""
    return noted(directory, HostFolder(path, tuple(exclude)))


def noted(directory: T, folder: HostFolder) -> T:
    """Note that a directory is this folder of this machine; returns it."""
    _ON_HOST[id(directory)] = (directory, folder)
    return directory


def host_folder(directory: object) -> HostFolder | None:
    """The folder of this machine a directory is, if the client said so (on_host)."""
    found = _ON_HOST.get(id(directory))
    return found[1] if found is not None and found[0] is directory else None
