"""Planning a build: each stage's key from the files it reads, the cache look-ups that find a
valid hit (a corrupt, foreign or unsealed entry is noticed here), and, for a miss, why it missed.
No container is built here."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import TextIO

import anyio
import dagger

from stagecache.access import RegistryAccess
from stagecache.errors import InputError, StageError, first_stage_error, warn
from stagecache.hostsource import host_folder, matchable, noted
from stagecache.inputs import (
    SourceFile,
    build_context,
    checked_patterns,
    context_patterns,
    excluding_pattern,
    plain_selector,
    selected,
    source_files,
)
from stagecache.keys import CREATED_LABEL, KEY_LABEL, PREIMAGE_LABEL, KeyPreimage, cache_tag
from stagecache.layered import Previous, builds_on
from stagecache.refs import ImageRef
from stagecache.registry import RegistryError
from stagecache.report import shown_path
from stagecache.stages import PlannedStage, Stage, ordered, stage_preimages
from stagecache.statcache import hashed_files
from stagecache.state import BuildState
from stagecache.why import explain, latest_tag, load_inputs, sealed_digest


class Planner:
    """Keys for the stages a target needs, and which of them the read repositories hold."""

    def __init__(
        self,
        stages: Mapping[str, Stage],
        *,
        cache_from: Sequence[ImageRef],
        strict: bool,
        ignore_file: str,
        layer_compression: str,
        access: RegistryAccess,
        state: BuildState,
        log: TextIO,
    ) -> None:
        self.stages = stages
        self.cache_from = cache_from  # read in order, first valid hit wins
        self.strict = strict  # a failed look-up fails the build instead of warning
        self.ignore_file = ignore_file  # the source's own ignore file (path in it); empty: none
        self.layer_compression = layer_compression  # of the entries looked up (part of each key)
        self.access = access
        self.state = state
        self.log = log

    async def context(self, source: dagger.Directory) -> dagger.Directory:
        """The source as the build context: less what its ignore file excludes (a pattern BuildKit
        would refuse is refused here, naming the file and the pattern)."""
        host = host_folder(source)
        try:
            if host is None:
                self.state.ignored = await context_patterns(source, self.ignore_file)
            else:  # read here: reading it in the engine would upload the whole folder first
                text = host.text(self.ignore_file) if self.ignore_file else None
                self.state.ignored = checked_patterns(text, self.ignore_file) if text is not None else []
        except ValueError as err:
            raise InputError(str(err), phase="plan") from None
        context = build_context(source, self.state.ignored)
        if host is not None and matchable([*host.exclude, *self.state.ignored]):
            noted(context, dataclasses.replace(host, ignored=tuple(self.state.ignored)))  # listed here (files_read)
        return context

    async def plan(
        self, source: dagger.Directory, context: dagger.Directory, target: str, target_first: bool = False
    ) -> list[PlannedStage]:
        """StageCache.plan() on the source and its build context (the source less its ignore file's patterns).
        target_first: look up the target alone first, and the other stages only when it misses (a build
        needs nothing else of a hit). Only the files some stage reads are exported and hashed."""
        stages = ordered(self.stages, target)
        read_patterns = sorted({pattern for stage in stages for pattern in stage.reads})
        self.state.files = await self.files_read(source, context, read_patterns)
        manifest = {path: file.entry for path, file in self.state.files.items()}
        reads: dict[str, dict[str, str]] = {}

        async def select(stage: Stage) -> None:
            reads[stage.name] = await selected(context, list(stage.reads), manifest)

        async with anyio.create_task_group() as tg:
            for stage in stages:
                tg.start_soon(select, stage)
        await self._refuse_ignored_reads(source, stages, reads)

        preimages = stage_preimages(stages, reads, self.layer_compression)
        found: dict[str, tuple[ImageRef | None, str]] = {}
        why: dict[str, str] = {}

        async def look(preimage: KeyPreimage) -> None:
            found[preimage.stage] = await self.lookup(preimage)
            if found[preimage.stage][0] is None:
                why[preimage.stage] = await self.miss_reason(preimage, reads[preimage.stage])

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
        planned = []
        for stage, preimage in zip(stages, preimages):
            hit, note = found.get(stage.name, (None, ""))
            planned.append(
                PlannedStage(
                    stage=stage,
                    preimage=preimage,
                    hit=hit,
                    note=note,
                    files=reads[stage.name],
                    why=why.get(stage.name, ""),
                    looked_up=stage.name in found,
                )
            )
        return planned

    async def files_read(
        self, source: dagger.Directory, context: dagger.Directory, read_patterns: list[str]
    ) -> dict[str, SourceFile]:
        """The files of the context that some stage reads, hashed: on this machine when the source is a folder
        of it (hostsource.on_host: listed here, or by the engine when its patterns are not matchable here; the
        stat cache spares the unchanged ones their hash), else exported from the engine and hashed."""
        if not read_patterns:
            return {}
        read = context.filter(include=read_patterns)
        host = host_folder(source)
        if host is None:
            return await source_files(read)
        selects = plain_selector(read_patterns)
        if (listed := host_folder(context)) is not None and selects is not None:  # no upload, no engine call
            paths = [path for path in await anyio.to_thread.run_sync(listed.files) if selects(path)]
        elif selects is not None:  # one listing, no filter in the engine
            paths = [path for path in await context.glob("**") if selects(path.rstrip("/"))]
        else:
            paths = await read.glob("**")
        return await anyio.to_thread.run_sync(hashed_files, host.root, paths)

    async def _refuse_ignored_reads(
        self, source: dagger.Directory, stages: Sequence[Stage], reads: Mapping[str, Mapping[str, str]]
    ) -> None:
        """Refuse, naming the ignore file and its pattern, a file a stage reads by name that the
        checkout has but its ignore file excludes: BuildKit's COPY fails there on a bare `lstat`."""
        if not self.state.ignored:
            return
        by_path = {
            pattern: stage.name
            for stage in reversed(stages)
            for pattern in stage.reads
            if not any(c in pattern for c in "*?[\\")
        }
        unread = sorted(set(by_path) - {path for read in reads.values() for path in read})
        if not unread:
            return
        if (host := host_folder(source)) is not None:
            present = {path for path in unread if host.holds_file(path)}
        else:
            present = set(await source.filter(include=unread).glob("**"))
        for path in (p for p in unread if p in present):
            raise InputError(
                f"{self.ignore_file} excludes {shown_path(path)}, which stage {by_path[path]} reads "
                f"(pattern {shown_path(excluding_pattern(path, self.state.ignored))})",
                phase="plan",
            )

    async def miss_reason(self, preimage: KeyPreimage, reads: Mapping[str, str]) -> str:
        """Why a stage misses: its entry was corrupt, or what changed since the newest entry."""
        return self.state.corrupt.get(preimage.stage) or await self._why_missed(preimage, reads)

    async def _newest(self, stage: str) -> tuple[dict[str, str], ImageRef] | None:
        """The labels of the newest entry of a stage in the read repositories, and its repository."""
        newest: tuple[str, dict[str, str], ImageRef] | None = None
        for repo in self.cache_from:
            try:
                client = await self.access.client(repo.registry)
                found = await client.labels(repo.repository, latest_tag(stage))
            except RegistryError:
                continue  # the look-up already said the registry failed
            if found and KEY_LABEL in found[0] and (newest is None or found[0].get(CREATED_LABEL, "") > newest[0]):
                newest = (found[0].get(CREATED_LABEL, ""), found[0], repo)
        return None if newest is None else newest[1:]

    async def previous(self, preimage: KeyPreimage) -> Previous | None:
        """An incremental stage's previous entry (layered.py): the newest entry of the stage whose preimage
        differs from this one's in its input files alone, whole in the registry, with its input manifest;
        None when there is none, or the registry does not answer (the stage then writes all its files; a strict
        cache fails the look-up instead, as for a hit)."""
        newest = await self._newest(preimage.stage)
        if newest is None:
            return None
        labels, repo = newest
        try:
            old = json.loads(labels.get(PREIMAGE_LABEL) or "{}")
        except ValueError:  # a label that is not ours: nothing to build on
            return None
        if not builds_on(old, json.loads(preimage.canonical())):
            return None
        entry, _ = await self.find(preimage.stage, labels[KEY_LABEL])  # whole, ours, sealed: as a hit is checked
        if entry is None or entry.tag is None:
            return None
        try:
            client = await self.access.client(entry.registry)
            files = await load_inputs(client, entry.repository, entry.tag)
        except RegistryError:
            return None
        return None if files is None else Previous(entry, files, labels)

    async def _why_missed(self, preimage: KeyPreimage, reads: Mapping[str, str]) -> str:
        """What changed since the newest entry of the stage in the read repositories, in one line."""
        if not self.cache_from:
            return ""
        newest = await self._newest(preimage.stage)
        if newest is None:
            return f"first build: no entry of stage {preimage.stage} in the cache yet"
        labels, repo = newest
        try:
            client = await self.access.client(repo.registry)
            old_inputs = await load_inputs(client, repo.repository, cache_tag(preimage.stage, labels[KEY_LABEL]))
        except RegistryError:
            old_inputs = None
        old = json.loads(labels.get(PREIMAGE_LABEL) or "{}")
        notes = self.stages[preimage.stage].step_notes if preimage.stage in self.stages else {}
        return explain(old, json.loads(preimage.canonical()), old_inputs, reads, notes)

    async def lookup(self, preimage: KeyPreimage) -> tuple[ImageRef | None, str]:
        """First valid hit in the read repositories, as ref@digest, with a note on what was passed over."""
        return await self.find(preimage.stage, preimage.key())

    async def find(self, stage: str, key: str) -> tuple[ImageRef | None, str]:
        """The first valid entry of a stage's key in the read repositories (whole in the registry, carrying
        that key, the image its record names), as ref@digest, with a note on what was passed over."""
        notes = []
        tag = cache_tag(stage, key)
        for repo in self.cache_from:
            try:
                client = await self.access.client(repo.registry)
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
                    raise StageError(str(err), stage=stage, ref=repo.repo_ref, phase="look-up") from None
                notes.append(str(err))
                if str(err) not in self.state.lookup_failures:
                    self._warn(f"cache look-up skipped: {err}")
                self.state.lookup_failures.add(str(err))
                continue
            if missing:
                reason = (
                    f"corrupt entry {repo.repo_ref}:{tag}: blob {missing[0][:19]} missing ({len(missing)} of its blobs)"
                )
                notes.append(reason)
                self.state.corrupt[stage] = reason + "; rebuilt"
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
            hit = repo.with_tag(tag).with_digest(digest)
            if sealed is None:  # whole (every blob checked) but unsealed: used, and sealed at its use (why.py)
                self.state.unsealed.add(hit)
            return hit, "; ".join(notes)
        return None, "; ".join(notes)

    def _warn(self, message: str) -> None:
        """One line on the log stream, URL credentials blanked."""
        warn(self.log, message)
