"""What a stage reads, as git records it: each file's content and executable bit, and each
symlink's target. Not the umask, owner, mtime or the checkout's path, so a clone on a laptop
(umask 002) and one on a CI agent (umask 022) get the same keys.

The engine's own `Directory.digest()` covers full file modes, so the source is exported once
(into the module's container in module mode, to a temporary folder on the client otherwise) and
hashed here; the engine only says which paths each stage's include patterns select."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import posixpath
import stat
import tempfile
from collections.abc import Callable, Mapping

import dagger

from stagecache.keys import json_digest
from stagecache.report import shown_path

Manifest = Mapping[str, str]  # path -> "file:<sha256>", "exec:<sha256>" or "link:<sha256 of target>"
IGNORE_FILE = ".dockerignore"


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One file of the source as the client hashed it: its manifest entry and its size."""

    entry: str  # "file:<sha256>", "exec:<sha256>" or "link:<sha256 of target>"
    size: int  # bytes of its content (of its target, for a link)

    @property
    def sha256(self) -> str:
        """The hex sha256 of its content (of its target, for a link)."""
        return self.entry.partition(":")[2]


def ignore_patterns(text: str) -> list[str]:
    """A .dockerignore's patterns, read as BuildKit reads them (moby's ignorefile.ReadAll): comment
    lines and blanks dropped, each pattern trimmed, cleaned and made relative, `!` kept."""
    patterns: list[str] = []
    for line in text.removeprefix("\ufeff").splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            pattern = pattern.lstrip("/") if len(pattern) > 1 else pattern
        patterns.append("!" + pattern if negated else pattern)
    return patterns


def pattern_problem(pattern: str) -> str:
    """Why BuildKit's matcher (Go's filepath.Match syntax) would refuse an ignore pattern; empty: it takes it.
    An unclosed `[` class or a trailing `\\` fail there with a cache-key error that names no file."""
    chars, at = pattern.lstrip("!"), 0
    while at < len(chars):
        if chars[at] == "\\":
            if at + 1 == len(chars):
                return "it ends in a lone \\"
            at += 2
            continue
        if chars[at] == "[":
            at += 1
            if at < len(chars) and chars[at] == "^":
                at += 1
            start = at
            while at < len(chars) and (chars[at] != "]" or at == start):
                at += 2 if chars[at] == "\\" else 1
            if at >= len(chars):
                return "its [ class is not closed"
        at += 1
    return ""


def excluding_pattern(path: str, patterns: list[str]) -> str:
    """The ignore pattern that excludes a path, to name it in a message (the last one matching the path or a
    folder above it; the engine itself decides what is excluded, with BuildKit's matcher)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    found = ""
    for pattern in patterns:
        bare = pattern.removeprefix("!")
        if any(fnmatch.fnmatchcase(prefix, bare) for prefix in prefixes):
            found = "" if pattern.startswith("!") else pattern
    return found or "?"


async def context_patterns(source: dagger.Directory, ignore_file: str) -> list[str]:
    """The exclude patterns of the source's ignore file (none without one); ValueError naming the
    file, line and pattern for one BuildKit would refuse."""
    if not ignore_file or ignore_file not in await source.entries():
        return []
    return checked_patterns(await source.file(ignore_file).contents(), ignore_file)


def checked_patterns(text: str, ignore_file: str) -> list[str]:
    """The exclude patterns of an ignore file's text; ValueError naming the file and a pattern BuildKit would refuse."""
    patterns = ignore_patterns(text)
    for pattern in patterns:
        if problem := pattern_problem(pattern):
            raise ValueError(f"{ignore_file}: pattern {shown_path(pattern)} cannot be matched: {problem}")
    return patterns


def build_context(source: dagger.Directory, patterns: list[str]) -> dagger.Directory:
    """The source as BuildKit sends it as the build context: without what its ignore patterns exclude.
    The engine matches the patterns with BuildKit's own matcher (`!` exceptions included)."""
    return source.filter(exclude=patterns) if patterns else source


async def source_files(source: dagger.Directory) -> dict[str, SourceFile]:
    """Every file of a directory with its content digest, kind and size (exported here once)."""
    with tempfile.TemporaryDirectory(prefix="stagecache-source-") as folder:
        await source.export(folder)
        return files_of(folder)


def files_of(root: str) -> dict[str, SourceFile]:
    """Every file of a folder on this machine, hashed as git would record it, with its size."""
    files: dict[str, SourceFile] = {}
    for folder, dirs, names in os.walk(root):
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if recorded(info):
                files[os.path.relpath(path, root)] = file_of(path, info)
    return files


def recorded(info: os.stat_result) -> bool:
    """Whether git records what an lstat describes: a regular file or a symlink (not a folder or a device)."""
    return stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)


def file_of(path: str, info: os.stat_result) -> SourceFile:
    """One file git records (see recorded) as it records it, given its lstat: a symlink by its target, a
    file by its content and the owner's x bit."""
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path).encode()
        return SourceFile("link:" + hashlib.sha256(target).hexdigest(), len(target))
    kind = "exec" if info.st_mode & stat.S_IXUSR else "file"  # git's rule: the owner's x bit
    with open(path, "rb") as handle:
        return SourceFile(f"{kind}:{hashlib.file_digest(handle, 'sha256').hexdigest()}", info.st_size)


def manifest_of(root: str) -> dict[str, str]:
    """The manifest of a folder on this machine: path -> entry."""
    return {path: file.entry for path, file in files_of(root).items()}


async def selected(source: dagger.Directory, include: list[str], manifest: Manifest) -> dict[str, str]:
    """The part of a manifest that include patterns select: here when each is a plain path (plain_selector),
    else with the engine's own pattern matching."""
    if not include:
        return {}
    if (selects := plain_selector(include)) is not None:
        return {path: entry for path, entry in sorted(manifest.items()) if selects(path)}
    paths = await source.filter(include=include).glob("**")
    return {path: manifest[path] for path in sorted(paths) if path in manifest}


GLOB_CHARS = frozenset("*?[\\")


def literal(path: str) -> str:
    """A pattern that matches a path and only it: the pattern characters of the engine's matcher escaped."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in path)


def plain_selector(include: list[str]) -> Callable[[str], bool] | None:
    """Which paths include patterns select, when every pattern is `**` (everything), `PATH/**` (everything
    under a folder) or a plain path relative to the root (a file, or a folder and everything under it, with
    or without a trailing `/`), as the engine's include filter selects them; None when one holds another
    wildcard, a `..`, a `.`, an empty component or is absolute: the engine matches those. One listing then
    serves every stage, instead of a filter and a listing in the engine each."""
    if "**" in include:
        return lambda path: True
    exact: set[str] = set()
    folders: list[str] = []
    for pattern in include:
        under = pattern.endswith("/**")
        path = pattern.removesuffix("/**") if under else pattern.rstrip("/")
        if not path or path.startswith("/") or GLOB_CHARS & set(path) or {"", ".", ".."} & set(path.split("/")):
            return None
        folders.append(path + "/")
        if not under:
            exact.add(path)
    prefixes = tuple(folders)
    return lambda path: path in exact or path.startswith(prefixes)


def manifest_digest(manifest: Manifest) -> str:
    """One digest for a manifest: sha256 of its canonical JSON."""
    return "sha256:" + json_digest(dict(manifest))
