"""Image references as values (stagecache.refs): parsed and refused, the read order a build's repositories get,
and their display. Pure logic, no engine."""

from __future__ import annotations

import pytest

from stagecache.refs import ImageRef, read_order

OWN, MAIN = ImageRef.parse("127.0.0.1:5000/ci/cache-pr-7"), ImageRef.parse("127.0.0.1:5000/ci/cache-main")


def test_a_build_reads_the_repository_it_writes_first_and_each_repository_once() -> None:
    assert read_order(OWN, [MAIN, OWN.with_tag("x")]) == (OWN, MAIN)
    assert read_order(None, [MAIN, OWN, MAIN]) == (MAIN, OWN)


def test_a_ref_is_shown_with_its_digest_cut_and_in_a_table_without_its_host_or_long_key() -> None:
    entry = OWN.with_tag("base-" + "a" * 64).with_digest("sha256:" + "f" * 64)
    assert entry.short() == f"127.0.0.1:5000/ci/cache-pr-7:base-{'a' * 64}@sha256:{'f' * 12}"
    assert entry.short(host=False) == f"ci/cache-pr-7:base-{'a' * 12}@sha256:{'f' * 12}"


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
