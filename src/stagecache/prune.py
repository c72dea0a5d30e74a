"""Prune a cache repository: mark what is live (the current plan's keys, recent entries, the newest
N per stage), sweep the rest. Only images carrying our key label are ever considered."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection

from stagecache.keys import CREATED_LABEL, KEY_LABEL, STAGE_LABEL
from stagecache.refs import ImageRef
from stagecache.registry import RegistryClient, connect
from stagecache.why import INPUTS_SUFFIX, LATEST_SUFFIX


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One tag of the cache repository, with what its labels say."""

    tag: str
    digest: str
    stage: str
    key: str
    created: datetime.datetime | None
    blobs: dict[str, int]  # its layers' and config's digests -> sizes

    @property
    def size(self) -> int:
        """The bytes of its image (its blobs, some of which other entries may share)."""
        return sum(self.blobs.values())


@dataclasses.dataclass(frozen=True)
class PruneDecision:
    """An entry and whether it stays, with the reason."""

    entry: CacheEntry
    keep: bool
    reason: str


def freed_bytes(doomed: Collection[CacheEntry], kept: Collection[CacheEntry]) -> int:
    """The bytes deleting entries frees: their blobs that no kept entry uses, each counted once (entries built
    on an earlier one, stagecache.layered, share its layers)."""
    kept_blobs = {digest for entry in kept for digest in entry.blobs}
    unique = {digest: size for entry in doomed for digest, size in entry.blobs.items() if digest not in kept_blobs}
    return sum(unique.values())


def decide(
    entries: list[CacheEntry],
    *,
    live_keys: Collection[str],
    keep_days: float,
    keep_last: int,
    now: datetime.datetime,
) -> list[PruneDecision]:
    """Mark and sweep: keep live keys, entries younger than keep_days, and the newest keep_last per stage."""
    newest: dict[str, list[CacheEntry]] = {}
    epoch = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    for entry in sorted(entries, key=lambda e: e.created or epoch, reverse=True):
        newest.setdefault(entry.stage, []).append(entry)
    decisions = []
    for entry in entries:
        if entry.key in live_keys:
            decisions.append(PruneDecision(entry, True, "used by the current plan"))
        elif entry.created and now - entry.created < datetime.timedelta(days=keep_days):
            decisions.append(PruneDecision(entry, True, f"younger than {keep_days:g} days"))
        elif entry in newest[entry.stage][:keep_last]:
            decisions.append(PruneDecision(entry, True, f"among the newest {keep_last} of stage {entry.stage}"))
        else:
            decisions.append(PruneDecision(entry, False, "old and not needed"))
    return decisions


async def list_entries(client: RegistryClient, repository: str) -> tuple[list[CacheEntry], list[str]]:
    """Our entries in a repository, and the tags passed over because they are not ours."""
    entries, foreign = [], []
    for tag in await client.tags(repository):
        found = await client.manifest(repository, tag)
        if found is None:
            continue
        manifest, digest = found
        if "config" not in manifest:
            foreign.append(tag)
            continue
        labels = ((await client.image_config(repository, manifest)).get("config") or {}).get("Labels") or {}
        if KEY_LABEL not in labels or not tag.endswith(labels[KEY_LABEL]):
            foreign.append(tag)
            continue
        created = labels.get(CREATED_LABEL)
        entries.append(
            CacheEntry(
                tag=tag,
                digest=digest,
                stage=labels.get(STAGE_LABEL, ""),
                key=labels[KEY_LABEL],
                created=datetime.datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
                blobs={blob["digest"]: blob["size"] for blob in [*manifest.get("layers", []), manifest["config"]]},
            )
        )
    return entries, foreign


async def prune(
    ref: ImageRef,
    *,
    live_keys: Collection[str],
    keep_days: float,
    keep_last: int,
    dry_run: bool,
    username: str = "",
    password: str = "",
    tunnels: dict[str, str] | None = None,
    now: datetime.datetime | None = None,
) -> str:
    """Prune one cache repository; returns a readable account of what was (or would be) deleted."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    async with connect(ref.registry, username, password, tunnels) as client:
        entries, foreign = await list_entries(client, ref.repository)
        decisions = decide(entries, live_keys=live_keys, keep_days=keep_days, keep_last=keep_last, now=now)
        kept_digests = {d.entry.digest for d in decisions if d.keep}
        doomed = [d for d in decisions if not d.keep and d.entry.digest not in kept_digests]
        # An entry's input manifest (why.py) goes with it; `<stage>-latest` is one more tag on an entry.
        kept_tags = {d.entry.tag for d in decisions if d.keep}
        companions = [t for t in foreign if t.endswith(INPUTS_SUFFIX)]
        orphans = [t for t in companions if t.removesuffix(INPUTS_SUFFIX) not in kept_tags]
        foreign = [t for t in foreign if t not in companions and not t.endswith(LATEST_SUFFIX)]
        if not dry_run:
            for decision in doomed:
                await client.delete_manifest(ref.repository, decision.entry.digest)
            for tag in orphans:
                if digest := await client.manifest_digest(ref.repository, tag):
                    await client.delete_manifest(ref.repository, digest)
    verb = "would delete" if dry_run else "deleted"
    lines = [f"{verb} {d.entry.tag} ({d.entry.size} bytes): {d.reason}" for d in doomed]
    lines += [f"kept {d.entry.tag}: {d.reason}" for d in decisions if d.keep]
    lines += [f"{verb} {tag}: the input manifest of an entry that is not kept" for tag in orphans]
    lines += [f"passed over {tag}: not a stage cache entry" for tag in foreign]
    freed = freed_bytes([d.entry for d in doomed], [d.entry for d in decisions if d.keep])
    lines.append(
        f"{verb} {len(doomed)} of {len(entries)} entries: {freed} bytes of blobs no kept entry uses, each "
        f"counted once (the registry's garbage collection frees them), of {sum(d.entry.size for d in doomed)} "
        "bytes in their images"
    )
    return "\n".join(lines)
