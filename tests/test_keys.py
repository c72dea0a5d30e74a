"""Cache keys (stagecache.keys): the preimage's digest and tag, and which fields changed: pure logic, no engine."""

from __future__ import annotations

import json

import pytest

from conftest import PREIMAGE
from stagecache.keys import cache_tag, explain_difference


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
