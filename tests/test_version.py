"""The version setup.py derives from .git, derived on the host: real git checkouts, no engine."""

from __future__ import annotations

import datetime
import pathlib

import pytest

from conftest import NEXT_DEV, VLLM_VERSION, example_build, git, tagged_checkout, vllm_source
from vllm_ci.cli import main
from vllm_ci.fastpath.install import build_version, version_file
from vllm_ci.stages.common import PRETEND_VERSION
from vllm_ci.version import git_versions

# What csrc-build's ENV gives setuptools-scm, as the pinned Dockerfile writes it.
CSRC_VERSION = example_build().env_value("csrc-build", PRETEND_VERSION)


def checkout_at(root: pathlib.Path) -> pathlib.Path:
    """A small checkout one commit past tag v0.33.0."""
    root.mkdir()
    (root / "setup.py").write_text("# setup\n")
    return tagged_checkout(root)


def test_a_commit_past_a_tag_gets_the_next_dev_version_with_its_node_as_setup_py_derives_it(
    tmp_path: pathlib.Path,
) -> None:
    checkout = checkout_at(tmp_path / "vllm")
    node = git(checkout, "rev-parse", "HEAD")[:9]
    assert git_versions(checkout) == (f"{NEXT_DEV}{node}", f"{NEXT_DEV}{node}")


def test_a_dirty_tree_dates_the_build_version_but_not_rust_builds(tmp_path: pathlib.Path) -> None:
    checkout = checkout_at(tmp_path / "vllm")
    (checkout / "setup.py").write_text("# edited, not committed\n")
    node = git(checkout, "rev-parse", "HEAD")[:9]
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    assert git_versions(checkout) == (f"{NEXT_DEV}{node}.d{today}", f"{NEXT_DEV}{node}")


def test_a_tag_that_does_not_match_upstreams_pattern_is_not_the_version(tmp_path: pathlib.Path) -> None:
    checkout = checkout_at(tmp_path / "vllm")
    git(checkout, "tag", "nightly-7")  # on HEAD, but not v[0-9]*: upstream's describe ignores it
    assert git_versions(checkout)[0].startswith(NEXT_DEV)


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


def test_builds_wheel_version_is_setuptools_scms_with_the_suffix_setup_py_gave_csrc_builds_pretend_one() -> None:
    pretend = CSRC_VERSION
    assert build_version(pretend, "0.33.0", pretend) == "0.33.0"
    assert build_version(f"{pretend}.cu130", "0.33.0", pretend) == "0.33.0+cu130"  # setup.py's sep: "+", or "."
    assert build_version(f"{pretend}.empty", "0.33.1.dev5+gabc1234", pretend) == "0.33.1.dev5+gabc1234.empty"
    assert build_version("0.1.0", "0.33.0", pretend) == "0.1.0"  # a static version: csrc-build's is build's
    assert build_version(f"{pretend}.cu130", "", pretend) == f"{pretend}.cu130"  # no version derived


def test_vllms_version_file_is_rewritten_in_its_version_lines_only_with_setuptools_scms_values() -> None:
    template = (vllm_source() / "vllm" / "_version.py").read_text()  # what setuptools-scm wrote for the sdist
    text = version_file(template, "0.33.1.dev5+gabc1234")
    changed = [(a, b) for a, b in zip(template.splitlines(), text.splitlines()) if a != b]
    assert len(text.splitlines()) == len(template.splitlines()) and len(changed) == 2
    names: dict[str, object] = {}
    exec(compile(text, "_version.py", "exec"), names)
    assert names["__version__"] == "0.33.1.dev5+gabc1234"
    assert names["__version_tuple__"] == (0, 33, 1, "dev5", "gabc1234")


def test_outside_git_the_version_is_what_setuptools_scm_falls_back_to_an_sdists_pkg_info_or_the_projects_fallback(
    tmp_path: pathlib.Path,
) -> None:
    assert git_versions(vllm_source()) == (VLLM_VERSION, VLLM_VERSION)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.setuptools_scm]\nfallback_version = "0.1.0"\n')
    assert git_versions(project) == ("0.1.0", "0.1.0")
