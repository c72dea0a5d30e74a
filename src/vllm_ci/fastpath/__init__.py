"""The fast path's programs that run inside stage containers, kept as files of their own (linted,
formatted and type-checked like the rest) and handed to the container as text (`program`). A
stage's code fingerprint holds that text, since the stage reads it as a module constant."""

from __future__ import annotations

from importlib.resources import files


def program(name: str) -> str:
    """The text of one program of this folder."""
    return files(__package__).joinpath(name).read_text()
