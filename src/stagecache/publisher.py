"""Writing to the cache: publish a container (mounting first the blobs of the hits it was built
on), export a built stage as an entry with the record that explains a later miss, and seal a hit
that was found without its record."""

from __future__ import annotations

import datetime
import time
from typing import TextIO

import anyio
import dagger

from stagecache.access import RegistryAccess
from stagecache.errors import StageError, export_failure, warn
from stagecache.keys import CREATED_LABEL, cache_tag
from stagecache.refs import ImageRef
from stagecache.registry import RegistryError, blobs_of
from stagecache.report import StageRecord
from stagecache.stages import PlannedStage
from stagecache.state import BuildState
from stagecache.why import describe_entry, seal_entry, sealed_digest


class Publisher:
    """Pushes to registries with one cache's credentials, layer compression and write repository."""

    def __init__(
        self,
        *,
        cache_to: ImageRef | None,
        strict: bool,
        layer_compression: str,
        access: RegistryAccess,
        state: BuildState,
        log: TextIO,
    ) -> None:
        self.cache_to = cache_to  # the one repository entries are written to; None: nothing is
        self.strict = strict  # a failed export fails the build instead of warning
        self.layer_compression = layer_compression  # every publish forces it, so an entry is whole in it
        self.access = access
        self.state = state
        self.log = log

    async def publish(self, ctr: dagger.Container, ref: ImageRef) -> ImageRef:
        """Publish a container to a ref, with this cache's credentials and layer compression; returns the
        ref pinned to the digest pushed. Layers already in that compression (imported entries) are mounted
        as they are; the others (new ones, a base image's gzip layers) are compressed once per engine."""
        await self._premount(ref)
        compression = dagger.ImageLayerCompression(self.layer_compression.capitalize())
        published = await self.access.authed(ctr, ref.registry).publish(str(ref), forced_compression=compression)
        return ref.with_digest(published.rpartition("@")[2])  # the engine answers ref@digest

    async def copy(self, entry: ImageRef, target: ImageRef) -> ImageRef | None:
        """An entry published as it is to a ref of its own registry by the registry alone (blobs mounted,
        manifest tagged; no engine), pinned to its digest, the entry's; None when the registry is another
        or refuses (a warning): the caller publishes it by the engine instead."""
        if entry.registry != target.registry:
            return None
        try:
            client = await self.access.client(target.registry)
            return target.with_digest(await client.copy_manifest(entry, target))
        except RegistryError as err:
            self._warn(f"cache: could not tag {entry.short()} as {target.repo_ref} in the registry: {err}")
            return None

    async def _premount(self, target: ImageRef) -> None:
        """Mount the layers of every imported hit into the target repository before a publish.

        The engine mounts a layer it never pulled, but uploads again one that it did pull (an
        imported image that a later stage ran a command on, or a layer shared with a pulled build
        image). Mounting first, from the repository we imported from, makes the engine find every
        such layer already in place: no bytes move."""
        sources = [
            ref for ref in self.state.imported if ref.registry == target.registry and not ref.same_repository(target)
        ]
        if not sources:
            return
        try:
            client = await self.access.client(target.registry)
            for source in sources:
                found = await client.manifest(source.repository, source.reference)
                if found is None:
                    continue
                blobs = [b for b in blobs_of(found[0]) if (target.repo_ref, b) not in self.state.mounted]
                # One it would not mount, the engine uploads as it publishes.
                await client.mount_missing(target.repository, blobs, source.repository)
                self.state.mounted.update((target.repo_ref, blob) for blob in blobs)
        except RegistryError as err:
            self._warn(f"cache: could not mount imported layers into {target.repo_ref}: {err}")

    async def export(self, ctr: dagger.Container, planned: PlannedStage, record: StageRecord) -> dagger.Container:
        """Publish a built stage to the write repository; a failure warns unless strict."""
        assert self.cache_to is not None
        ref = self.cache_to.with_tag(cache_tag(planned.stage.name, planned.key))
        created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        began = time.monotonic()
        try:
            published = await self.publish(ctr.with_label(CREATED_LABEL, created), ref)
        except dagger.QueryError as err:
            record.export_seconds = time.monotonic() - began
            message = export_failure(err, self.cache_to.registry)
            if self.strict:
                raise StageError(
                    message, stage=planned.stage.name, key=planned.key, ref=str(ref), phase="export"
                ) from None
            record.outcome, record.note = "export-failed", message
            self._warn(f"warning: cache export of stage {planned.stage.name} failed, build goes on: {message}")
            return ctr
        with anyio.CancelScope(shield=True):  # a cancel once the entry is stored still seals it (a few requests)
            await self._describe_entry(planned, ref)
        record.export_seconds = time.monotonic() - began
        record.outcome, record.ref = "exported", published
        return ctr

    async def _describe_entry(self, planned: PlannedStage, ref: ImageRef) -> None:
        """Leave beside a new entry what explains a later miss: its input manifest and `<stage>-latest`."""
        try:
            client = await self.access.client(ref.registry)
            await describe_entry(client, ref.repository, planned.stage.name, ref.tag or "", planned.files)
        except RegistryError as err:
            self._warn(f"cache: could not record the inputs of {ref} (a later miss will say less): {err}")

    async def seal(self, planned: PlannedStage, hit: ImageRef) -> None:
        """Seal a hit found without its record, naming the image used, when this build writes to its
        repository (a read-only one stays as it is); a failure only warns, as at export."""
        if self.cache_to is None or not hit.same_repository(self.cache_to):
            return
        try:
            client = await self.access.client(hit.registry)
            if await sealed_digest(client, hit.repository, hit.tag or "") is None:  # nobody sealed it since
                await seal_entry(client, hit.repository, hit.tag or "", planned.files, hit.digest or "")
        except RegistryError as err:
            self._warn(f"cache: could not seal {hit.short()} with its record: {err}")
            return
        self.state.unsealed.discard(hit)
        self._warn(f"cache: sealed {hit.short()}, found without its record")

    def _warn(self, message: str) -> None:
        """One line on the log stream, URL credentials blanked."""
        warn(self.log, message)
