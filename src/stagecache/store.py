"""The stage cache: compute keys, import hits with `from_`, build and publish misses, report.

Discipline (as a package store would): look up, look up again just before building, build,
publish. A tag whose image does not carry the expected key label is never used. Reads go
through an ordered list of repositories, first valid hit wins; writes go to one repository."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TextIO

import anyio
import dagger
from dagger import dag

from stagecache.inputs import (
    IGNORE_FILE,
    SourceFile,
    build_context,
    context_patterns,
    excluding_pattern,
    manifest_digest,
    selected,
    source_files,
)
from stagecache.keys import (
    CREATED_LABEL,
    DEFAULT_LAYER_COMPRESSION,
    KEY_LABEL,
    PREIMAGE_LABEL,
    STAGE_LABEL,
    KeyPreimage,
    cache_tag,
    checked_compression,
)
from stagecache.redact import without_userinfo
from stagecache.registry import DEFAULT_ATTEMPTS, ImageRef, RegistryClient, RegistryError, connect
from stagecache.report import BuildReport, Progress, StageRecord, shown_path
from stagecache.traffic import RegistryLog, attribute
from stagecache.why import describe_entry, explain, latest_tag, load_inputs, seal_entry, sealed_digest

# Where the registry's JSON request log is, when bytes are to be measured (tests, bench).
LOG_ENV = "STAGECACHE_REGISTRY_LOG"


class StageError(Exception):
    """The one user-facing failure: one line naming the phase, the stage, its key and the ref
    involved, an exit code, and optionally a longer output (a report) to show before that line."""

    exit_code = 1

    def __init__(
        self, message: str, *, stage: str = "", key: str = "", ref: str = "", phase: str = "build", output: str = ""
    ):
        self.stage, self.key, self.ref, self.phase, self.output = stage, key, ref, phase, output
        where = ", ".join(p for p in (f"stage {stage}" if stage else "", f"key {key[:12]}" if key else "", ref) if p)
        super().__init__(f"{phase}: {message}" + (f" ({where})" if where else ""))


class InputError(StageError):
    """Bad input, found before any container work (exit 2): a reference, an ignore file, an argument."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What a stage's build function gets: its filtered source, its parents' results, the build's
    secrets (never part of a key), and the files it reads as the client hashed them (path -> digest
    and size), so a stage that needs their digests does not export them again."""

    source: dagger.Directory
    parents: Mapping[str, dagger.Container]
    secrets: Mapping[str, dagger.Secret] = dataclasses.field(default_factory=dict)
    files: Mapping[str, SourceFile] = dataclasses.field(default_factory=dict)


BuildFunction = Callable[[StageContext], Awaitable[dagger.Container]]


@dataclasses.dataclass(frozen=True)
class Stage:
    """A stage as data: its inputs are declared once and feed both the source filter and the key."""

    name: str
    build: BuildFunction
    parents: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # include patterns over the source; empty: reads no source
    args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    code: str = ""  # fingerprint of the code that builds it (fingerprint.code_fingerprint)
    # Parents whose files it never reads: it only adds file layers onto them or merges their folders
    # in (with_directory, with_file; labels read from their configs). A hit for one is used without
    # being pulled or checked. Every other parent's files are read.
    not_read: tuple[str, ...] = ()

    def reads_whole(self, parent: str) -> bool:
        """Whether building this stage reads a parent's files (so a hit for it is pulled and checked)."""
        return parent not in self.not_read


@dataclasses.dataclass(frozen=True)
class PlannedStage:
    """A stage with its key, and the cache ref that would be imported if there is one."""

    stage: Stage
    preimage: KeyPreimage
    hit: str | None
    note: str = ""
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the files it reads: path -> digest
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
            "hit": self.hit,
            "why": self.why,
            "note": self.note,
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
    keys: dict[str, str] = {}
    preimages: list[KeyPreimage] = []
    for stage in stages:
        preimage = KeyPreimage(
            stage=stage.name,
            code=stage.code,
            args=dict(stage.args),
            parents={p: keys[p] for p in stage.parents},
            inputs=manifest_digest(reads.get(stage.name, {})),
            layers=layers,
        )
        keys[stage.name] = preimage.key()
        preimages.append(preimage)
    return preimages


class StageCache:
    """Builds a target stage from cached or freshly built stages, and records what happened."""

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        cache_from: Sequence[str] = (),
        cache_to: str = "",
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
        self.cache_from = [_parse_ref(r, "cache repository") for r in cache_from]
        self.cache_to = _parse_ref(cache_to, "cache repository") if cache_to else None
        if self.cache_to and self.cache_to.repo_ref not in [r.repo_ref for r in self.cache_from]:
            # What this build writes, it may read back (a rerun of the same job).
            self.cache_from.insert(0, self.cache_to)
        self.strict = strict
        self.username = registry_username
        self.password = registry_password
        self.log = log
        self.progress = progress or Progress(log)
        self._imported: list[ImageRef] = []  # cache hits this build imported
        self._mounted: set[tuple[str, str]] = set()  # (repository ref, blob digest) already in place
        self._corrupt: dict[str, str] = {}  # stage -> why its entry could not be used
        self._pulled: set[str] = set()  # stages whose files a stage built in this run reads
        self._files: dict[str, SourceFile] = {}  # the planned source's files, as hashed on the client
        self.registry_attempts = registry_attempts
        self.tunnels = dict(tunnels or {})  # loopback port -> host:port of a tunnel the engine opened
        self._retries = 0  # registry requests asked again (429, 5xx, resets)
        self._lookup_failures: set[str] = set()  # why look-ups found nothing to use, once each
        self._ignored: list[str] = []  # the source's ignore patterns, read by each plan
        self._unsealed: set[str] = set()  # hits (ref@digest) found without their record: sealed when used
        self._started = time.monotonic()  # reset by each build: the timeline's zero

    # -- keys and look-ups ------------------------------------------------------------------

    async def plan(self, source: dagger.Directory, target: str) -> list[PlannedStage]:
        """Keys for every stage the target needs, and which would hit; no container work."""
        return await self._plan(source, await self._context(source), target)

    async def _context(self, source: dagger.Directory) -> dagger.Directory:
        """The source as the build context: less what its ignore file excludes (a pattern BuildKit
        would refuse is refused here, naming the file and the pattern)."""
        try:
            self._ignored = await context_patterns(source, self.ignore_file)
        except ValueError as err:
            raise InputError(str(err), phase="plan") from None
        return build_context(source, self._ignored)

    async def _plan(
        self, source: dagger.Directory, context: dagger.Directory, target: str, target_first: bool = False
    ) -> list[PlannedStage]:
        """plan() on the source and its build context (the source less its ignore file's patterns).
        target_first: look up the target alone first, and the other stages only when it misses (a build
        needs nothing else of a hit). Only the files some stage reads are exported and hashed."""
        stages = ordered(self.stages, target)
        read_patterns = sorted({pattern for stage in stages for pattern in stage.inputs})
        self._files = await source_files(context.filter(include=read_patterns)) if read_patterns else {}
        manifest = {path: file.entry for path, file in self._files.items()}
        reads: dict[str, dict[str, str]] = {}

        async def select(stage: Stage) -> None:
            reads[stage.name] = await selected(context, list(stage.inputs), manifest)

        async with anyio.create_task_group() as tg:
            for stage in stages:
                tg.start_soon(select, stage)
        await self._refuse_ignored_reads(source, stages, reads)

        preimages = stage_preimages(stages, reads, self.layer_compression)
        found: dict[str, tuple[str | None, str]] = {}
        why: dict[str, str] = {}

        async def look(preimage: KeyPreimage) -> None:
            found[preimage.stage] = await self._lookup(preimage)
            if found[preimage.stage][0] is None:
                why[preimage.stage] = await self._miss_reason(preimage, reads[preimage.stage])

        pending = preimages
        if target_first:
            await look(preimages[-1])  # ordered(): the target comes last
            pending = preimages[:-1] if found[target][0] is None else []
        try:
            async with anyio.create_task_group() as tg:
                for preimage in pending:
                    tg.start_soon(look, preimage)
        except BaseExceptionGroup as group:  # a strict look-up failed: that error, not a group
            raise first_stage_error(group) from None
        return [
            PlannedStage(s, p, *found.get(s.name, (None, "")), reads[s.name], why.get(s.name, ""), s.name in found)
            for s, p in zip(stages, preimages)
        ]

    async def _refuse_ignored_reads(
        self, source: dagger.Directory, stages: Sequence[Stage], reads: Mapping[str, Mapping[str, str]]
    ) -> None:
        """Refuse, naming the ignore file and its pattern, a file a stage reads by name that the
        checkout has but its ignore file excludes: BuildKit's COPY fails there on a bare `lstat`."""
        if not self._ignored:
            return
        by_path = {
            pattern: stage.name
            for stage in reversed(stages)
            for pattern in stage.inputs
            if not any(c in pattern for c in "*?[\\")
        }
        unread = sorted(set(by_path) - {path for read in reads.values() for path in read})
        if not unread:
            return
        present = set(await source.filter(include=unread).glob("**"))
        for path in (p for p in unread if p in present):
            raise InputError(
                f"{self.ignore_file} excludes {shown_path(path)}, which stage {by_path[path]} reads "
                f"(pattern {shown_path(excluding_pattern(path, self._ignored))})",
                phase="plan",
            )

    async def _miss_reason(self, preimage: KeyPreimage, reads: Mapping[str, str]) -> str:
        """Why a stage misses: its entry was corrupt, or what changed since the newest entry."""
        return self._corrupt.get(preimage.stage) or await self._why_missed(preimage, reads)

    async def _why_missed(self, preimage: KeyPreimage, reads: Mapping[str, str]) -> str:
        """What changed since the newest entry of the stage in the read repositories, in one line."""
        if not self.cache_from:
            return ""
        newest: tuple[str, dict[str, str], ImageRef] | None = None
        for repo in self.cache_from:
            try:
                async with await self._client(repo.registry) as client:
                    found = await client.labels(repo.repository, latest_tag(preimage.stage))
            except RegistryError:
                continue  # the look-up already said the registry failed
            if found and KEY_LABEL in found[0] and (newest is None or found[0].get(CREATED_LABEL, "") > newest[0]):
                newest = (found[0].get(CREATED_LABEL, ""), found[0], repo)
        if newest is None:
            return f"first build: no entry of stage {preimage.stage} in the cache yet"
        _, labels, repo = newest
        try:
            async with await self._client(repo.registry) as client:
                old_inputs = await load_inputs(client, repo.repository, cache_tag(preimage.stage, labels[KEY_LABEL]))
        except RegistryError:
            old_inputs = None
        old = json.loads(labels.get(PREIMAGE_LABEL) or "{}")
        return explain(old, json.loads(preimage.canonical()), old_inputs, reads)

    async def _lookup(self, preimage: KeyPreimage) -> tuple[str | None, str]:
        """First valid hit in the read repositories, as ref@digest, with a note on what was passed over."""
        key = preimage.key()
        notes = []
        tag = cache_tag(preimage.stage, key)
        for repo in self.cache_from:
            try:
                async with await self._client(repo.registry) as client:
                    found = await client.manifest(repo.repository, tag)
                    if found is None:
                        continue
                    manifest, digest = found
                    if "config" not in manifest:  # an index, not one of ours
                        notes.append(f"ignored {repo.repo_ref}:{tag}: no matching key label")
                        continue
                    # Never hand the engine an image the registry cannot serve whole: a missing
                    # layer makes engine v0.18.19 panic when a command needs it.
                    missing = await client.missing_blobs(repo.repository, manifest)
                    config = {} if missing else await client.image_config(repo.repository, manifest)
                    sealed = None if missing else await sealed_digest(client, repo.repository, tag)
            except RegistryError as err:
                if self.strict:
                    raise StageError(str(err), stage=preimage.stage, ref=repo.repo_ref, phase="look-up") from None
                notes.append(str(err))
                if str(err) not in self._lookup_failures:
                    self._warn(f"cache look-up skipped: {err}")
                self._lookup_failures.add(str(err))
                continue
            if missing:
                reason = (
                    f"corrupt entry {repo.repo_ref}:{tag}: blob {missing[0][:19]} missing ({len(missing)} of its blobs)"
                )
                notes.append(reason)
                self._corrupt[preimage.stage] = reason + "; rebuilt"
                self._warn(f"warning: {reason}; the stage is rebuilt instead")
                continue
            labels = (config.get("config") or {}).get("Labels") or {}
            if labels.get(KEY_LABEL) != key:
                notes.append(f"ignored {repo.repo_ref}:{tag}: no matching key label")
                continue
            if sealed is not None and sealed != digest:
                notes.append(
                    f"ignored {repo.repo_ref}:{tag}: not the image this cache exported "
                    f"(its record names {sealed[:19]}, the tag {digest[:19]})"
                )
                continue
            hit = str(repo.with_tag(tag).with_digest(digest))
            if sealed is None:  # whole (every blob checked) but unsealed: used, and sealed at its use (why.py)
                self._unsealed.add(hit)
            return hit, "; ".join(notes)
        return None, "; ".join(notes)

    async def _client(self, registry: str) -> RegistryClient:
        """A registry client with this cache's credentials (read from the secret only here) and tunnels."""
        return connect(
            registry,
            self.username,
            await self._password(),
            self.tunnels,
            attempts=self.registry_attempts,
            on_retry=self._count_retry,
        )

    def _count_retry(self) -> None:
        """One more registry request asked again."""
        self._retries += 1

    async def _password(self) -> str:
        """The registry password, read from its secret only when a request needs it."""
        return await self.password.plaintext() if self.password and self.username else ""

    # -- building -----------------------------------------------------------------------------

    def _authed(self, ctr: dagger.Container, registry: str) -> dagger.Container:
        """The container with registry credentials attached, when there are any."""
        if self.username and self.password:
            return ctr.with_registry_auth(registry, self.username, self.password)
        return ctr

    async def publish(self, ctr: dagger.Container, ref: str) -> str:
        """Publish a container to a ref, with this cache's credentials and layer compression; returns
        ref@digest. Layers already in that compression (imported entries) are mounted as they are; the
        others (new ones, a base image's gzip layers) are compressed once per engine."""
        await self._premount(ImageRef.parse(ref))
        compression = dagger.ImageLayerCompression(self.layer_compression.capitalize())
        return await self._authed(ctr, ImageRef.parse(ref).registry).publish(ref, forced_compression=compression)

    async def _premount(self, target: ImageRef) -> None:
        """Mount the layers of every imported hit into the target repository before a publish.

        The engine mounts a layer it never pulled, but uploads again one that it did pull (an
        imported image that a later stage ran a command on, or a layer shared with a pulled build
        image). Mounting first, from the repository we imported from, makes the engine find every
        such layer already in place: no bytes move."""
        sources = [ref for ref in self._imported if ref.registry == target.registry and ref.repo_ref != target.repo_ref]
        if not sources:
            return
        try:
            async with await self._client(target.registry) as client:
                for source in sources:
                    found = await client.manifest(source.repository, source.digest or source.tag or "")
                    if found is None:
                        continue
                    manifest, _ = found
                    for blob in [*manifest.get("layers", []), manifest["config"]]:
                        if (target.repo_ref, blob["digest"]) in self._mounted:
                            continue
                        if await client.blob_size(target.repository, blob["digest"]) is None:
                            await client.mount_blob(target.repository, blob["digest"], source.repository)
                        self._mounted.add((target.repo_ref, blob["digest"]))
        except RegistryError as err:
            self._warn(f"cache: could not mount imported layers into {target.repo_ref}: {err}")

    async def _unusable(self, imported: dagger.Container, pulled: bool) -> str | None:
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
            return _unusable_reason(str(err))
        return None

    def import_image(self, ref: str) -> dagger.Container:
        """An image from the registry; lazy: nothing is pulled until an operation needs it."""
        return self._authed(dag.container(), ImageRef.parse(ref).registry).from_(ref)

    async def build(
        self, source: dagger.Directory, target: str, image: str = ""
    ) -> tuple[dagger.Container, BuildReport]:
        """The target's container, building only what no cache holds, published to `image` if given;
        with a report (bytes measured at the registry when STAGECACHE_REGISTRY_LOG names its log)."""
        started = self._started = time.monotonic()
        if image:
            _parse_ref(image, "image")  # refuse a bad reference before any work
        meter = RegistryLog(os.environ[LOG_ENV]) if os.environ.get(LOG_ENV) else None
        mark = meter.mark() if meter else 0
        checkout, source = source, await self._context(source)
        plan = await self._plan(checkout, source, target, target_first=True)
        planned_at = self._now()
        self._pulled = {
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
                results[name] = await self._resolve_one(by_name[name], source, resolve, report.record(name))
            except Exception as err:
                failures[name] = err
                raise
            finally:
                done[name].set()
            return results[name]

        container = await resolve(target)
        if image:
            published = container
            exported = report.record(target)
            if exported.outcome == "exported" and exported.ref:
                # Publish what a warm run publishes, the target's cache entry, not the container just
                # built: its config (history, labels) differs, and so would the image digest.
                self._imported.append(ImageRef.parse(exported.ref))
                published = self.import_image(exported.ref)
            try:
                report.image = await self.publish(published, image)
            except dagger.QueryError as err:
                raise StageError(
                    _export_failure(err, ImageRef.parse(image).registry), stage=target, ref=image, phase="push"
                ) from None
        report.total_seconds = time.monotonic() - started
        report.registry_retries = self._retries
        report.lookup_failures = sorted(self._lookup_failures)
        if meter:
            await attribute(report, meter.since(mark), self.username, await self._password())
        return container, report

    async def _resolve_one(
        self,
        planned: PlannedStage,
        source: dagger.Directory,
        resolve: Callable[[str], Awaitable[dagger.Container]],
        record: StageRecord,
    ) -> dagger.Container:
        """Import a hit, or build the stage on its parents and export it."""
        stage = planned.stage
        hit = planned.hit
        if hit is None:  # someone may have published it since the plan, or the plan did not ask
            hit, _ = await self._lookup(planned.preimage)
            if hit is None and not planned.looked_up:  # the target's entry was unusable: say why this one misses
                record.why = await self._miss_reason(planned.preimage, planned.inputs)
        if hit is not None:
            imported = self.import_image(hit)
            problem = await self._unusable(imported, pulled=stage.name in self._pulled)
            if problem is None:
                record.outcome, record.ref = "hit", hit
                record.started_at = record.ended_at = self._now()
                self._imported.append(ImageRef.parse(hit))
                if hit in self._unsealed:
                    await self._seal(planned, hit)
                self.progress.hit(stage.name, hit)
                return imported
            reason = f"unusable entry {_short_digest(hit)}: {problem}"
            record.why = reason + "; rebuilt"
            self._warn(f"warning: {reason}; the stage is rebuilt instead")

        parents: dict[str, dagger.Container] = {}
        self._pulled.update(parent for parent in stage.parents if stage.reads_whole(parent))  # built on: read whole

        async def fetch(parent: str) -> None:
            parents[parent] = await resolve(parent)

        try:
            async with anyio.create_task_group() as tg:
                for parent in stage.parents:
                    tg.start_soon(fetch, parent)
        except BaseExceptionGroup as group:  # a parent failed: report that stage's error, not a group
            raise first_stage_error(group) from None

        record.started_at = self._now()
        self.progress.started(stage.name, record.why)
        filtered = source.filter(include=list(stage.inputs)) if stage.inputs else dag.directory()
        ctr = await stage.build(
            StageContext(filtered, parents, self.secrets, {path: self._files[path] for path in planned.inputs})
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
        record.built_at = self._now()
        record.outcome = "built"
        if self.cache_to is not None:
            ctr = await self._export(ctr, planned, record)
        record.ended_at = self._now()
        self.progress.ended(record)
        return ctr

    async def _export(self, ctr: dagger.Container, planned: PlannedStage, record: StageRecord) -> dagger.Container:
        """Publish a built stage to the write repository; a failure warns unless strict."""
        assert self.cache_to is not None
        ref = str(self.cache_to.with_tag(cache_tag(planned.stage.name, planned.key)))
        created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        began = time.monotonic()
        try:
            published = await self.publish(ctr.with_label(CREATED_LABEL, created), ref)
        except dagger.QueryError as err:
            record.export_seconds = time.monotonic() - began
            message = _export_failure(err, self.cache_to.registry)
            if self.strict:
                raise StageError(message, stage=planned.stage.name, key=planned.key, ref=ref, phase="export") from None
            record.outcome, record.note = "export-failed", message
            self._warn(f"warning: cache export of stage {planned.stage.name} failed, build goes on: {message}")
            return ctr
        with anyio.CancelScope(shield=True):  # a cancel once the entry is stored still seals it (a few requests)
            await self._describe_entry(planned, ref)
        record.export_seconds = time.monotonic() - began
        record.outcome, record.ref = "exported", published
        return ctr

    async def _describe_entry(self, planned: PlannedStage, ref: str) -> None:
        """Leave beside a new entry what explains a later miss: its input manifest and `<stage>-latest`."""
        target = ImageRef.parse(ref)
        try:
            async with await self._client(target.registry) as client:
                await describe_entry(client, target.repository, planned.stage.name, target.tag or "", planned.inputs)
        except RegistryError as err:
            self._warn(f"cache: could not record the inputs of {ref} (a later miss will say less): {err}")

    async def _seal(self, planned: PlannedStage, hit: str) -> None:
        """Seal a hit found without its record, naming the image used, when this build writes to its
        repository (a read-only one stays as it is); a failure only warns, as at export."""
        ref = ImageRef.parse(hit)
        if self.cache_to is None or ref.repo_ref != self.cache_to.repo_ref:
            return
        try:
            async with await self._client(ref.registry) as client:
                if await sealed_digest(client, ref.repository, ref.tag or "") is None:  # nobody sealed it since
                    await seal_entry(client, ref.repository, ref.tag or "", planned.inputs, ref.digest or "")
        except RegistryError as err:
            self._warn(f"cache: could not seal {_short_digest(hit)} with its record: {err}")
            return
        self._unsealed.discard(hit)
        self._warn(f"cache: sealed {_short_digest(hit)}, found without its record")

    def _now(self) -> float:
        """Seconds since this build started, for the report's timeline."""
        return round(time.monotonic() - self._started, 3)

    def _warn(self, message: str) -> None:
        """One line on the log stream, URL credentials blanked."""
        print(without_userinfo(message), file=self.log, flush=True)


def first_stage_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from concurrent stages' failures: the first StageError in the (possibly
    nested) group; the group itself when none is one."""
    for error in group.exceptions:
        found = first_stage_error(error) if isinstance(error, BaseExceptionGroup) else error
        if isinstance(found, StageError):
            return found
    return group


def _parse_ref(text: str, what: str) -> ImageRef:
    """Parse a reference given by the user; a bad one is a one-line error naming it."""
    try:
        return ImageRef.parse(text)
    except ValueError as err:
        raise StageError(f"{what}: {err}", phase="plan") from None


def _short_digest(ref: str) -> str:
    """A ref with its digest cut to the 12 hex digits a person reads."""
    return re.sub(r"(@sha256:[0-9a-f]{12})[0-9a-f]{52}", r"\1", ref)


def _unusable_reason(message: str) -> str:
    """What the engine said of an image it could not use, in a few words."""
    if corrupt := re.search(r"unexpected commit digest \S+, expected (sha256:[0-9a-f]{64})", message):
        return f"layer {corrupt[1][:19]} is corrupt (its bytes do not match its digest)"
    # "failed to resolve image \"<ref>\": <cause>": the ref is already named; keep the cause.
    first = re.sub(r'image "[^"]*"', "image", message.splitlines()[0])
    return first if len(first) <= 300 else first[:140] + " … " + first[-150:]


def exec_summary(err: dagger.ExecError) -> str:
    """A failed command in one line, with the last lines of its error output, URL credentials blanked."""
    tail = " | ".join(line for line in (err.stderr or "").strip().splitlines()[-5:])
    return without_userinfo(f"command {' '.join(err.command)!r} exited {err.exit_code}" + (f": {tail}" if tail else ""))


def _export_failure(err: dagger.QueryError, registry: str) -> str:
    """Why a publish failed, in words a user can act on."""
    text = str(err)
    # \b: a bare "401" also occurs inside the sha256 digests and cache keys the engine's message quotes.
    if re.search(r"\b401\b", text) or "unauthorized" in text.lower() or "unexpected status from HEAD request" in text:
        return f"registry {registry} refused the push (401?): credentials needed or refused"
    if "connection refused" in text or "no such host" in text or "dial tcp" in text:
        return f"registry {registry} unreachable"
    if status := re.search(r"unexpected status from (\w+) request to \S+: ([^\n]+)", text):
        # The status is at the end, after a long URL: keep it, not the first 300 characters.
        return f"registry {registry} answered {status[2].strip()[:100]} to a {status[1]} of the push"
    return text.splitlines()[0][:300]
