"""The version setup.py derives from .git, derived on the host: real git checkouts, no engine."""

from __future__ import annotations

import datetime
import pathlib

import pytest

from conftest import git, tagged_checkout
from vllm_ci.cli import main
from vllm_ci.version import git_versions


def checkout_at(root: pathlib.Path) -> pathlib.Path:
    """A small checkout one commit past tag v0.33.0."""
    root.mkdir()
    (root / "setup.py").write_text("# setup\n")
    return tagged_checkout(root)


def test_a_commit_past_a_tag_gets_the_next_dev_version_with_its_node_as_setup_py_derives_it(tmp_path: pathlib.Path) -> None:
    checkout = checkout_at(tmp_path / "vllm")
    node = git(checkout, "rev-parse", "HEAD")[:9]
    assert git_versions(checkout) == (f"0.33.1.dev1+g{node}", f"0.33.1.dev1+g{node}")


def test_a_dirty_tree_dates_the_build_version_but_not_rust_builds(tmp_path: pathlib.Path) -> None:
    checkout = checkout_at(tmp_path / "vllm")
    (checkout / "setup.py").write_text("# edited, not committed\n")
    node = git(checkout, "rev-parse", "HEAD")[:9]
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    assert git_versions(checkout) == (f"0.33.1.dev1+g{node}.d{today}", f"0.33.1.dev1+g{node}")


def test_a_tag_that_does_not_match_upstreams_pattern_is_not_the_version(tmp_path: pathlib.Path) -> None:
    checkout = checkout_at(tmp_path / "vllm")
    git(checkout, "tag", "nightly-7")  # on HEAD, but not v[0-9]*: upstream's describe ignores it
    assert git_versions(checkout)[0].startswith("0.33.1.dev1+g")


def test_a_folder_that_is_not_a_checkout_root_has_no_version(tmp_path: pathlib.Path) -> None:
    checkout = checkout_at(tmp_path / "vllm")
    (checkout / "sub").mkdir()
    assert git_versions(checkout / "sub") == ("", "")


def test_a_git_folder_git_cannot_read_is_one_line_and_exit_2_before_any_container_work(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkout = tmp_path / "vllm"
    (checkout / ".git").mkdir(parents=True)
    (checkout / ".git" / "HEAD").write_text("not a ref\n")
    assert main(["plan", "--source", str(checkout)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vllm-ci: error: --source: setuptools-scm derives no version from ")
