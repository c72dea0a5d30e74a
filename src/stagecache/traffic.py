"""Bytes pulled and pushed, measured at the registry: read from the registry's JSON request log.

Attached when the build runs where the log can be read (this machine's tests and bench); a
layer is attributed to the first stage, in build order, whose image holds it."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlparse

from stagecache.refs import ImageRef
from stagecache.registry import RegistryClient
from stagecache.report import BuildReport

_BLOB_GET = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_UPLOAD = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/")


@dataclasses.dataclass
class Traffic:
    """What crossed the registry between two marks."""

    pulled: dict[str, int] = dataclasses.field(default_factory=dict)  # blob digest -> bytes sent
    uploads: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (repository, blob digest) uploaded
    mounted: set[str] = dataclasses.field(default_factory=set)  # cross-repository mounts: no bytes moved

    @property
    def pulled_bytes(self) -> int:
        """All blob bytes the registry sent."""
        return sum(self.pulled.values())

    @property
    def pushed(self) -> set[str]:
        """The digests of the blobs uploaded, to whichever repository."""
        return {digest for _, digest in self.uploads}


class RegistryLog:
    """A registry's JSON log file (docker-registry's `log.formatter: json`): the one reader of it, for the
    build report and the bench alike."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)

    def mark(self) -> int:
        """A position to measure from."""
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, mark: int, end: int | None = None, repositories: tuple[str, ...] = ()) -> Traffic:
        """The blob traffic logged after a mark (up to `end`), on the repositories starting with one of
        `repositories` only (all when none: others may share the registry meanwhile). A blob GET counts
        whole (200) or in part (206); an upload once per repository it went to."""
        traffic = Traffic()
        prefixes = tuple(f"/v2/{repository}" for repository in repositories) or ("/v2/",)
        with self.path.open("rb") as log:
            log.seek(mark)
            for raw in (log.read(end - mark) if end is not None else log.read()).splitlines():
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue  # the access-log lines are not JSON
                url = urlparse(entry.get("http.request.uri", ""))
                if entry.get("msg") != "response completed" or not url.path.startswith(prefixes):
                    continue
                method, status = entry.get("http.request.method"), entry.get("http.response.status")
                query = parse_qs(url.query)
                if method == "GET" and status in (200, 206) and (m := _BLOB_GET.match(url.path)):
                    digest = m["digest"]
                    traffic.pulled[digest] = traffic.pulled.get(digest, 0) + int(entry.get("http.response.written", 0))
                elif method == "PUT" and status == 201 and (upload := _UPLOAD.match(url.path)) and "digest" in query:
                    traffic.uploads |= {(upload["repo"], unquote(digest)) for digest in query["digest"]}
                elif method == "POST" and status == 201 and "mount" in query:
                    traffic.mounted.add(query["mount"][0])
        return traffic


async def attribute(
    report: BuildReport, traffic: Traffic, client_of: Callable[[str], Awaitable[RegistryClient]]
) -> None:
    """Fill each stage's bytes pulled and pushed from measured traffic, by the layers its image holds,
    and the run's totals (the final image's publish included); `client_of` gives the run's client of a registry."""
    claimed: set[str] = set()
    for record in report.stages:
        record.bytes_pulled, record.bytes_pushed = 0, 0
        if not record.ref:
            continue
        client = await client_of(record.ref.registry)
        found = await client.manifest(record.ref.repository, record.ref.reference)
        if found is None:
            continue
        manifest, _ = found
        blobs = {layer["digest"]: layer["size"] for layer in manifest.get("layers", [])}
        blobs[manifest["config"]["digest"]] = manifest["config"]["size"]
        mine = set(blobs) - claimed
        claimed |= mine
        record.bytes_pulled = sum(traffic.pulled.get(d, 0) for d in mine)
        record.bytes_pushed = sum(blobs[d] for d in mine if d in traffic.pushed)
    pushed = 0
    for repo, digest in traffic.uploads:
        client = await client_of(report_registry(report))
        pushed += await client.blob_size(repo, digest) or 0
    report.traffic = {"pulled": traffic.pulled_bytes, "pushed": pushed, "mounted_blobs": len(traffic.mounted)}


def report_registry(report: BuildReport) -> str:
    """The registry the report's refs live in."""
    ref = report.image or next((r.ref for r in report.stages if r.ref), None)
    assert ref is not None, "traffic was measured, so the report names a ref"
    return ref.registry


async def layers_lacking(client: RegistryClient, held: ImageRef, wanted: ImageRef) -> dict[str, int] | None:
    """The layers of image `wanted` that image `held` lacks (digest -> size, as the registry's manifests give
    it): what a machine holding `held` pulls to run `wanted`; both on the client's registry. None when either
    image is not there."""
    found = [await client.manifest(ref.repository, ref.reference) for ref in (held, wanted)]
    if found[0] is None or found[1] is None:
        return None
    have = {layer["digest"] for layer in found[0][0].get("layers", [])}
    return {layer["digest"]: layer["size"] for layer in found[1][0].get("layers", []) if layer["digest"] not in have}
