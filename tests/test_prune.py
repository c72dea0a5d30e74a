"""Prune decisions (stagecache.prune): keep the live, the recent and the newest, sweep the rest; no engine."""

from __future__ import annotations

import datetime

from stagecache.prune import CacheEntry, decide


def _entry(tag: str, stage: str, days_old: float, now: datetime.datetime) -> CacheEntry:
    return CacheEntry(
        tag, "sha256:" + tag.ljust(64, "0")[:64], stage, tag, now - datetime.timedelta(days=days_old), 100
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
