"""A checkout's files as the stage cache records them (stagecache.inputs): git's model, and the ignore file as BuildKit reads it. Pure logic, no engine."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from conftest import EXAMPLE, checkout
from stagecache.inputs import (
    excluding_pattern,
    files_of,
    ignore_patterns,
    manifest_digest,
    manifest_of,
    pattern_problem,
)


def test_a_tree_checked_out_under_umask_002_and_022_by_different_owners_has_one_manifest(
    tmp_path: pathlib.Path,
) -> None:
    laptop = checkout(EXAMPLE, tmp_path / "laptop", 0o002)
    agent = checkout(EXAMPLE, tmp_path / "agent", 0o022)
    os.utime(agent / "setup.py", (1, 1))
    shutil.chown(agent / "setup.py", user=65534, group=65534)
    assert (laptop / "setup.py").stat().st_mode != (agent / "setup.py").stat().st_mode
    assert manifest_of(str(laptop)) == manifest_of(str(agent))
    assert manifest_digest(manifest_of(str(laptop))) == manifest_digest(manifest_of(str(agent)))


def test_an_executable_bit_changes_the_manifest_entry_of_that_file_only(tmp_path: pathlib.Path) -> None:
    tree = checkout(EXAMPLE, tmp_path / "tree", 0o022)
    before = manifest_of(str(tree))
    (tree / "setup.py").chmod(0o755)
    after = manifest_of(str(tree))
    assert {p for p in before if before[p] != after[p]} == {"setup.py"}
    assert after["setup.py"].startswith("exec:") and before["setup.py"].startswith("file:")


def test_a_symlink_is_recorded_by_its_target(tmp_path: pathlib.Path) -> None:
    tree = checkout(EXAMPLE, tmp_path / "tree", 0o022)
    (tree / "link").symlink_to("setup.py")
    first = manifest_of(str(tree))["link"]
    (tree / "link").unlink()
    (tree / "link").symlink_to("pyproject.toml")
    assert first.startswith("link:") and manifest_of(str(tree))["link"] != first


def test_the_record_row_from_the_clients_hash_of_a_source_file_is_the_one_an_installer_writes(
    tmp_path: pathlib.Path,
) -> None:
    from vllm_ci.fastpath.install import record_row

    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "empty.py").write_bytes(b"")
    (tmp_path / "vllm" / "model.py").write_bytes(b"x = 1\n" * 1000)
    files = files_of(str(tmp_path))
    empty, model = files["vllm/empty.py"], files["vllm/model.py"]
    # The wheel spec's RECORD hash: urlsafe base64 of the raw sha256, padding stripped; sha256 of b"" is well known.
    assert record_row("vllm/empty.py", empty.sha256, empty.size) == [
        "vllm/empty.py",
        "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
        "0",
    ]
    assert record_row("vllm/model.py", model.sha256, model.size)[2] == "6000"


def test_a_dockerignore_is_read_as_buildkit_reads_it() -> None:
    text = "\ufeff# a comment\n/build\n  dist  \n\n*.py[cod]\n ! vllm/keep.so\nvllm//x/../*.so\n   # not a comment: a pattern\n/\n"
    assert ignore_patterns(text) == [
        "build",
        "dist",
        "*.py[cod]",
        "!vllm/keep.so",
        "vllm/*.so",
        "# not a comment: a pattern",
        "/",
    ]


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("[", "its [ class is not closed"),
        ("vllm/[a-z", "its [ class is not closed"),
        ("!docs\\", "it ends in a lone \\"),
        ("*.py[cod]", ""),
        ("[]]x", ""),
        ("a\\[b", ""),
        ("**/*.so", ""),
    ],
)
def test_an_ignore_pattern_buildkits_matcher_refuses_is_named_with_why(pattern: str, problem: str) -> None:
    assert pattern_problem(pattern) == problem


def test_the_ignore_pattern_named_for_an_excluded_file_is_the_last_that_matches_it_or_a_folder_above() -> None:
    assert (
        excluding_pattern("requirements/common.txt", ["docs", "requirements", "!requirements/cuda.txt"])
        == "requirements"
    )
    assert excluding_pattern("requirements/common.txt", ["*", "!requirements/common.txt"]) == "?"
