"""Shared fixtures: the real engine and registry that ci/up provisions, and the bundled example."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import anyio
import dagger
import pytest
from dagger import dag

from local_registry import RegistryAPI
from stagecache import StageContext
from stagecache.hostsource import on_host
from stagecache.keys import KeyPreimage
from stagecache.refs import ImageRef
from stagecache.store import StageCache
from stagecache.why import INPUTS_SUFFIX, LATEST_SUFFIX, inputs_tag
from vllm_ci.args import read_args_file
from vllm_ci.build import Build
from vllm_ci.deviations import Deviation
from vllm_ci.engine import use_local_engine
from vllm_ci.graph import stage_graph
from vllm_ci.instructions import AsWritten
from vllm_ci.main import SOURCE_IGNORE, VllmCi
from vllm_ci.upstream_file import UpstreamFile
from vllm_ci.version import git_versions
from vllm_release import CACHE, VLLM_VERSION, git, tagged_checkout, vllm_source  # noqa: F401  (the tests import them from here)

# Fixtures of helper modules, for every test module: `schema` (Buildkite's), `world` (the step's stand-ins).
pytest_plugins = ["buildkite_schema", "buildkite_fakes"]

REPO = pathlib.Path(__file__).resolve().parents[1]
# The version setuptools-scm gives a checkout one commit past the pinned release's tag (its prefix).
NEXT_DEV = ".".join([*VLLM_VERSION.split(".")[:2], str(int(VLLM_VERSION.split(".")[2]) + 1)]) + ".dev1+g"
EXAMPLE = REPO / "examples" / "mini-vllm"
REGISTRY = os.environ.get("VLLM_CI_REGISTRY", "127.0.0.1:5000").split("/")[0]
STATE = pathlib.Path(os.environ.get("VLLM_CI_STATE", "/var/lib/vllm-ci"))
REGISTRY_LOG = STATE / "registry" / "registry.log"
DAGGER = "/usr/local/bin/dagger"
CLIENT = REPO / ".venv" / "bin" / "vllm-ci"
# A key's preimage, for the key and why-missed tests.
PREIMAGE = KeyPreimage(
    stage="csrc-build",
    code="sha256:" + "c" * 64,
    args={"max_jobs": "2", "cuda_version": "13.0.3"},
    parents={"base": "a" * 64},
    inputs="sha256:" + "b" * 64,
    steps={"FROM": "base", "RUN 1": "0123456789ab"},
)


def example_args() -> dict[str, object]:
    """The example's constructor arguments (examples/mini-vllm/vllm-ci.args)."""
    return read_args_file((EXAMPLE / "vllm-ci.args").read_text())


def example_module(**overrides: object) -> VllmCi:
    """The module object configured for the example, with the version the client command derives for it;
    a `build_arg` override adds to the example's --build-arg values (a later one of a name wins)."""
    version, clean = git_versions(EXAMPLE)
    args = {**example_args(), "git_version": version, "git_version_clean": clean, **overrides}
    args["build_arg"] = [*example_args().get("build_arg", []), *overrides.get("build_arg", [])]  # type: ignore[misc]
    return VllmCi(**args)


def cpu_module() -> VllmCi:
    """The module configured for the example's CPU image (examples/mini-vllm/vllm-ci-cpu.args), with the version
    the client command derives for it."""
    version, clean = git_versions(EXAMPLE)
    args = read_args_file((EXAMPLE / "vllm-ci-cpu.args").read_text())
    return VllmCi(**args, git_version=version, git_version_clean=clean)


def example_file(folder: pathlib.Path = EXAMPLE) -> UpstreamFile:
    """A checkout's docker/Dockerfile, parsed (the example's is upstream's, placed by ci/up)."""
    return UpstreamFile.parse((folder / "docker" / "Dockerfile").read_text(), "docker/Dockerfile")


# A stage context with no files and one empty parent, for walks that never reach the engine (steps are lazy).
EMPTY_CONTEXT = StageContext(source=dag.directory(), parents={"base": dag.container()})


def walk_of(
    instructions: str,
    ctx: StageContext,
    passed: dict[str, str] | None = None,
    deviations: tuple[Deviation, ...] = (),
    portable: dict[str, str] | None = None,
    folders: tuple[str, ...] = (),
    preamble: str = "",
) -> AsWritten:
    """A runner of one stage whose instructions are these lines (global ARGs in `preamble`)."""
    file = UpstreamFile.parse(f"{preamble}FROM scratch AS s\n{instructions}\n", "Dockerfile")
    return AsWritten(file.stage("s"), file, passed or {}, ctx, deviations, portable or {}, folders)


def example_build(folder: pathlib.Path = EXAMPLE, **overrides: object) -> Build:
    """The example's build: its module arguments and a checkout's Dockerfile."""
    return Build(example_module(**overrides), example_file(folder))


def source_of(path: pathlib.Path) -> dagger.Directory:
    """A checkout as the module receives it: the same ignore patterns as `dagger call`."""
    # no_cache: the tests edit files within one session, and the engine would reuse the first read.
    return dag.host().directory(str(path), exclude=SOURCE_IGNORE, no_cache=True)


def host_source_of(path: pathlib.Path) -> dagger.Directory:
    """A checkout as the client command gives it: a folder of this machine, planned here (hostsource)."""
    return on_host(source_of(path), str(path), SOURCE_IGNORE)


@pytest.fixture(params=["engine", "host"])
def given(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """How a checkout is given to the cache: as the module gets it (`dagger call`: the engine reads it), or as
    the client command gives it (a folder of this machine, planned here)."""
    return source_of if request.param == "engine" else host_source_of


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


@pytest.fixture(scope="session")
def upstream_dockerfile() -> str:
    """The text of the pinned vLLM release's real docker/Dockerfile (from its sdist)."""
    return (vllm_source() / "docker" / "Dockerfile").read_text()


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
    repo = f"{REGISTRY}/test/main-{uuid.uuid4().hex[:12]}"
    run_cold_build(repo)
    return repo


@pytest.fixture(scope="session")
def warm_cpu_cache(engine: None) -> tuple[str, dict[str, object]]:
    """The CPU image's main cache: one repository a cold build of the example's CUDA image, then of its CPU image,
    has filled (the two sets side by side); with the CPU build's report."""
    repo = f"{REGISTRY}/test/cpu-main-{uuid.uuid4().hex[:12]}"

    async def cold() -> dict[str, object]:
        with open(os.devnull, "w") as log:
            async with dagger.connection(dagger.Config(log_output=log)):
                source = source_of(EXAMPLE)
                await example_module().build(source, cache_to=repo)  # type: ignore[attr-defined]
                return json.loads(await cpu_module().build(source, cache_to=repo, cache_from=[repo]))  # type: ignore[attr-defined]

    return repo, anyio.run(cold)


def fresh_agent() -> None:
    """Restart the engine on an empty state directory: a new CI agent, same registry."""
    subprocess.run([REPO / "ci" / "engine", "fresh"], check=True, capture_output=True)


# Helpers the test modules share (one copy, here, not imported from one test module by another).


def cache_for(
    *,
    folder: pathlib.Path = EXAMPLE,
    cache_from: list[str] | None = None,
    cache_to: str = "",
    strict: bool = False,
    **args: object,
) -> StageCache:
    """A stage cache over a checkout's stages, as its Dockerfile has them (constructor arguments overridden by `args`)."""
    return StageCache(
        stage_graph(example_build(folder, **args)),
        cache_from=[ImageRef.parse(ref) for ref in cache_from or []],  # the tests' edge: refs as strings
        cache_to=ImageRef.parse(cache_to) if cache_to else None,
        strict=strict,
    )


async def build(path: pathlib.Path, target: str = "test", **cache: object):  # type: ignore[no-untyped-def]
    """Build a target of a checkout through the cache; the report."""
    _, report = await cache_for(folder=path, **cache).build(source_of(path), target)  # type: ignore[arg-type]
    return report


def entry_tags(tags: list[str]) -> list[str]:
    """Tags of cache entries, without what explains them (`.inputs`, `-latest`)."""
    return [t for t in tags if not t.endswith((INPUTS_SUFFIX, LATEST_SUFFIX))]


def run_cold_build(cache_repo: str) -> None:
    """A cold build into a repository, on its own connection (for module-scoped fixtures)."""

    async def cold() -> None:
        with open(os.devnull, "w") as log:
            async with dagger.connection(dagger.Config(log_output=log)):
                await build(EXAMPLE, cache_to=cache_repo)

    anyio.run(cold)


def example_flags() -> list[str]:
    """The example's constructor flags (examples/mini-vllm/vllm-ci.args), one per line."""
    return (EXAMPLE / "vllm-ci.args").read_text().splitlines()


def cli_env() -> dict[str, str]:
    """The environment of a `dagger` or client command against this machine's engine."""
    return {
        **os.environ,
        "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///run/dagger/engine.sock",
        "_EXPERIMENTAL_DAGGER_CLI_BIN": DAGGER,
        "DAGGER_NO_UPDATE_CHECK": "1",
        "DAGGER_NO_NAG": "1",
        "DO_NOT_TRACK": "1",
    }


def assert_valid_entry(registry: RegistryAPI, repository: str, tag: str) -> None:
    """The entry under a tag is whole: each blob's bytes hash to its digest, and its record names it."""
    manifest = registry.manifest(repository, tag)
    for blob in [manifest["config"], *manifest["layers"]]:
        content = registry.blob(repository, blob["digest"])
        assert "sha256:" + hashlib.sha256(content).hexdigest() == blob["digest"], (
            f"{tag}: blob {blob['digest']} is corrupt"
        )
    record = registry.manifest(repository, inputs_tag(tag))
    assert record["subject"]["digest"] == registry.digest(repository, tag), f"{tag}: its record names another image"


def entry_tags_of(registry: RegistryAPI, repository: str) -> list[str]:
    """The tags of a cache repository that name entries (not their records or `-latest`)."""
    return [t for t in registry.tags(repository) if not t.endswith((".inputs", "-latest"))]


def checkout(source: pathlib.Path, target: pathlib.Path, umask: int) -> pathlib.Path:
    """A copy of a tree made as `git clone` would under a umask: fresh modes, owners and mtimes."""
    previous = os.umask(umask)
    try:
        for path in sorted(source.rglob("*")):
            if "__pycache__" in path.parts:
                continue
            dest = target / path.relative_to(source)
            if path.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(path.read_bytes())
                if os.access(path, os.X_OK):
                    dest.chmod(0o777 & ~umask)
    finally:
        os.umask(previous)
    return target


def edited_copy(function, old: str, new: str, folder: pathlib.Path):  # type: ignore[no-untyped-def]
    """The function recompiled from its module's source with one edit, as if the file were edited."""
    import importlib.util
    import inspect

    module = inspect.getmodule(function)
    assert module is not None and module.__file__
    text = pathlib.Path(module.__file__).read_text()
    assert old in text
    copy = folder / f"edited_{pathlib.Path(module.__file__).name}"
    copy.write_text(
        text.replace(old, new, 1).replace(
            "@stage(",
            "@_no_register(",
        )
    )
    spec = importlib.util.spec_from_file_location(f"vllm_ci.edited_{module.__name__.rsplit('.', 1)[-1]}", copy)
    assert spec and spec.loader
    edited = importlib.util.module_from_spec(spec)
    edited.__dict__["_no_register"] = lambda *a, **k: lambda f: f
    sys.modules[spec.name] = edited  # dataclasses look their module up there
    spec.loader.exec_module(edited)
    return getattr(edited, function.__name__)
