"""A hostile checkout runs nothing on the host and gets nothing written into it (issue #31): each vector is
planted in a real git checkout made in tmp_path, and planted code would leave a marker file outside it."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import EXAMPLE, NEXT_DEV, REPO, git, tagged_checkout
from vllm_ci.cli import main
from vllm_ci.errors import UsageError
from vllm_ci.version import git_versions

# Modules a host-side Python of ours imports (the client, the step, setuptools-scm), and the startup hooks:
# each planted at the checkout's root, so a checkout on the module path would run it.
SHADOWED = ("docker", "vllm_ci", "anyio", "stagecache", "setuptools_scm", "vcs_versioning", "dagger")
STARTUP = ("sitecustomize", "usercustomize")


def marker_code(markers: pathlib.Path, name: str) -> str:
    """Python that leaves the marker `name` in the markers folder when it runs."""
    return f"open({str(markers / name)!r}, 'w').close()\n"


def marker_script(markers: pathlib.Path, name: str) -> str:
    """A shell script that leaves the marker `name` (and succeeds, printing nothing)."""
    return f"#!/bin/sh\ntouch {markers / name}\n"


def plant(root: pathlib.Path, markers: pathlib.Path, settings: str = "", shadow: bool = True) -> pathlib.Path:
    """A vLLM-like tree at root with every passive vector planted (modules that shadow ours when `shadow`,
    startup hooks, a mod.py whose functions a setting may name) and [tool.setuptools_scm] holding `settings`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "setup.py").write_text("# setup\n")
    (root / "pyproject.toml").write_text(f'[tool.setuptools_scm]\nfallback_version = "0.1.0"\n{settings}')
    for name in SHADOWED if shadow else ():
        (root / name).mkdir(exist_ok=True)
        (root / name / "__init__.py").write_text(marker_code(markers, f"import-{name}"))
        (root / name / "__main__.py").write_text(marker_code(markers, f"main-{name}"))
    for name in STARTUP:
        (root / f"{name}.py").write_text(marker_code(markers, name))
    (root / "mod.py").write_text(
        marker_code(markers, "mod")
        + "def func(*args, **kwargs):\n    "
        + marker_code(markers, "mod.func")
        + "class Cls(str):\n    pass\n"
    )
    (root / "evil.sh").write_text(marker_script(markers, "command"))
    (root / "evil.sh").chmod(0o755)
    (root / ".gitattributes").write_text("setup.py filter=evil\n")
    return root


def arm_git(checkout: pathlib.Path, markers: pathlib.Path) -> None:
    """The checkout's .git names programs: an fsmonitor hook, a post-index-change hook, a clean filter, gpg for
    log signatures; and setup.py's stat changes, so describe --dirty compares its content (through the filter)."""
    hook = checkout / ".git" / "hooks" / "post-index-change"
    hook.write_text(marker_script(markers, "hook"))
    hook.chmod(0o755)
    fsmonitor = checkout / ".git" / "fsmonitor.sh"
    fsmonitor.write_text(marker_script(markers, "fsmonitor"))
    fsmonitor.chmod(0o755)
    git(checkout, "config", "core.fsmonitor", str(fsmonitor))
    git(checkout, "config", "filter.evil.clean", f"sh -c 'touch {markers / 'filter'}; cat'")
    git(checkout, "config", "log.showSignature", "true")
    git(checkout, "config", "gpg.program", str(checkout / "evil.sh"))
    os.utime(checkout / "setup.py", (1, 1))


def arm_path(tmp_path: pathlib.Path, markers: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hg` and `jj` on PATH that leave markers: setuptools-scm's other backends run them in a checkout
    that has .hg/.jj, whose own config (.hg/hgrc hooks, extensions) names more programs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("hg", "jj"):
        (bindir / name).write_text(marker_script(markers, name))
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


def hostile(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, settings: str = "", importable: bool = True
) -> pathlib.Path:
    """A tagged git checkout with every vector planted and armed. In-process (`importable`), its mod.py is on
    the module path, the worst case for a setting naming "mod:func" (then it shadows none of our packages, which
    would break this process); for a new process, it shadows them and the process must not put it on the path."""
    markers = tmp_path / "ran"
    markers.mkdir()
    checkout = tagged_checkout(plant(tmp_path / "vllm", markers, settings, shadow=not importable))
    arm_git(checkout, markers)
    arm_path(tmp_path, markers, monkeypatch)
    (checkout / ".hg").mkdir()
    (checkout / ".hg" / "hgrc").write_text(f"[hooks]\npre-identify = {markers / 'hgrc'}\n")
    if importable:
        monkeypatch.syspath_prepend(str(checkout))
    return checkout


def snapshot(root: pathlib.Path) -> dict[str, bytes]:
    """Every file of the tree and its content, .git included, except .git/index: git's stat cache of the
    work tree, which describe --dirty refreshes as every `git status` does (content unchanged)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.relative_to(root) != pathlib.Path(".git/index")
    }


def ran(tmp_path: pathlib.Path) -> list[str]:
    """The markers planted code left."""
    return sorted(p.name for p in (tmp_path / "ran").iterdir())


def test_deriving_a_hostile_checkouts_version_runs_none_of_its_programs_and_writes_nothing_into_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = 'write_to = "vllm/_version.py"\nversion_file = "vllm/_version2.py"\n'
    checkout = hostile(tmp_path, monkeypatch, writes + 'version_scheme = "guess-next-dev"\n')
    before = snapshot(checkout)
    node = git(checkout, "rev-parse", "HEAD")[:9]
    version, clean = git_versions(checkout)
    assert ran(tmp_path) == []
    assert snapshot(checkout) == before
    assert not (checkout / "vllm").exists()
    assert clean == f"{NEXT_DEV}{node}" and version.startswith(clean)


def test_a_version_file_outside_the_checkout_is_ignored_not_written_nor_a_crash(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside.py"
    checkout = hostile(tmp_path, monkeypatch, f'version_file = {str(outside)!r}\nwrite_to = "../outside2.py"\n')
    assert git_versions(checkout)[1].startswith(NEXT_DEV)
    assert not outside.exists() and not (tmp_path / "outside2.py").exists() and ran(tmp_path) == []


def test_a_hg_checkout_is_not_read_by_mercurial_only_by_the_fallbacks(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers = tmp_path / "ran"
    markers.mkdir()
    checkout = plant(tmp_path / "vllm", markers)
    arm_path(tmp_path, markers, monkeypatch)
    (checkout / ".hg" / "store").mkdir(parents=True)
    (checkout / ".hg" / "requires").write_text("store\n")
    (checkout / ".hg" / "hgrc").write_text(f"[hooks]\npre-identify = {markers / 'hgrc'}\n")
    before = snapshot(checkout)
    versions = git_versions(checkout)
    assert ran(tmp_path) == [] and snapshot(checkout) == before
    assert versions == ("0.1.0", "0.1.0")


REFUSED = {
    'version_scheme = "mod:func"': "version_scheme = 'mod:func' is not one of setuptools-scm's own schemes",
    'version_scheme = ["guess-next-dev", "mod:func"]': "version_scheme = 'mod:func' is not one of",
    'local_scheme = "mod:func"': "local_scheme = 'mod:func' is not one of setuptools-scm's own schemes",
    'parse = "mod:func"': "parse names a function to import and run",
    'version_cls = "mod:Cls"': "version_cls names a class to import",
    'git_describe_command = "./evil.sh"': "git_describe_command names a command to run",
    '[tool.setuptools_scm.scm.git]\ndescribe_command = ["./evil.sh"]': "scm names commands",
    '[tool.setuptools_scm.scm.git]\npre_parse = "fetch_on_shallow"': "scm names commands",
    'root = ".."': "root points to another repository",
}


@pytest.mark.parametrize("setting", REFUSED)
def test_a_setting_that_names_code_or_a_command_is_refused_in_one_line_with_exit_2_and_nothing_runs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], setting: str
) -> None:
    checkout = hostile(tmp_path, monkeypatch, setting + "\n")
    before = snapshot(checkout)
    monkeypatch.chdir(checkout)  # as the step runs: git_describe_command's ./evil.sh resolves here
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "unix:///nonexistent")  # no engine contact, ever
    assert main(["plan", "--source", str(checkout)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vllm-ci: error: --source: {checkout}/pyproject.toml: "), err
    assert f"[tool.setuptools_scm] {REFUSED[setting]}" in err[0]
    assert ran(tmp_path) == [] and snapshot(checkout) == before


def test_the_client_command_in_a_hostile_checkout_refuses_before_any_engine_contact_and_runs_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = hostile(tmp_path, monkeypatch, 'version_scheme = "mod:func"\n', importable=False)
    before = snapshot(checkout)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///nonexistent"}
    for command in ([sys.executable, "-P", "-m", "vllm_ci"], [str(REPO / ".venv" / "bin" / "vllm-ci")]):
        done = subprocess.run(
            [*command, "plan", "--source", "."], cwd=checkout, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("vllm-ci: error: --source: ") and len(done.stderr.splitlines()) == 1
    assert ran(tmp_path) == [] and snapshot(checkout) == before


@pytest.mark.usefixtures("engine")
def test_a_plan_of_a_hostile_checkout_runs_nothing_of_it_and_writes_nothing_into_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers = tmp_path / "ran"
    markers.mkdir()
    checkout = tmp_path / "vllm"
    shutil.copytree(EXAMPLE, checkout, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    pyproject = (checkout / "pyproject.toml").read_text()
    plant(checkout, markers)
    (checkout / "pyproject.toml").write_text(pyproject + 'write_to = "vllm/_version_w.py"\nversion_file = "v.py"\n')
    tagged_checkout(checkout)
    arm_git(checkout, markers)
    arm_path(tmp_path, markers, monkeypatch)
    before = snapshot(checkout)
    flags = (EXAMPLE / "vllm-ci.args").read_text().splitlines()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-P", "-m", "vllm_ci", *flags, "plan", "--source", ".", "--target", "base"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ran(tmp_path) == [] and snapshot(checkout) == before


def test_a_malformed_pyproject_is_refused_in_one_line_naming_it(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.setuptools_scm\n")
    with pytest.raises(UsageError, match=rf"^--source: {tmp_path}/pyproject.toml: not readable as TOML \("):
        git_versions(tmp_path)


def test_a_filter_driver_git_cannot_switch_off_on_its_command_line_is_refused_with_exit_2_and_never_runs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkout = hostile(tmp_path, monkeypatch)
    (checkout / ".gitattributes").write_text("setup.py filter=a=b\n")
    git(checkout, "config", "filter.a=b.clean", f"sh -c 'touch {tmp_path / 'ran' / 'filter'}; cat'")
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "unix:///nonexistent")
    assert main(["plan", "--source", str(checkout)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vllm-ci: error: --source: setuptools-scm derives no version from {checkout}/.git (its config's "
        "filter driver 'a=b' cannot be switched off on git's command line)"
    ]
    assert ran(tmp_path) == []
