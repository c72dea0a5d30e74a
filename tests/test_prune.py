"""Prune decisions (stagecache.prune): keep the live, the recent and the newest, sweep the rest; no engine."""

from __future__ import annotations

import datetime

from stagecache.prune import CacheEntry, decide, freed_bytes


def _entry(
    tag: str, stage: str, days_old: float, now: datetime.datetime, blobs: dict[str, int] | None = None
) -> CacheEntry:
    """An entry of a stage, created some days before now, holding these blobs (digest -> size)."""
    return CacheEntry(
        tag,
        "sha256:" + tag.ljust(64, "0")[:64],
        stage,
        tag,
        now - datetime.timedelta(days=days_old),
        {f"layer-of-{tag}": 100} if blobs is None else blobs,
    )


def test_prune_keeps_live_recent_and_newest_entries_and_sweeps_the_rest() -> None:
    now = datetime.datetime(2026, 11, 25, tzinfo=datetime.timezone.utc)
    entries = [
        _entry("a", "base", 30, now),
        _entry("b", "base", 20, now),
        _entry("c", "base", 1, now),
        _entry("d", "test", 40, now),
        _entry("e", "test", 50, now),
    ]
    decisions = {d.entry.tag: d for d in decide(entries, live_keys={"e"}, keep_days=7, keep_last=1, now=now)}
    assert {tag for tag, d in decisions.items() if not d.keep} == {"a", "b"}
    assert decisions["c"].reason == "younger than 7 days"
    assert decisions["d"].reason == "among the newest 1 of stage test"
    assert decisions["e"].reason == "used by the current plan"


def test_prune_counts_the_bytes_it_frees_once_and_not_those_a_kept_entry_shares() -> None:
    # Entries built on an earlier one (stagecache.layered) share its layers: package-2 is package-1 plus a layer.
    now = datetime.datetime(2026, 11, 25, tzinfo=datetime.timezone.utc)
    first = _entry("package-1", "package", 30, now, {"files": 1000, "config-1": 10})
    second = _entry("package-2", "package", 20, now, {"files": 1000, "delta-2": 50, "config-2": 10})
    third = _entry("package-3", "package", 1, now, {"files": 1000, "delta-3": 70, "config-3": 10})
    assert freed_bytes([first, second], [third]) == 10 + 50 + 10  # "files" stays: package-3 uses it
    assert freed_bytes([first, second, third], []) == 1000 + 10 + 50 + 10 + 70 + 10  # each blob once
