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
    code="sha256:" + "c" * 64,
    args={"max_jobs": "2", "cuda_version": "13.0.3"},
    parents={"base": "a" * 64},
    inputs="sha256:" + "b" * 64,
    steps={"FROM": "base", "RUN 1": "0123456789ab"},
)


def test_the_key_of_a_fixed_preimage_never_changes() -> None:
    # The key format, documented in src/stagecache/keys.py: sha256 of this canonical JSON.
    assert PREIMAGE.canonical() == (
        '{"args":{"cuda_version":"13.0.3","max_jobs":"2"},"code":"sha256:'
        + "c" * 64
        + '","inputs":"sha256:'
        + "b" * 64
        + '","layers":"zstd","parents":{"base":"'
        + "a" * 64
        + '"},"schema":4,"stage":"csrc-build","steps":{"FROM":"base","RUN 1":"0123456789ab"},"type":"stagecache.key"}'
    )
    assert PREIMAGE.key() == "23e88819679ec7a298f61c93c441f7f28e2d5fc82d8f5f6784e0ca8e0f0536bc"


@pytest.mark.parametrize(
    "change",
    [
        {"code": "sha256:" + "e" * 64},
        {"args": {"max_jobs": "4", "cuda_version": "13.0.3"}},
        {"parents": {"base": "c" * 64}},
        {"inputs": "sha256:" + "d" * 64},
        {"stage": "build"},
        {"layers": "gzip"},
        {"steps": {"FROM": "base", "RUN 1": "ba9876543210"}},
    ],
    ids=["code", "argument", "parent key", "input files", "stage name", "layer compression", "an instruction"],
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
def test_image_references_parse_into_their_parts(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize("text", ["nvidia/cuda:13.0.3", "127.0.0.1:5000/UPPER", "127.0.0.1:5000/"])
def test_a_reference_without_a_registry_or_malformed_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a fully qualified image reference"):
        ImageRef.parse(text)


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


def test_the_report_renders_a_table_markdown_and_json_that_reads_back() -> None:
    report = BuildReport(
        "test",
        [
            StageRecord("base", "k1", "hit", ImageRef.parse("127.0.0.1:5000/c:base-k1@sha256:" + "f" * 64)),
            StageRecord(
                "test",
                "k2",
                "exported",
                ImageRef.parse("127.0.0.1:5000/c:test-k2"),
                3.0,
                1.0,
                0,
                2048,
                note="a note",
                why="files ~vllm/a.py",
            ),
        ],
        total_seconds=4.5,
        traffic={"pulled": 0, "pushed": 2048, "mounted_blobs": 3},
    )
    assert "test   exported" in report.table() and "dominated by test build (4.0 s)" in report.table()
    assert report.markdown().splitlines()[:3] == [
        "1/2 stages from cache",
        "",
        "| stage | outcome | ref | build s | export s | pulled | pushed | why built; note |",
    ]
    assert (
        report.markdown().splitlines()[5]
        == "| test | exported | c:test-k2 | 3.0 | 1.0 | 0 B | 2.0 kB | files ~vllm/a.py; a note |"
    )
    again = BuildReport.from_json(report.to_json())
    assert again.outcomes() == {"base": "hit", "test": "exported"} and again.traffic == report.traffic


def test_a_miss_names_the_arg_with_its_old_and_new_value_in_one_line() -> None:
    import dataclasses

    from stagecache.why import explain

    old = json.loads(PREIMAGE.canonical())
    new = json.loads(dataclasses.replace(PREIMAGE, args={"max_jobs": "16", "cuda_version": "13.0.3"}).canonical())
    assert explain(old, new, {}, {}) == "ARG max_jobs: '2' -> '16'"


def test_a_miss_names_a_change_of_layer_compression() -> None:
    import dataclasses

    from stagecache.why import explain

    gzip = json.loads(dataclasses.replace(PREIMAGE, layers="gzip").canonical())
    assert explain(json.loads(PREIMAGE.canonical()), gzip, {}, {}) == "layer compression: zstd -> gzip"


def test_a_miss_names_the_files_changed_added_and_removed_the_parent_and_the_code() -> None:
    import dataclasses

    from stagecache.why import explain

    changed = dataclasses.replace(
        PREIMAGE, parents={"base": "d" * 64}, code="sha256:" + "e" * 64, inputs="sha256:" + "f" * 64
    )
    line = explain(
        json.loads(PREIMAGE.canonical()),
        json.loads(changed.canonical()),
        {"csrc/ops.c": "file:1", "csrc/old.c": "file:2"},
        {"csrc/ops.c": "file:3", "csrc/new.c": "file:4"},
    )
    assert line == "parent base changed; the stage's code changed; files ~csrc/ops.c, +csrc/new.c, -csrc/old.c"


def test_look_up_failures_are_summarised_in_the_first_line_and_retries_counted() -> None:
    report = BuildReport(
        "test",
        [StageRecord("base", "k1", "built"), StageRecord("test", "k2", "built")],
        registry_retries=2,
        lookup_failures=["registry 127.0.0.1:5999 unreachable: ConnectError"],
    )
    assert report.table().splitlines()[0] == "0/2 stages from cache: registry 127.0.0.1:5999 unreachable: ConnectError"
    assert report.table().splitlines()[-1].endswith("; 2 registry requests retried")
    again = BuildReport.from_json(report.to_json())
    assert (again.registry_retries, again.lookup_failures) == (2, report.lookup_failures)


def test_of_concurrent_failures_the_first_stage_error_is_reported_however_deeply_grouped() -> None:
    from stagecache.errors import StageError, first_stage_error

    export = StageError("registry refused the push", stage="base", phase="export")
    nested = ExceptionGroup(
        "stages", [ExceptionGroup("parents", [KeyError("base"), export]), StageError("other", stage="rust")]
    )
    assert first_stage_error(nested) is export
    plain = ExceptionGroup("no stage", [KeyError("x")])
    assert first_stage_error(plain) is plain
