"""A checkout on this machine planned here (stagecache.hostsource): its listing equals the engine's upload of it
filtered by the ignore file, on a tree and patterns built to trip the matcher; the patterns it cannot match as the
engine does are left to the engine."""

from __future__ import annotations

import pathlib

import pytest
from dagger import dag

from conftest import vllm_source
from stagecache.hostsource import HostFolder, matchable
from stagecache.inputs import ignore_patterns
from vllm_ci.args import SOURCE_IGNORE

# Files each of the patterns below keeps or drops, with near misses beside them: case, prefixes, dotfiles, depth.
TREE = (
    "setup.py",
    "Setup.py",
    "README.md",
    "readme.md",
    ".dockerignore",
    ".git/config",
    ".github/workflows/ci.yml",
    "docs/index.md",
    "docs/mkdocs/gen_files/generate_argparse.py",
    "docs/mkdocs/gen_files/other.py",
    "build/out.o",
    "tools/build/keep.py",
    "dist/x.whl",
    "vllm/__init__.py",
    "vllm/__pycache__/x.cpython-312.pyc",
    "vllm/sub/__pycache__/y.cpython-312.pyc",
    "vllm/x.pyc",
    "vllm/x.pyd",
    "vllm/x.pyz",
    "vllm/_C.so",
    "vllm/sub/_D.so",
    "vllm/vllm-rs",
    "vllm/scratch.tmp",
    "vllm/keep.tmp",
    "vllm/a$py.class",
    "vllm.egg-info/PKG-INFO",
    "csrc/ops.cu",
    "csrc/sub/deep.h",
    "cmake-build-debug/x",
    "cmake-build/x",
    "rust/target/debug/vllm-rs",
    "rust/src/lib.rs",
    "lib/x.py",
    "vllm/lib/x.py",
    "requirements/common.txt",
    "requirements/cuda.txt",
)
EXTRA_IGNORED = [
    "vllm/*.tmp",
    "!vllm/keep.tmp",
    "csrc",
    "!csrc/sub/*.h",
    "*.md",
    "!README.md",
    "requirements/*",
    "!requirements/c?da.txt",
    "**/deep.h",
]


def make_tree(root: pathlib.Path) -> None:
    """TREE under root, each file holding its own path, and two symlinks."""
    for path in TREE:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(path)
    (root / "link").symlink_to("setup.py")
    (root / "vllm" / "folder-link").symlink_to("sub")


@pytest.mark.anyio
async def test_the_listing_here_equals_the_engines_upload_filtered_by_the_ignore_file(
    client: None, tmp_path: pathlib.Path
) -> None:
    make_tree(tmp_path)
    vllms = ignore_patterns((vllm_source() / ".dockerignore").read_text())
    for ignored in ([], vllms, [*vllms, *EXTRA_IGNORED]):
        assert matchable([*SOURCE_IGNORE, *ignored])
        upload = dag.host().directory(str(tmp_path), exclude=SOURCE_IGNORE, no_cache=True)
        listed = await (upload.filter(exclude=ignored) if ignored else upload).glob("**")
        engine = sorted(
            p for p in listed if not p.endswith("/") and not (tmp_path / p).is_dir() or (tmp_path / p).is_symlink()
        )
        here = HostFolder(str(tmp_path), tuple(SOURCE_IGNORE), tuple(ignored)).files()
        assert here == engine, ignored
    # The tree trips each kind of pattern: some of it is kept and some left out by every list above.
    assert "docs/mkdocs/gen_files/generate_argparse.py" in here and "docs/index.md" not in here
    assert "vllm/keep.tmp" in here and "vllm/scratch.tmp" not in here and "csrc/ops.cu" not in here


def test_a_file_the_upload_excludes_or_that_is_outside_the_folder_is_not_read_here(tmp_path: pathlib.Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "outside").symlink_to("/etc/hostname")
    folder = HostFolder(str(tmp_path), tuple(SOURCE_IGNORE))
    assert folder.text("setup.py") == "setup.py"
    assert folder.text(".git/config") is None  # excluded from the upload
    assert folder.text("outside") is None and folder.text("../x") is None and folder.text("vllm") is None
    assert folder.holds_file("link") and not folder.holds_file("vllm") and not folder.holds_file("docs/index.md")


@pytest.mark.parametrize("pattern", ["a\\*b", "vllm/[!a]*", "vllm/[^a]*"])
def test_a_pattern_whose_escape_or_class_reads_otherwise_here_is_left_to_the_engine(pattern: str) -> None:
    assert not matchable([*SOURCE_IGNORE, pattern])
