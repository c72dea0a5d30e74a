"""Small Container -> Container helpers the stage sections share (upstream's own instructions run
through instructions.AsWritten)."""

from __future__ import annotations

from collections.abc import Callable

import dagger
from dagger import dag

Step = Callable[[dagger.Container], dagger.Container]


def scratch_with(path: str, directory: dagger.Directory) -> dagger.Container:
    """An image holding only a directory, like `FROM scratch` + `COPY --from`: thin to store and move."""
    return dag.container().with_directory(path, directory)


def unquote(value: str) -> str:
    """A Dockerfile value without the quotes around it."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
