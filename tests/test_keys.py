"""Cache keys, references and prune decisions: pure logic, no engine."""

from __future__ import annotations

import datetime
import json

import pytest

from stagecache.keys import KeyPreimage, cache_tag, explain_difference
from stagecache.prune import CacheEntry, decide
from stagecache.registry import ImageRef
from stagecache.report import BuildReport, StageRecord

PREIMAGE = KeyPreimage(
    stage="csrc-build",
    recipe=1,
    args={"max_jobs": "2", "cuda_version": "13.0.3"},
    parents={"base": "a" * 64},
    inputs="sha256:" + "b" * 64,
    engine="v0.18.19",
)


def test_the_key_of_a_fixed_preimage_never_changes() -> None:
    assert PREIMAGE.canonical() == (
        '{"args":{"cuda_version":"13.0.3","max_jobs":"2"},"engine":"v0.18.19","inputs":"sha256:'
        + "b" * 64 + '","parents":{"base":"' + "a" * 64
        + '"},"recipe":1,"schema":1,"stage":"csrc-build","type":"stagecache.key"}'
    )
    assert PREIMAGE.key() == "bcc164d5bc1533e9dd538aa9b78f9176337993fa118475935f9c6a8536c56742"


@pytest.mark.parametrize(
    "change",
    [{"recipe": 2}, {"args": {"max_jobs": "4", "cuda_version": "13.0.3"}}, {"parents": {"base": "c" * 64}},
     {"inputs": "sha256:" + "d" * 64}, {"engine": "v0.18.20"}, {"stage": "build"}],
    ids=["recipe", "argument", "parent key", "input files", "engine", "stage name"],
)
def test_every_field_of_the_preimage_changes_the_key(change: dict[str, object]) -> None:
    import dataclasses

    assert dataclasses.replace(PREIMAGE, **change).key() != PREIMAGE.key()  # type: ignore[arg-type]


def test_argument_order_does_not_change_the_key() -> None:
    import dataclasses

    reordered = dataclasses.replace(PREIMAGE, args={"cuda_version": "13.0.3", "max_jobs": "2"})
    assert reordered.key() == PREIMAGE.key()


def test_a_miss_explains_which_fields_changed() -> None:
    import dataclasses

    old = json.loads(PREIMAGE.canonical())
    new = json.loads(dataclasses.replace(PREIMAGE, args={"max_jobs": "4", "cuda_version": "13.0.3"}).canonical())
    assert explain_difference(old, new) == ["args.max_jobs"]


def test_the_cache_tag_holds_the_stage_and_the_whole_key() -> None:
    tag = cache_tag("csrc-build", PREIMAGE.key())
    assert tag == f"csrc-build-{PREIMAGE.key()}" and len(tag) <= 128


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("127.0.0.1:5000/vllm/cache:test-abc", "127.0.0.1:5000", "vllm/cache", "test-abc", None),
        ("registry.example.org/a/b/c", "registry.example.org", "a/b/c", None, None),
        ("localhost/x@sha256:" + "e" * 64, "localhost", "x", None, "sha256:" + "e" * 64),
    ],
)
def test_image_references_parse_into_their_parts(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize("text", ["nvidia/cuda:13.0.3", "127.0.0.1:5000/UPPER", "127.0.0.1:5000/"])
def test_a_reference_without_a_registry_or_malformed_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a fully qualified image reference"):
        ImageRef.parse(text)


def _entry(tag: str, stage: str, days_old: float, now: datetime.datetime) -> CacheEntry:
    return CacheEntry(tag, "sha256:" + tag.ljust(64, "0")[:64], stage, tag, now - datetime.timedelta(days=days_old), 100)


def test_prune_keeps_live_recent_and_newest_entries_and_sweeps_the_rest() -> None:
    now = datetime.datetime(2026, 11, 25, tzinfo=datetime.timezone.utc)
    entries = [_entry("a", "base", 30, now), _entry("b", "base", 20, now), _entry("c", "base", 1, now),
               _entry("d", "test", 40, now), _entry("e", "test", 50, now)]
    decisions = {d.entry.tag: d for d in decide(entries, live_keys={"e"}, keep_days=7, keep_last=1, now=now)}
    assert {tag for tag, d in decisions.items() if not d.keep} == {"a", "b"}
    assert decisions["c"].reason == "younger than 7 days"
    assert decisions["d"].reason == "among the newest 1 of stage test"
    assert decisions["e"].reason == "used by the current plan"


def test_the_report_renders_a_table_markdown_and_json_that_reads_back() -> None:
    report = BuildReport("test", [StageRecord("base", "k1", "hit", "127.0.0.1:5000/c:base-k1@sha256:" + "f" * 64),
                                  StageRecord("test", "k2", "miss", "127.0.0.1:5000/c:test-k2", 3.0, 1.0, 0, 2048)],
                         total_seconds=4.5, traffic={"pulled": 0, "pushed": 2048, "mounted_blobs": 3})
    assert "test   miss" in report.table() and "dominated by test build (4.0 s)" in report.table()
    assert report.markdown().splitlines()[0] == "| stage | outcome | ref | build s | export s | pulled | pushed |"
    again = BuildReport.from_json(report.to_json())
    assert again.outcomes() == {"base": "hit", "test": "miss"} and again.traffic == report.traffic
