"""Image references as values: parsed once where they enter (a flag, a module argument, a report read
back), handed on as `ImageRef`, shown to a person by one function (`ImageRef.short`)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Final

_REF: Final = re.compile(
    r"^(?P<registry>[A-Za-z0-9.-]+(?::\d+)?|\[[0-9a-fA-F:]+\](?::\d+)?)/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_LONG_HEX: Final = re.compile(r"([0-9a-f]{12})[0-9a-f]{52}")


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """A fully qualified image reference: registry/repository[:tag][@digest]."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse a reference that names its registry; raise ValueError naming the text if it does not."""
        match = _REF.match(text)
        if (
            not match
            or "." not in match["registry"]
            and ":" not in match["registry"]
            and match["registry"] != "localhost"
        ):
            raise ValueError(f"not a fully qualified image reference (registry/repository[:tag]): {text!r}")
        return cls(match["registry"], match["repo"], match["tag"], match["digest"])

    @property
    def repo_ref(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the registry API names the image by: its digest, else its tag, else `latest`."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> ImageRef:
        """The same repository under another tag."""
        return dataclasses.replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> ImageRef:
        """The same reference pinned to a digest."""
        return dataclasses.replace(self, digest=digest)

    def same_repository(self, other: ImageRef) -> bool:
        """Whether two refs name the same repository (tags and digests aside)."""
        return self.repo_ref == other.repo_ref

    def short(self, host: bool = True) -> str:
        """The ref as a person reads it, the one display of a ref: its digest cut to 12 hex digits; for a
        table's column (host=False) without the registry host, and a key in its tag cut to 12 too."""
        digest = f"@{self.digest[:19]}" if self.digest else ""
        if host:
            return f"{self.repo_ref}{':' + self.tag if self.tag else ''}{digest}"
        tag = ":" + _LONG_HEX.sub(r"\1", self.tag) if self.tag else ""
        return f"{self.repository}{tag}{digest}"

    def __str__(self) -> str:
        text = self.repo_ref
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def read_order(cache_to: ImageRef | None, cache_from: Iterable[ImageRef]) -> tuple[ImageRef, ...]:
    """The cache repositories a build reads, in order: the one it writes first (a rerun of the same job
    reads back what it wrote), then the others as given; each repository once. The one place this is decided."""
    order: list[ImageRef] = []
    for ref in [*([cache_to] if cache_to else []), *cache_from]:
        if not any(ref.same_repository(seen) for seen in order):
            order.append(ref)
    return tuple(order)
