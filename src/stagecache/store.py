"""The stage cache: compute keys, import hits with `from_`, build and publish misses, report.

Discipline (as a package store would): look up, look up again just before building, build,
publish. A tag whose image does not carry the expected key label is never used. Reads go
through an ordered list of repositories, first valid hit wins; writes go to one repository.
Looking up is the planner's (planner.py), writing the publisher's (publisher.py); here each stage
of a build is resolved, as a hit or built on its parents, in the order they finish."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TextIO

import anyio
import dagger
from dagger import dag

from stagecache.access import RegistryAccess
from stagecache.errors import (
    StageError,
    exec_summary,
    export_failure,
    first_stage_error,
    unusable_reason,
    warn,
)
from stagecache.inputs import IGNORE_FILE
from stagecache.keys import DEFAULT_LAYER_COMPRESSION, KEY_LABEL, PREIMAGE_LABEL, STAGE_LABEL, checked_compression
from stagecache.layered import stage_source
from stagecache.planner import Planner
from stagecache.publisher import Publisher
from stagecache.refs import ImageRef, read_order
from stagecache.registry import DEFAULT_ATTEMPTS
from stagecache.report import BuildReport, Progress, StageRecord
from stagecache.stages import PlannedStage, Stage, StageContext
from stagecache.state import BuildState
from stagecache.traffic import RegistryLog, attribute

# Where the registry's JSON request log is, when bytes are to be measured (tests, bench).
LOG_ENV = "STAGECACHE_REGISTRY_LOG"


class StageCache:
    """Builds a target stage from cached or freshly built stages, and records what happened."""

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        cache_from: Sequence[ImageRef] = (),
        cache_to: ImageRef | None = None,
        strict: bool = False,
        registry_username: str = "",
        registry_password: dagger.Secret | None = None,
        secrets: Mapping[str, dagger.Secret] | None = None,
        log: TextIO = sys.stderr,
        progress: Progress | None = None,
        registry_attempts: int = DEFAULT_ATTEMPTS,
        tunnels: Mapping[str, str] | None = None,
        ignore_file: str = IGNORE_FILE,
        layer_compression: str = DEFAULT_LAYER_COMPRESSION,
    ):
        # Every publish forces it, so an entry is whole in it; the key holds it (keys.KeyPreimage.layers).
        self.layer_compression = checked_compression(layer_compression)
        self.stages = {s.name: s for s in stages}
        self.ignore_file = ignore_file  # the source's own ignore file (path in it); empty: none
        self.secrets = dict(secrets or {})
        self.cache_to = cache_to
        self.cache_from = read_order(cache_to, cache_from)  # what it writes first: a rerun reads it back
        self.strict = strict
        self.username = registry_username
        self.password = registry_password
        self.log = log
        self.progress = progress or Progress(log)
        self.registry_attempts = registry_attempts
        self.tunnels = dict(tunnels or {})  # loopback port -> host:port of a tunnel the engine opened
        self.state = BuildState()  # what plans and builds learn, shared by the parts below
        self.access = RegistryAccess(self.username, self.password, self.tunnels, self.registry_attempts)
        self.planner = Planner(
            self.stages,
            cache_from=self.cache_from,
            strict=self.strict,
            ignore_file=self.ignore_file,
            layer_compression=self.layer_compression,
            access=self.access,
            state=self.state,
            log=self.log,
        )
        self.publisher = Publisher(
            cache_to=self.cache_to,
            strict=self.strict,
            layer_compression=self.layer_compression,
            access=self.access,
            state=self.state,
            log=self.log,
        )

    async def plan(self, source: dagger.Directory, target: str) -> list[PlannedStage]:
        """Keys for every stage the target needs, and which would hit; no container work. A run: its
        registry clients are closed at its end."""
        try:
            return await self.planner.plan(source, await self.planner.context(source), target)
        finally:
            await self.access.close()

    async def publish(self, ctr: dagger.Container, ref: ImageRef) -> ImageRef:
        """Publish a container to a ref, with this cache's credentials and layer compression; returns the
        ref pinned to its digest (mounting first, into that repository, the layers of the hits it imported)."""
        try:
            return await self.publisher.publish(ctr, ref)
        finally:
            await self.access.close()

    def import_image(self, ref: ImageRef) -> dagger.Container:
        """An image from the registry; lazy: nothing is pulled until an operation needs it."""
        return self.access.authed(dag.container(), ref.registry).from_(str(ref))

    async def build(
        self, source: dagger.Directory, target: str, image: ImageRef | None = None
    ) -> tuple[dagger.Container, BuildReport]:
        """The target's container, building only what no cache holds, published to `image` if given;
        with a report (bytes measured at the registry when STAGECACHE_REGISTRY_LOG names its log). A run:
        its registry clients (one per registry) are closed at its end."""
        try:
            return await self._build(source, target, image)
        finally:
            with anyio.CancelScope(shield=True):
                await self.access.close()

    async def _build(
        self, source: dagger.Directory, target: str, image: ImageRef | None
    ) -> tuple[dagger.Container, BuildReport]:
        """build(), before its clients are closed."""
        started = self.state.started = time.monotonic()
        meter = RegistryLog(os.environ[LOG_ENV]) if os.environ.get(LOG_ENV) else None
        mark = meter.mark() if meter else 0
        checkout, source = source, await self.planner.context(source)
        plan = await self.planner.plan(checkout, source, target, target_first=True)
        planned_at = self.state.now()
        self.state.pulled = {
            parent
            for p in plan
            if p.hit is None and p.looked_up
            for parent in p.stage.parents
            if p.stage.reads_whole(parent)
        }
        by_name = {p.stage.name: p for p in plan}
        report = BuildReport(
            target,
            [StageRecord(p.stage.name, p.key, "unused", note=p.note, why=p.why, queued_at=planned_at) for p in plan],
        )
        results: dict[str, dagger.Container] = {}
        failures: dict[str, Exception] = {}  # a stage two children wait for fails both with its own error
        done: dict[str, anyio.Event] = {}

        async def resolve(name: str) -> dagger.Container:
            if name in done:
                await done[name].wait()
                if name not in results:
                    raise failures.get(name) or StageError(f"stage {name} did not finish", stage=name)
                return results[name]
            done[name] = anyio.Event()
            try:
                entry = await self._resolve_one(by_name[name], checkout, source, resolve, report.record(name))
                results[name] = by_name[name].stage.finished(entry)
            except Exception as err:
                failures[name] = err
                raise
            finally:
                done[name].set()
            return results[name]

        container = await resolve(target)
        if image:
            report.image = await self._publish_image(by_name[target].stage, report.record(target), container, image)
        report.total_seconds = time.monotonic() - started
        report.registry_retries = self.access.retries
        report.lookup_failures = sorted(self.state.lookup_failures)
        if meter:
            await attribute(report, meter.since(mark), self.access.client)
        return container, report

    async def _publish_image(
        self, stage: Stage, record: StageRecord, container: dagger.Container, image: ImageRef
    ) -> ImageRef:
        """The target published as its cache entry, which a warm run publishes too (the container just built
        has another config: history, labels; and so another digest). An entry with no config-only tail, on
        the image's registry, is tagged there by the registry alone; otherwise the engine publishes it."""
        entry = record.ref if record.outcome in ("hit", "exported") else None
        if entry is not None and stage.tail is None and (copied := await self.publisher.copy(entry, image)):
            return copied
        published = container
        if record.outcome == "exported" and record.ref:
            self.state.imported.append(record.ref)
            published = stage.finished(self.import_image(record.ref))
        try:
            return await self.publisher.publish(published, image)
        except dagger.QueryError as err:
            raise StageError(
                export_failure(err, image.registry), stage=stage.name, ref=str(image), phase="push"
            ) from None

    async def _resolve_one(
        self,
        planned: PlannedStage,
        checkout: dagger.Directory,
        source: dagger.Directory,
        resolve: Callable[[str], Awaitable[dagger.Container]],
        record: StageRecord,
    ) -> dagger.Container:
        """Import a hit, or build the stage on its parents and export it (checkout: the source as given; source:
        the build context, less what its ignore file excludes)."""
        stage = planned.stage
        hit = planned.hit
        if hit is None:  # someone may have published it since the plan, or the plan did not ask
            hit, _ = await self.planner.lookup(planned.preimage)
            if hit is None and not planned.looked_up:  # the target's entry was unusable: say why this one misses
                record.why = await self.planner.miss_reason(planned.preimage, planned.files)
        if hit is not None:
            imported = self.import_image(hit)
            problem = await unusable(imported, pulled=stage.name in self.state.pulled)
            if problem is None:
                record.outcome, record.ref = "hit", hit
                record.started_at = record.ended_at = self.state.now()
                self.state.imported.append(hit)
                if hit in self.state.unsealed:
                    await self.publisher.seal(planned, hit)
                self.progress.hit(stage.name, hit)
                return imported
            reason = f"unusable entry {hit.short()}: {problem}"
            record.why = reason + "; rebuilt"
            self._warn(f"warning: {reason}; the stage is rebuilt instead")

        parents: dict[str, dagger.Container] = {}
        # Its parents are built on: their files are read whole.
        self.state.pulled.update(parent for parent in stage.parents if stage.reads_whole(parent))

        async def fetch(parent: str) -> None:
            parents[parent] = await resolve(parent)

        try:
            async with anyio.create_task_group() as tg:
                for parent in stage.parents:
                    tg.start_soon(fetch, parent)
        except BaseExceptionGroup as group:  # a parent failed: report that stage's error, not a group
            raise first_stage_error(group) from None

        record.started_at = self.state.now()
        self.progress.started(stage.name, record.why)
        previous = await self.planner.previous(planned.preimage) if stage.incremental else None
        if previous is not None:
            record.note = f"built on {previous.ref.short(host=False)}"
        files = {path: self.state.files[path] for path in planned.files}
        ctr = await stage.function(
            StageContext(
                stage_source(stage.reads, checkout, source, files, previous), parents, self.secrets, files, previous
            )
        )
        ctr = (
            ctr.with_label(STAGE_LABEL, stage.name)
            .with_label(KEY_LABEL, planned.key)
            .with_label(PREIMAGE_LABEL, planned.preimage.canonical())
        )
        began = time.monotonic()
        try:
            await ctr.sync()
        except dagger.ExecError as err:
            self.progress.failed(stage.name)
            raise StageError(exec_summary(err), stage=stage.name, key=planned.key) from None
        except dagger.QueryError as err:
            self.progress.failed(stage.name)
            raise StageError(str(err).splitlines()[0], stage=stage.name, key=planned.key) from None
        record.build_seconds = time.monotonic() - began
        record.built_at = self.state.now()
        record.outcome = "built"
        if self.cache_to is not None:
            ctr = await self.publisher.export(ctr, planned, record)
        record.ended_at = self.state.now()
        self.progress.ended(record)
        return ctr

    def _warn(self, message: str) -> None:
        """One line on the log stream, URL credentials blanked."""
        warn(self.log, message)


async def unusable(imported: dagger.Container, pulled: bool) -> str | None:
    """Why the engine cannot use a hit, in one line; None when it can. The engine resolves its
    manifest and config (an entry deleted since the look-up fails here); when a stage built in
    this run reads its files, it also pulls the layers now, by a file operation that fails
    cleanly on bytes that do not match their digest. (A command run on such a layer makes
    engine v0.18.19 panic instead; the pull is one the command would have made anyway.)"""
    try:
        await imported.sync()
        if pulled:
            await imported.rootfs().entries()
    except dagger.QueryError as err:
        return unusable_reason(str(err))
    return None
