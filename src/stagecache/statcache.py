"""A checkout's files hashed on the machine that holds it, each hash reused while the file is unchanged, as
git's index does: an entry is reused only while the file's size, mtime, ctime, inode and mode are the ones it
was hashed at, and never when the file's mtime is not older than the cache itself ("racily clean", git's rule:
an edit in the same clock tick as the cache's write could keep every stat field). One cache file per checkout,
under the user's cache folder, never inside the checkout."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import time
from collections.abc import Iterable

from stagecache.inputs import SourceFile, file_of, recorded

# An entry is racily clean when its mtime is within this of the cache's write (coarse filesystem clocks:
# FAT keeps 2 s, ext3 and HFS+ 1 s); it is hashed again on the next run.
RACY_WINDOW_NS = 2_000_000_000
VERSION = 1


def cache_path(root: str) -> pathlib.Path:
    """Where the stat cache of a checkout lives: the user's cache folder, one file per checkout path."""
    base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    name = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:24]
    return base / "vllm-ci" / "stat" / f"{name}.json"


def stat_key(info: os.stat_result) -> list[int]:
    """What must be unchanged for a hash to be reused: size, mtime, ctime, inode and mode."""
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_mode]


def hashed_files(root: str, paths: Iterable[str], cache: pathlib.Path | None = None) -> dict[str, SourceFile]:
    """The files among `paths` (relative to root, as the engine lists them) as git records them, hashing only
    those the stat cache cannot vouch for, and the cache rewritten for the next run. Folders, missing paths and
    paths under a symlinked folder are skipped, as an export of the same directory would have them."""
    cache = cache or cache_path(root)
    written, known = load(cache)
    entries: dict[str, list] = {}
    files: dict[str, SourceFile] = {}
    real_folders: dict[str, bool] = {}
    hashed = 0
    for path in (p.rstrip("/") for p in paths):
        if not in_real_folder(root, path, real_folders):
            continue
        try:
            info = os.lstat(os.path.join(root, path))
        except FileNotFoundError:
            continue
        if not recorded(info):
            continue  # a folder (the engine lists them too) or a device: not in a manifest
        key = stat_key(info)
        cached = known.get(path)
        if cached is not None and cached[:5] == key and info.st_mtime_ns < written - RACY_WINDOW_NS:
            file = SourceFile(cached[5], cached[6])
        else:
            file = file_of(os.path.join(root, path), info)
            hashed += 1
        files[path] = file
        entries[path] = [*key, file.entry, file.size]
    if hashed or entries.keys() != known.keys():  # else the cache vouched for every file as it is: not rewritten
        save(cache, entries)
    return files


def in_real_folder(root: str, path: str, seen: dict[str, bool]) -> bool:
    """Whether a path's folders under root are all real folders (none a symlink), memoised in `seen`."""
    folder = os.path.dirname(path)
    if not folder:
        return True
    if folder not in seen:
        seen[folder] = in_real_folder(root, folder, seen) and not os.path.islink(os.path.join(root, folder))
    return seen[folder]


def load(cache: pathlib.Path) -> tuple[int, dict[str, list]]:
    """A stat cache's write time (ns) and entries; an unreadable or foreign one is empty."""
    try:
        data = json.loads(cache.read_text())
        if data.get("version") == VERSION:
            return int(data["written_ns"]), dict(data["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return 0, {}


def save(cache: pathlib.Path, entries: dict[str, list]) -> None:
    """Write a stat cache atomically, stamped with the time of writing; a cache that cannot be written is skipped."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache.parent, delete=False, suffix=".tmp") as handle:
            # dumps, not dump: json.dump writes through the pure-Python encoder, 8x slower at a checkout's size
            handle.write(json.dumps({"version": VERSION, "written_ns": time.time_ns(), "entries": entries}))
        os.replace(handle.name, cache)
    except OSError:
        pass
