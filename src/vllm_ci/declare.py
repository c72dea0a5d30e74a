"""How a stage function says which stage it builds and what this project adds to upstream's.

Each stage function carries one `@stage(...)` declaration: the Dockerfile stage it builds and its FROM
as the file writes it (None: a stage of this project only), the stages it builds on, the source files
it reads (its filter and its key's input), the parents it never reads, and its deviations: each one
instruction it does differently, named by kind and a short anchor (instructions.Deviation). Every
other instruction of the stage is run as the Dockerfile being built writes it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from vllm_ci.deviations import Deviation

F = TypeVar("F", bound=Callable[..., Any])

# Every stage function declared so far, by the Dockerfile stage name it builds.
DECLARED: dict[str, StageDeclaration] = {}


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
    # site-packages path): a global ARG of the file, or an argument of this project (lower case). In the key.
    also_reads: tuple[str, ...] = ()
    # Instructions of other stages this stage runs as written: (stage, the deviation that claims them there;
    # None: all of that stage's). In its key, with that stage's ARG values.
    runs_from: tuple[tuple[str, Deviation | None], ...] = ()

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
) -> Callable[[F], F]:
    """Declare, once and on the function, the stage it builds (see the module's doc)."""

    def register(function: F) -> F:
        if name in DECLARED:
            raise ValueError(
                f"stage {name!r} is declared twice: {DECLARED[name].function.__qualname__} and {function.__qualname__}"
            )
        if set(not_read) - set(parents):
            raise ValueError(
                f"stage {name!r}: not_read={sorted(set(not_read) - set(parents))!r} are not among its parents"
            )
        DECLARED[name] = StageDeclaration(
            name,
            from_,
            function,
            tuple(parents),
            tuple(reads),
            tuple(not_read),
            tuple(deviations),
            tuple(also_reads),
            tuple(runs_from),
        )
        return function

    return register
