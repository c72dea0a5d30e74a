"""Stages whose result is files, built in proportion to the change.

An incremental stage (`Stage.incremental`) that misses is given its previous entry: the newest entry of
the stage in the read repositories whose key differs from its own in the input files alone (the same
code, arguments, parents, steps and layer compression), whole in the registry. It adds one layer of the
files that changed onto that image instead of writing all of them again, so entry N+1 shares every layer
of entry N, and what is pushed, and what a machine holding N pulls, is the changed files. A file of the
previous entry that is gone (a layer cannot delete it without reading the image), or a stack at its
depth limit, starts over with one layer of all the files. Knows nothing of what the files are."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import dagger
from dagger import dag

from stagecache.hostsource import host_folder
from stagecache.inputs import SourceFile, literal
from stagecache.refs import ImageRef

# On an incremental stage's image: how many layers of files it is, its first included.
DEPTH_LABEL = "org.stagecache.layered-depth"
MAX_DEPTH = 16  # then one layer of all the files again: an image stays well under overlayfs's layer limit


@dataclasses.dataclass(frozen=True)
class Previous:
    """An incremental stage's previous entry: its image (pinned), its input manifest and its labels."""

    ref: ImageRef
    files: Mapping[str, str]  # path -> digest, as its key's inputs hold them
    labels: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Layers:
    """How an incremental stage adds its files: onto `base` (the previous entry's image, or an empty one),
    the files at `paths` (those that changed since it, or all), as layer `depth` of the result."""

    paths: tuple[str, ...]
    depth: int
    previous: ImageRef | None

    @property
    def base(self) -> dagger.Container:
        """The image the new layer goes onto: the previous entry's, or an empty one."""
        return dag.container() if self.previous is None else dag.container().from_(str(self.previous))

    def labelled(self, image: dagger.Container) -> dagger.Container:
        """The stage's image with its depth recorded, for the next build to count on."""
        return image.with_label(DEPTH_LABEL, str(self.depth))


def builds_on(old: Mapping[str, object], new: Mapping[str, object]) -> bool:
    """Whether an entry with preimage `old` can be built on by one with preimage `new` (both as their
    canonical JSON reads): they differ in their input files alone."""
    return {**old, "inputs": ""} == {**new, "inputs": ""}


def layers_for(reads: Mapping[str, SourceFile], previous: Previous | None, max_depth: int = MAX_DEPTH) -> Layers:
    """What an incremental stage's new layer holds, from the files it reads now (StageContext.files) and its
    previous entry: the changed and new files onto that entry, unless one of its files is gone or its
    stack is full; else all the files onto an empty image."""
    files = {path: file.entry for path, file in reads.items()}
    if previous is not None:
        label = previous.labels.get(DEPTH_LABEL, "")
        depth = int(label) + 1 if label.isdecimal() else 1  # a label not ours is an entry not stacked: start over
        if 1 < depth <= max_depth and set(previous.files) <= set(files):
            changed = tuple(sorted(path for path, digest in files.items() if previous.files.get(path) != digest))
            return Layers(changed, depth, previous.ref)
    return Layers(tuple(sorted(files)), 1, None)


def only(source: dagger.Directory, paths: Sequence[str]) -> dagger.Directory:
    """The source's files at these paths and nothing else (each matched literally, not as a pattern): uploaded
    alone when the source is a folder of this machine (hostsource), else filtered out of it."""
    if not paths:
        return dag.directory()
    if (host := host_folder(source)) is not None:
        return host.only(paths)
    return source.filter(include=[literal(path) for path in paths])


def stage_source(
    reads: Sequence[str],
    checkout: dagger.Directory,
    context: dagger.Directory,
    files: Mapping[str, SourceFile],
    previous: Previous | None,
) -> dagger.Directory:
    """What a stage function is given of the source (StageContext.source): the build context as its reads (include
    patterns) filter it; for an incremental stage built on its previous entry, the files that changed alone, taken
    from the checkout by their paths. A filter of a few literal paths is instant, where one of a stage's whole
    reads (or of the ignore file's patterns) copies each file in the engine first: seconds at vLLM's size. The
    paths are the context's (its manifest's), so both give the same files."""
    if (layers := layers_for(files, previous)).previous is not None:
        return only(checkout, layers.paths)
    if not reads:
        return dag.directory()
    if "**" in reads:
        return context  # all of it: a filter would copy every file to select them all
    return context.filter(include=list(reads))
