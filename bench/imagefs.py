"""An image's filesystem as its layers leave it (whiteouts applied), read from the registry, and the
difference of two: what a test needs to prove two builds produce the same files."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import posixpath
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import zstandard

from stagecache.registry import ImageRef, connect
from stagecache.traffic import layers_lacking

OPAQUE = ".wh..wh..opq"
WHITEOUT = ".wh."


@dataclasses.dataclass(frozen=True)
class Entry:
    """One path of an image: its kind, mode, owner, and content (a file's sha256, a link's target)."""

    kind: str
    mode: int
    uid: int
    gid: int
    content: str

    def describe(self) -> str:
        """The entry in one short phrase, for a difference line."""
        return f"{self.kind} {self.mode:o} {self.uid}:{self.gid} {self.content[:19]}"


@dataclasses.dataclass
class ImageFiles:
    """An image's final filesystem (path -> entry, paths relative to /), its config, and the bytes of
    the files asked to be kept."""

    files: dict[str, Entry]
    config: dict[str, Any]
    kept: dict[str, bytes] = dataclasses.field(default_factory=dict)


def _kind(member: tarfile.TarInfo) -> str:
    """A tar member's kind."""
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    return "file" if member.isfile() else "other"


def _remove_under(files: dict[str, Entry], folder: str, itself: bool) -> None:
    """Drop every path under a folder (and the folder itself, if asked)."""
    prefix = folder + "/" if folder else ""
    for path in [p for p in files if p.startswith(prefix) or (itself and p == folder)]:
        del files[path]


def apply_layer(
    files: dict[str, Entry],
    archive: tarfile.TarFile,
    keep: Callable[[str], bool] = lambda path: False,
    kept: dict[str, bytes] | None = None,
) -> None:
    """Apply one layer's tar to the filesystem so far, as an OCI runtime unpacks it (whiteouts
    included); the bytes of files `keep` selects go to `kept`."""
    for member in archive:
        path = posixpath.normpath(member.name.lstrip("/")).removeprefix("./")
        if path in (".", ""):
            continue
        folder, name = posixpath.split(path)
        if name == OPAQUE:
            _remove_under(files, folder, itself=False)
            continue
        if name.startswith(WHITEOUT):
            _remove_under(files, posixpath.join(folder, name[len(WHITEOUT) :]), itself=True)
            continue
        kind = _kind(member)
        if kind != "dir" and path in files and files[path].kind == "dir":
            _remove_under(files, path, itself=True)
        if kind == "file":
            extracted = archive.extractfile(member)
            assert extracted is not None
            digest, chunks, keeping = hashlib.sha256(), [], kept is not None and keep(path)
            for chunk in iter(lambda: extracted.read(1 << 20), b""):
                digest.update(chunk)
                if keeping:
                    chunks.append(chunk)
            if keeping and kept is not None:  # keeping implies kept; mypy needs it said
                kept[path] = b"".join(chunks)
            content = digest.hexdigest()
        elif kind == "hardlink":
            target = posixpath.normpath(member.linkname.lstrip("/")).removeprefix("./")
            kind, content = "file", files[target].content if target in files else f"link to {target}"
        else:
            content = member.linkname if kind == "symlink" else ""
        files[path] = Entry(kind, member.mode & 0o7777, member.uid, member.gid, content)


@contextmanager
def layer_tar(blob: pathlib.Path, media_type: str) -> Iterator[tarfile.TarFile]:
    """A layer blob as the tar it holds, read as a stream: gzip or none (tarfile's own), or zstd."""
    with blob.open("rb") as raw:
        stream = zstandard.ZstdDecompressor().stream_reader(raw) if media_type.endswith("+zstd") else raw
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            yield archive


async def image_files(ref: str, keep: Callable[[str], bool] = lambda path: False) -> ImageFiles:
    """Read an image from its registry: every layer applied in order, its config, and the bytes of
    the files `keep` selects."""
    image = ImageRef.parse(ref)
    files: dict[str, Entry] = {}
    kept: dict[str, bytes] = {}
    async with connect(image.registry) as client:
        found = await client.manifest(image.repository, image.digest or image.tag or "latest")
        if found is None:
            raise LookupError(f"{ref}: no such image")
        manifest = found[0]
        config = await client.image_config(image.repository, manifest)
        with tempfile.TemporaryDirectory(prefix="imagefs-") as tmp:
            for layer in manifest["layers"]:
                blob = pathlib.Path(tmp) / "layer"
                await client.download_blob(image.repository, layer["digest"], blob)
                with layer_tar(blob, layer["mediaType"]) as archive:
                    apply_layer(files, archive, keep, kept)
                blob.unlink()
    return ImageFiles(files, config, {path: data for path, data in kept.items() if path in files})


def difference(ours: dict[str, Entry], theirs: dict[str, Entry]) -> list[str]:
    """What differs between two filesystems, one line per path, sorted."""
    lines = []
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a is None:
            assert b is not None  # the path is in one of the two
            lines.append(f"only theirs: /{path} ({b.describe()})")
        elif b is None:
            lines.append(f"only ours: /{path} ({a.describe()})")
        elif a != b:
            lines.append(f"differs: /{path}: ours {a.describe()}, theirs {b.describe()}")
    return lines


@dataclasses.dataclass(frozen=True)
class Pull:
    """What a machine holding one image pulls to run another: the layers it lacks (digest -> size, as the
    registry serves them) and the paths those layers hold (files and links, not folders)."""

    layers: dict[str, int]
    paths: list[str]

    @property
    def bytes(self) -> int:
        """The bytes pulled: the sizes of the layers it lacks."""
        return sum(self.layers.values())


async def lacking_layers(held: str, wanted: str) -> dict[str, int]:
    """The layers of image `wanted` that image `held` lacks (digest -> size in the registry): what a machine
    holding `held` pulls to run `wanted` (stagecache.traffic.layers_lacking, the build's own measure)."""
    have, want = ImageRef.parse(held), ImageRef.parse(wanted)
    async with connect(want.registry) as client:
        lacking = await layers_lacking(client, have, want)
    if lacking is None:
        raise LookupError(f"{held} or {wanted}: no such image")
    return lacking


async def pull_of(held: str, wanted: str) -> Pull:
    """What a test agent holding image `held` pulls to run image `wanted` (both read from their registry):
    the layers of `wanted` that `held` lacks, opened to list what they hold."""
    lacking = await lacking_layers(held, wanted)
    paths: list[str] = []
    image = ImageRef.parse(wanted)
    async with connect(image.registry) as client:
        found = await client.manifest(image.repository, image.digest or image.tag or "latest")
        assert found is not None
        with tempfile.TemporaryDirectory(prefix="imagefs-") as tmp:
            for layer in (layer for layer in found[0]["layers"] if layer["digest"] in lacking):
                blob = pathlib.Path(tmp) / "layer"
                await client.download_blob(image.repository, layer["digest"], blob)
                with layer_tar(blob, layer["mediaType"]) as archive:
                    paths += [m.name.lstrip("/").removeprefix("./") for m in archive if not m.isdir()]
                blob.unlink()
    return Pull(lacking, sorted(paths))
