"""The stat cache (stagecache.statcache): a checkout's hashes reused exactly as safely as git's index reuses
them, and a manifest equal to an export's. Pure logic on files of this machine, no engine."""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from stagecache import statcache
from stagecache.inputs import files_of

DAY_NS = 86_400 * 10**9


def aged(path: pathlib.Path) -> None:
    """Set a file's mtime a day back, as a checkout's files are long before a build."""
    old = time.time_ns() - DAY_NS
    os.utime(path, ns=(old, old), follow_symlinks=False)


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """A checkout with an old module, an old script and a symlink, and its stat cache beside it."""
    root = tmp_path / "checkout"
    (root / "vllm").mkdir(parents=True)
    (root / "vllm" / "a.py").write_text("A = 1\n")
    (root / "vllm" / "b.py").write_text("B = 2\n")
    (root / "tool.sh").write_text("echo hi\n")
    (root / "link.py").symlink_to("vllm/a.py")
    for path in root.rglob("*"):
        aged(path)
    return root


def hashing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the stat cache hashes from now on, in order."""
    hashed: list[str] = []
    real = statcache.file_of

    def counted(path: str, info: os.stat_result) -> statcache.SourceFile:
        hashed.append(path)
        return real(path, info)

    monkeypatch.setattr(statcache, "file_of", counted)
    return hashed


def run(root: pathlib.Path) -> dict[str, str]:
    """One plan's hashing of every file of the checkout: path -> manifest entry."""
    paths = [str(p.relative_to(root)) for p in root.rglob("*")]
    files = statcache.hashed_files(str(root), paths, root.parent / "stat.json")
    return {path: file.entry for path, file in files.items()}


def test_an_unchanged_old_file_is_never_hashed_again(tree: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = run(tree)
    hashed = hashing(monkeypatch)
    assert run(tree) == first
    assert hashed == []


@pytest.mark.parametrize("change", ["edit", "chmod", "rename", "new inode", "edit in the same second"])
def test_each_change_to_a_file_moves_its_entry_or_its_path(
    tree: pathlib.Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    before = run(tree)
    module = tree / "vllm" / "a.py"
    info = module.stat()
    if change == "edit":
        module.write_text("A = 100\n")
    elif change == "chmod":
        module.chmod(0o755)
    elif change == "rename":
        module.rename(tree / "vllm" / "c.py")
    elif change == "new inode":  # replaced by a new file of other content, same size, with the old mtime
        module.unlink()
        module.write_text("A = 9\n")
        os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns))
    else:  # same size, same mtime: only ctime tells, as for git
        module.write_text("A = 7\n")
        os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns))
    hashed = hashing(monkeypatch)
    after = run(tree)
    assert after == {path: file.entry for path, file in files_of(str(tree)).items()}  # as a fresh hash says
    assert after != before
    assert {p for p in after if after[p] != before.get(p)} <= {"vllm/a.py", "vllm/c.py"}
    assert {pathlib.Path(p).name for p in hashed} <= {"a.py", "c.py"}  # the others' hashes reused


def test_a_file_not_older_than_the_cache_is_hashed_again_even_with_every_stat_field_unchanged(
    tree: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = tree / "vllm" / "fresh.py"
    fresh.write_text("F = 1\n")  # mtime now: the cache written right after it cannot vouch for it (git's racy rule)
    run(tree)
    hashed = hashing(monkeypatch)
    run(tree)
    assert hashed == [str(fresh)]


def test_the_hashes_equal_an_exports_manifest_symlinked_folders_and_folders_skipped(tree: pathlib.Path) -> None:
    (tree / "linked").symlink_to("vllm", target_is_directory=True)
    listed = [str(p.relative_to(tree)) for p in tree.rglob("*")] + ["linked/a.py", "vllm/", "gone.py"]
    files = statcache.hashed_files(str(tree), listed, tree.parent / "stat.json")
    assert files == files_of(str(tree))
    assert files["tool.sh"].entry.startswith("file:") and files["link.py"].entry.startswith("link:")


def test_an_unreadable_cache_is_an_empty_one(tree: pathlib.Path) -> None:
    (tree.parent / "stat.json").write_text("{not json")
    assert run(tree) == {path: file.entry for path, file in files_of(str(tree)).items()}


def test_a_run_that_hashes_nothing_leaves_the_cache_file_as_it_was(tree: pathlib.Path) -> None:
    run(tree)
    cache = tree.parent / "stat.json"
    written, mtime = cache.read_bytes(), cache.stat().st_mtime_ns
    run(tree)  # every file old and unchanged: the cache vouches for all, so nothing of it is written again
    assert (cache.read_bytes(), cache.stat().st_mtime_ns) == (written, mtime)
    (tree / "vllm" / "b.py").unlink()
    run(tree)  # a file gone: written again without it
    assert "vllm/b.py" not in cache.read_text()
