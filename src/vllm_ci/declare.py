"""How a stage function says which stage it builds and what this project adds to upstream's.

Each stage function carries one `@stage(...)` declaration: the Dockerfile stage it builds and its FROM
as the file writes it (None: a stage of this project only), the stages it builds on, the source files
it reads (its filter and its key's input), the parents it never reads, and its deviations: each one
instruction it does differently, named by kind and a short anchor (instructions.Deviation). Every
other instruction of the stage is run as the Dockerfile being built writes it.

The stages of one of vLLM's Dockerfiles are a stage set (STAGE_SETS): `cuda` for docker/Dockerfile, `cpu`
for docker/Dockerfile.cpu. A build's set is the one its Dockerfile's name says (stage_set_for), and two
sets share no stage code: their stage names may be the same (both have `base`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from vllm_ci.deviations import Deviation

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class StageSet:
    """The stages of one of vLLM's Dockerfiles: its name, the file upstream keeps them in, the stage its CI
    tests in, and every stage function declared for it, by the stage name it builds."""

    name: str
    dockerfile: str
    test_image: str
    # Where the image's Python installs packages, with {version} for the Python version, and the ARG that
    # gives the version, as a stage reads it (also_reads: a global ARG, or `stage:NAME` for one a stage declares).
    site_packages: str
    python_version: str
    declared: dict[str, StageDeclaration] = dataclasses.field(default_factory=dict)

    def cache_name(self, stage: str) -> str:
        """A stage's name in the stage cache (its tags, keys and report): qualified by the set, so two sets'
        entries can share a cache repository and never hit each other; the CUDA set's names as they are."""
        return stage if self.name == "cuda" else f"{self.name}.{stage}"


STAGE_SETS: dict[str, StageSet] = {
    # The runtime's system Python (Debian/Ubuntu layout); the CPU image's venv (base-common's ENV VIRTUAL_ENV).
    "cuda": StageSet(
        "cuda", "docker/Dockerfile", "test", "/usr/local/lib/python{version}/dist-packages", "PYTHON_VERSION"
    ),
    "cpu": StageSet(
        "cpu",
        "docker/Dockerfile.cpu",
        "vllm-test",
        "/opt/venv/lib/python{version}/site-packages",
        "base-common:PYTHON_VERSION",
    ),
}
# Every stage function of the CUDA set, by the Dockerfile stage name it builds.
DECLARED = STAGE_SETS["cuda"].declared


def stage_set_for(dockerfile: str) -> StageSet:
    """The stage set a Dockerfile's name says, wherever it is (a fork's path too): `Dockerfile.cpu` the CPU
    set; any other name the CUDA set, whose conformance check then says what does not fit."""
    name = dockerfile.rpartition("/")[2]
    return next((s for s in STAGE_SETS.values() if name == s.dockerfile.rpartition("/")[2]), STAGE_SETS["cuda"])


@dataclasses.dataclass(frozen=True)
class StageDeclaration:
    """What a stage function says of itself."""

    name: str
    from_: str | None  # FROM's argument as the file writes it (image or stage); None: a stage of ours only
    function: Callable[..., Any]
    parents: tuple[str, ...] = ()  # the stages whose results it uses
    reads: tuple[str, ...] = ()  # the source files it reads: its COPY set, its filter and its key's input
    # Parents whose files it never reads: it only adds file layers onto them or merges their folders in.
    not_read: tuple[str, ...] = ()
    deviations: tuple[Deviation, ...] = ()
    # What only this project's own steps read (the file-layer install reads PYTHON_VERSION for the
    # site-packages path): a global ARG of the file, `stage:NAME` for an ARG as a stage of the file sees it at
    # its end, or an argument of this project (lower case). In the key.
    also_reads: tuple[str, ...] = ()
    # Instructions of other stages this stage runs as written: (stage, the deviation that claims them there;
    # None: all of that stage's). In its key, with that stage's ARG values.
    runs_from: tuple[tuple[str, Deviation | None], ...] = ()
    stage_set: str = "cuda"  # the set (STAGE_SETS) of the Dockerfile it is a stage of
    # Its result is files of the checkout, built in proportion to the change (stagecache.layered).
    incremental: bool = False

    @property
    def upstream(self) -> bool:
        """Whether the stage is one of the Dockerfile's (not a fast path of this project's)."""
        return self.from_ is not None


def stage(
    name: str,
    *,
    from_: str | None,
    parents: Sequence[str] = (),
    reads: Sequence[str] = (),
    not_read: Sequence[str] = (),
    deviations: Sequence[Deviation] = (),
    also_reads: Sequence[str] = (),
    runs_from: Sequence[tuple[str, Deviation | None]] = (),
    stage_set: str = "cuda",
    incremental: bool = False,
) -> Callable[[F], F]:
    """Declare, once and on the function, the stage it builds (see the module's doc)."""
    declared = STAGE_SETS[stage_set].declared

    def register(function: F) -> F:
        if name in declared:
            raise ValueError(
                f"stage {name!r} is declared twice: {declared[name].function.__qualname__} and {function.__qualname__}"
            )
        if set(not_read) - set(parents):
            raise ValueError(
                f"stage {name!r}: not_read={sorted(set(not_read) - set(parents))!r} are not among its parents"
            )
        declared[name] = StageDeclaration(
            name=name,
            from_=from_,
            function=function,
            parents=tuple(parents),
            reads=tuple(reads),
            not_read=tuple(not_read),
            deviations=tuple(deviations),
            also_reads=tuple(also_reads),
            runs_from=tuple(runs_from),
            stage_set=stage_set,
            incremental=incremental,
        )
        return function

    return register
