"""Image references (stagecache.registry.ImageRef), parsed and refused: pure logic, no engine."""

from __future__ import annotations

import pytest

from stagecache.registry import ImageRef


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
