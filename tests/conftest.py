"""Shared fixtures: the real engine and registry that ci/up provisions, and the bundled example."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator

import dagger
import pytest
from dagger import dag

from vllm_ci.args import BuildArgs, read_args_file
from vllm_ci.cli import use_local_engine
from vllm_ci.main import SOURCE_IGNORE, VllmCi
from vllm_ci.upstream import git, tagged_checkout  # noqa: F401  (the tests import them from here)
from vllm_ci.version import git_versions

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "mini-vllm"
REGISTRY = os.environ.get("VLLM_CI_REGISTRY", "127.0.0.1:5000").split("/")[0]
STATE = pathlib.Path(os.environ.get("VLLM_CI_STATE", "/var/lib/vllm-ci"))
REGISTRY_LOG = STATE / "registry" / "registry.log"


def example_args() -> dict[str, object]:
    """The example's constructor arguments (examples/mini-vllm/vllm-ci.args), typed as BuildArgs declares."""
    types = {f.name: f.type for f in dataclasses.fields(BuildArgs)}
    values: dict[str, object] = {}
    for name, value in read_args_file((EXAMPLE / "vllm-ci.args").read_text()).items():
        values[name] = int(value) if "int" in str(types[name]).split("[")[-1][:4] else value
    return values


def example_module(**overrides: object) -> VllmCi:
    """The module object configured for the example, with the version the client command derives for it."""
    version, clean = git_versions(EXAMPLE)
    return VllmCi(**{**example_args(), "git_version": version, "git_version_clean": clean, **overrides})


def source_of(path: pathlib.Path) -> dagger.Directory:
    """A checkout as the module receives it: the same ignore patterns as `dagger call`."""
    # no_cache: the tests edit files within one session, and the engine would reuse the first read.
    return dag.host().directory(str(path), exclude=SOURCE_IGNORE, no_cache=True)


def edit(path: pathlib.Path, line: str) -> None:
    """Append one line to a file: the one-line change of the scenarios."""
    path.write_text(path.read_text() + line + "\n")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the engine (its fixture, however reached) `engine`, so `-m "not engine"`
    leaves out each one, a `wipes_engine` test above all (one that restarted the shared engine under a
    running suite was let through by its markers alone); then run the tests that restart the engine empty
    last, in their order: every test before them reuses what the engine has built (one cold build of the
    example instead of one after each restart)."""
    for item in items:
        if "engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.engine)
    items.sort(key=lambda item: item.get_closest_marker("wipes_engine") is not None)


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the Dagger SDK's loop)."""
    return "asyncio"


@pytest.fixture(scope="session")
def engine() -> None:
    """The engine ci/up started; fail with the command to run when it is not there."""
    use_local_engine()
    if subprocess.run([REPO / "ci" / "engine", "status"], capture_output=True).returncode != 0:
        pytest.fail("the Dagger engine is not running: run ci/up first")
    if subprocess.run([REPO / "ci" / "registry", "status"], capture_output=True).returncode != 0:
        pytest.fail(f"the registry on {REGISTRY} is not running: run ci/up first")


@pytest.fixture(autouse=True)
def engine_still_running(request: pytest.FixtureRequest) -> None:
    """A test on the engine fails at once, naming the engine's log, if the engine died before it
    (a crash would otherwise leave every later test waiting on a socket nobody answers)."""
    if "engine" not in request.fixturenames:
        return
    pidfile = STATE / "engine" / "pid"
    pid = pidfile.read_text().strip() if pidfile.exists() else ""
    if not pid or not pathlib.Path(f"/proc/{pid}").exists():
        pytest.fail(f"the Dagger engine is no longer running; read {STATE / 'engine' / 'engine.log'}")


@pytest.fixture
async def client(engine: None) -> AsyncIterator[None]:
    """A connected Dagger client (the global `dag`)."""
    with open(os.devnull, "w") as log:
        async with dagger.connection(dagger.Config(log_output=log)):
            yield


@pytest.fixture
def example_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A private copy of the example, free to edit."""
    target = tmp_path / "mini-vllm"
    outputs = {EXAMPLE / "build", EXAMPLE / "dist"}  # top-level build outputs only: requirements/build stays

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if pathlib.Path(folder, n) in outputs or n == "__pycache__" or n.endswith(".egg-info")]

    shutil.copytree(EXAMPLE, target, ignore=ignore)
    return target


@pytest.fixture
def cache_repo() -> str:
    """A cache repository of this test's own in the local registry."""
    return f"{REGISTRY}/test/cache-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def warm_cache(engine: None) -> str:
    """main's cache: a repository a cold build of the example has filled, shared by the tests that only read it."""
    from test_stage_cache import run_cold_build

    repo = f"{REGISTRY}/test/main-{uuid.uuid4().hex[:12]}"
    run_cold_build(repo)
    return repo


def fresh_agent() -> None:
    """Restart the engine on an empty state directory: a new CI agent, same registry."""
    subprocess.run([REPO / "ci" / "engine", "fresh"], check=True, capture_output=True)
