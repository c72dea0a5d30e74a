"""Image references as values (stagecache.refs): the read order a build's repositories get, and their display."""

from __future__ import annotations

from stagecache.refs import ImageRef, read_order

OWN, MAIN = ImageRef.parse("127.0.0.1:5000/ci/cache-pr-7"), ImageRef.parse("127.0.0.1:5000/ci/cache-main")


def test_a_build_reads_the_repository_it_writes_first_and_each_repository_once() -> None:
    assert read_order(OWN, [MAIN, OWN.with_tag("x")]) == (OWN, MAIN)
    assert read_order(None, [MAIN, OWN, MAIN]) == (MAIN, OWN)


def test_a_ref_is_shown_with_its_digest_cut_and_in_a_table_without_its_host_or_long_key() -> None:
    entry = OWN.with_tag("base-" + "a" * 64).with_digest("sha256:" + "f" * 64)
    assert entry.short() == f"127.0.0.1:5000/ci/cache-pr-7:base-{'a' * 64}@sha256:{'f' * 12}"
    assert entry.short(host=False) == f"ci/cache-pr-7:base-{'a' * 12}@sha256:{'f' * 12}"
