"""A checkout's files as the stage cache records them (stagecache.inputs): git's model, the ignore file as BuildKit
reads it, and which files a stage's include patterns select. Pure logic, and one engine test: the plain selector
against the engine's own include filter."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from conftest import EXAMPLE, checkout, source_of
from stagecache.inputs import (
    excluding_pattern,
    files_of,
    ignore_patterns,
    manifest_digest,
    manifest_of,
    pattern_problem,
    plain_selector,
)

# Paths that share a prefix with a pattern without being under it, a nested namesake, dotfiles and a symlink.
TRICKY_TREE = (
    "vllm/__init__.py",
    "vllm/.hidden/x.py",
    "vllm2/__init__.py",
    "vllm.py",
    "setup.py",
    "setup.py.bak",
    "tools/setup.py",
    "csrc/ops.c",
    "csrc/sub/deep.h",
    "csrcx/ops.c",
    ".dockerignore",
    "requirements/build/cuda.txt",
    "requirements/build-cuda.txt",
)
PLAIN_PATTERNS = (
    ["vllm/"],
    ["setup.py", "csrc"],
    ["requirements/build/cuda.txt", "link"],
    ["**"],
    ["csrc/", "vllm"],
    ["vllm/**", "setup.py", "setup.py/**"],  # as the stage graph writes a folder and a path (graph.include_patterns)
    ["csrc/sub/**", "tools/setup.py/**"],
)


def tricky_tree(root: pathlib.Path) -> None:
    """TRICKY_TREE under root, each file holding its own path, and `link` a symlink to setup.py."""
    for path in TRICKY_TREE:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(path)
    (root / "link").symlink_to("setup.py")


def test_a_plain_pattern_selects_its_file_or_its_folder_and_everything_under_it_and_nothing_sharing_a_prefix() -> None:
    def chosen(include: list[str]) -> list[str]:
        selects = plain_selector(include)
        assert selects is not None
        return [path for path in (*TRICKY_TREE, "link") if selects(path)]

    assert chosen(["vllm/"]) == chosen(["vllm"]) == ["vllm/__init__.py", "vllm/.hidden/x.py"]
    assert chosen(["setup.py", "csrc"]) == ["setup.py", "csrc/ops.c", "csrc/sub/deep.h"]
    assert chosen(["requirements/build/cuda.txt"]) == ["requirements/build/cuda.txt"]
    assert chosen(["**"]) == [*TRICKY_TREE, "link"]
    assert chosen(["vllm/**", "setup.py/**"]) == ["vllm/__init__.py", "vllm/.hidden/x.py"]  # not the file setup.py


@pytest.mark.parametrize(
    "pattern",
    [
        "vllm/*.py",
        "**/x.py",
        "vllm/**/x.py",
        "**/",
        "req?",
        "re[q]",
        "a\\b",
        "/setup.py",
        "./setup.py",
        "a/../b",
        "a//b",
        "",
    ],
)
def test_a_pattern_with_a_wildcard_or_an_unclean_path_is_left_to_the_engines_matcher(pattern: str) -> None:
    assert plain_selector(["vllm/", pattern]) is None


@pytest.mark.anyio
async def test_the_plain_selector_selects_what_the_engines_include_filter_selects(
    client: None, tmp_path: pathlib.Path
) -> None:
    tricky_tree(tmp_path)
    source = source_of(tmp_path)
    for include in PLAIN_PATTERNS:
        engine = {path for path in await source.filter(include=include).glob("**") if not path.endswith("/")}
        engine = {path for path in engine if not (tmp_path / path).is_dir() or (tmp_path / path).is_symlink()}
        selects = plain_selector(include)
        assert selects is not None
        assert {path for path in (*TRICKY_TREE, "link") if selects(path)} == engine, include


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
