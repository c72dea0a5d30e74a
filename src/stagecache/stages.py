"""A build's stages as data: what a stage is and gets, a planned stage with its key and hit, the
order a target needs them in, and their key preimages."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence

import dagger

from stagecache.errors import StageError
from stagecache.inputs import SourceFile, manifest_digest
from stagecache.keys import DEFAULT_LAYER_COMPRESSION, KeyPreimage, json_digest
from stagecache.layered import Previous
from stagecache.refs import ImageRef


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What a stage's build function gets: its filtered source, its parents' results, the build's
    secrets (never part of a key), and the files it reads as the client hashed them (path -> digest
    and size), so a stage that needs their digests does not export them again."""

    # The source as its reads filter it; an incremental stage built on `previous`: its changed files alone
    # (layered.stage_source), all the layer it adds needs.
    source: dagger.Directory
    parents: Mapping[str, dagger.Container]
    secrets: Mapping[str, dagger.Secret] = dataclasses.field(default_factory=dict)
    files: Mapping[str, SourceFile] = dataclasses.field(default_factory=dict)
    # An incremental stage's previous entry (layered.py), when it misses and one can be built on.
    previous: Previous | None = None


BuildFunction = Callable[[StageContext], Awaitable[dagger.Container]]


@dataclasses.dataclass(frozen=True)
class Tail:
    """The steps at a stage's end that change only its image's config (ENV, LABEL): neither in its entry nor in
    its key, applied to its result, built or imported, before a child or the build's output gets it. A child that
    builds on the stage's image is keyed on them too; one that reads its files alone (Stage.files_only) is not,
    so a release that changes only such a step (an arch list set as ENV) reuses the stage and those children."""

    apply: Callable[[dagger.Container], dagger.Container]
    args: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the values the steps read
    steps: Mapping[str, str] = dataclasses.field(default_factory=dict)  # label -> digest, as Stage.steps

    def given_key(self, entry_key: str) -> str:
        """The key of the stage's image with these steps applied: what a child built on it is keyed on."""
        preimage = {"type": "stagecache.tail", "entry": entry_key, "args": dict(self.args), "steps": dict(self.steps)}
        return json_digest(preimage)


@dataclasses.dataclass(frozen=True)
class Stage:
    """A stage as data: its inputs are declared once and feed both the source filter and the key."""

    name: str
    function: BuildFunction  # builds it from a StageContext
    parents: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()  # include patterns over the source; empty: reads no source
    args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    code: str = ""  # fingerprint of the code that builds it (fingerprint.code_fingerprint)
    # Parents whose files it never reads: it only adds file layers onto them or merges their folders
    # in (with_directory, with_file; labels read from their configs). A hit for one is used without
    # being pulled or checked. Every other parent's files are read.
    not_read: tuple[str, ...] = ()
    # The steps it runs as text the build was given (a Dockerfile's instructions), label -> digest: in its
    # key; and, for a person reading a miss, label -> where the step is now ("line 912").
    steps: Mapping[str, str] = dataclasses.field(default_factory=dict)
    step_notes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Its result is files of the source: a miss is given its previous entry to add the changed ones onto.
    incremental: bool = False
    # Its config-only last steps, applied to its entry (Tail); None: its entry is its whole result.
    tail: Tail | None = None
    # Parents it reads files of alone (COPY --from), never the config: keyed on their entries, not their tails.
    files_only: tuple[str, ...] = ()

    def finished(self, ctr: dagger.Container) -> dagger.Container:
        """Its result as children and the build's output get it: its entry with its tail applied."""
        return self.tail.apply(ctr) if self.tail is not None else ctr

    def reads_whole(self, parent: str) -> bool:
        """Whether building this stage reads a parent's files (so a hit for it is pulled and checked)."""
        return parent not in self.not_read


@dataclasses.dataclass(frozen=True)
class PlannedStage:
    """A stage with its key, and the cache ref that would be imported if there is one."""

    stage: Stage
    preimage: KeyPreimage
    hit: ImageRef | None  # pinned to its digest
    note: str = ""
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the files it reads: path -> digest
    why: str = ""  # for a miss: what changed since the newest entry of this stage
    looked_up: bool = True  # False: a build's target hit, so nobody asked the cache for this stage

    @property
    def key(self) -> str:
        """The stage's cache key."""
        return self.preimage.key()

    def to_dict(self) -> dict[str, object]:
        """Plain data for `plan` output."""
        return {
            "stage": self.stage.name,
            "parents": list(self.stage.parents),
            "key": self.key,
            "hit": str(self.hit) if self.hit else None,
            "why": self.why,
            "note": self.note,
            "args": dict(self.preimage.args),  # the values its build reads, as its key holds them
            "preimage": self.preimage.canonical(),
        }


def ordered(stages: Mapping[str, Stage], target: str) -> list[Stage]:
    """The stages the target needs, parents before children; graph errors name both ends."""
    if target not in stages:
        raise StageError(f"unknown target stage {target!r}; stages: {', '.join(stages)}", phase="plan")
    order: list[Stage] = []
    visiting: set[str] = set()

    def visit(name: str, child: str) -> None:
        if any(s.name == name for s in order):
            return
        if name not in stages:
            raise StageError(f"stage {child!r} cannot build on unknown stage {name!r}", phase="plan")
        if name in visiting:
            raise StageError(f"stage {child!r} and stage {name!r} depend on each other", phase="plan")
        visiting.add(name)
        for parent in stages[name].parents:
            visit(parent, name)
        visiting.discard(name)
        order.append(stages[name])

    visit(target, target)
    return order


def stage_preimages(
    stages: Sequence[Stage], reads: Mapping[str, Mapping[str, str]], layers: str = DEFAULT_LAYER_COMPRESSION
) -> list[KeyPreimage]:
    """The key preimages of stages given parents first, from the files each reads (path -> digest),
    for entries whose layers are compressed with `layers`."""
    keys: dict[str, str] = {}  # each stage's entry key
    given: dict[str, str] = {}  # the key of its image with its tail applied (Tail.given_key)
    preimages: list[KeyPreimage] = []
    for stage in stages:
        preimage = KeyPreimage(
            stage=stage.name,
            code=stage.code,
            args=dict(stage.args),
            parents={p: keys[p] if p in stage.files_only else given[p] for p in stage.parents},
            inputs=manifest_digest(reads.get(stage.name, {})),
            layers=layers,
            steps=dict(stage.steps),
        )
        keys[stage.name] = preimage.key()
        given[stage.name] = stage.tail.given_key(keys[stage.name]) if stage.tail is not None else keys[stage.name]
        preimages.append(preimage)
    return preimages
