"""A Python-only change on a fresh CI agent pulls nothing heavy and pushes only what changed,
measured at the registry (its request log), not estimated."""

from __future__ import annotations

import os
import pathlib
import re
import tempfile
import uuid

import dagger
import pytest

from conftest import REGISTRY, REGISTRY_LOG, cpu_module, edit, example_build, fresh_agent, host_source_of
from imagefs import pull_of
from stagecache.keys import KEY_LABEL, cache_tag
from stagecache.registry import ImageRef, RegistryClient
from stagecache.store import LOG_ENV, StageCache
from stagecache.traffic import RegistryLog
from stagecache.why import latest_tag
from vllm_ci.build import Build
from vllm_ci.fastpath.install import METADATA_INPUTS
from vllm_ci.graph import stage_graph
from vllm_ci.upstream_file import UpstreamFile

pytestmark = [pytest.mark.anyio, pytest.mark.wipes_engine]  # each build is on a fresh agent
HEAVY = ("base", "vllm-runtime-base", "test-deps")
# What the engine's log says of each folder of this machine it read: `(include: a, b)` or `(exclude: ...)`.
UPLOAD = re.compile(r"upload \S+ from .*?\((include|exclude): ([^)]*)\)")
COUNT_STALE_BYTECODE = (
    "cd $(python3 -c 'import sysconfig; print(sysconfig.get_path(\"platlib\"))')/vllm && "
    "{ python3 -m compileall . | grep -c '^Compiling' || true; }"
)


async def main_test_image(cache: str, stage: str = "test") -> str:
    """The test image main's cache holds (its newest entry of the test stage), pinned to its digest."""
    repo = ImageRef.parse(cache)
    async with RegistryClient(repo.registry) as registry:
        found = await registry.labels(repo.repository, latest_tag(stage))
        assert found is not None
        tag = cache_tag(stage, found[0][KEY_LABEL])
        manifest = await registry.manifest(repo.repository, tag)
    assert manifest is not None
    return str(repo.with_tag(tag).with_digest(manifest[1]))


async def layers(image: ImageRef | None) -> dict[str, int]:
    """Layer digest -> size of an image in the registry."""
    assert image is not None
    async with RegistryClient(image.registry) as registry:
        found = await registry.manifest(image.repository, image.reference)
    assert found is not None
    return {layer["digest"]: layer["size"] for layer in found[0]["layers"]}


async def pr_build_on_a_fresh_agent(path: pathlib.Path, warm_cache: str):  # type: ignore[no-untyped-def]
    """A PR's build on a new agent: reads its own cache then main's, writes its own, publishes the image."""
    pr_cache = f"{REGISTRY}/test/pr-{uuid.uuid4().hex[:12]}"
    image = f"{REGISTRY}/test/image:{uuid.uuid4().hex[:12]}"
    return await fresh_agent_build(path, [pr_cache, warm_cache], pr_cache, image)


async def fresh_agent_build(  # type: ignore[no-untyped-def]
    path: pathlib.Path, cache_from: list[str], cache_to: str, image: str, build: Build | None = None
):
    """Restart the engine empty, then build the test image (the example's CUDA one, or `build`'s) through the
    cache, measuring registry traffic."""
    build = build or example_build()
    fresh_agent()
    log = RegistryLog(REGISTRY_LOG)
    mark = log.mark()
    os.environ[LOG_ENV] = str(REGISTRY_LOG)
    engine_log = tempfile.NamedTemporaryFile("w+", suffix=".log")
    try:
        with engine_log:
            async with dagger.connection(dagger.Config(log_output=engine_log)):
                cache = StageCache(
                    stage_graph(build),
                    cache_from=[ImageRef.parse(ref) for ref in cache_from],
                    cache_to=ImageRef.parse(cache_to),
                )
                target = build.stage_set.cache_name(build.stage_set.test_image)
                # As the client command on an agent gives it: planned here, the changed files uploaded alone.
                container, report = await cache.build(host_source_of(path), target, ImageRef.parse(image))
                traffic = log.since(mark)  # the build's traffic only: running the tests below pulls the image
                # Before anything imports vllm (which would write what is stale): how many files Python
                # finds its bytecode stale for.
                stale = await container.with_exec(["sh", "-c", COUNT_STALE_BYTECODE]).stdout()
                tests = await container.with_exec(["python3", "-m", "pytest", "-q", "tests"]).stdout()
                pip_check = await container.with_exec(["sh", "-c", "python3 -m pip check || true"]).stdout()
            engine_log.seek(0)
            uploads = sorted(set(UPLOAD.findall(re.sub(r"\x1b\[[0-9;]*m", "", engine_log.read()))))
    finally:
        del os.environ[LOG_ENV]
    return report, traffic, tests, pip_check, stale.strip(), uploads


async def test_a_one_line_python_change_pulls_no_heavy_layer_and_pushes_little(
    engine: None, warm_cache: str, example_dir: pathlib.Path
) -> None:
    edit(example_dir / "vllm" / "layers.py", "CHANGED_BY_TEST = 1")
    report, traffic, tests, pip_check, stale, uploads = await pr_build_on_a_fresh_agent(example_dir, warm_cache)
    outcomes = report.outcomes()
    assert outcomes["test-deps"] == outcomes["extension"] == "hit" and outcomes["test"] == "exported"
    assert outcomes["csrc-build"] == outcomes["base"] == outcomes["vllm-runtime-base"] == "unused"

    deps_layers = await layers(report.record("test-deps").ref)
    assert not set(deps_layers) & set(traffic.pulled), "a dependency layer was downloaded"
    # Nor extension's layer (on vLLM, its compiled kernels), nor rust-installed's (vllm-rs): each is
    # merged whole, and vLLM's RECORD is written from the rows in their image configs.
    for merged in ("extension", "rust-installed"):
        assert report.record(merged).outcome == "hit"
        assert not set(await layers(report.record(merged).ref)) & set(traffic.pulled), (
            f"{merged}'s layer was downloaded"
        )
    changed = {d: s for d, s in (await layers(report.record("test").ref)).items() if d not in deps_layers}
    assert report.traffic is not None
    assert report.traffic["pushed"] <= 2 * sum(changed.values())
    assert " passed" in tests and "failed" not in tests
    assert stale == "0", "bytecode compiled onto the previous entry's is not all up to date"
    # Planned on this machine: the engine read of the checkout the changed file and the metadata files alone.
    assert uploads and all(kind == "include" for kind, _ in uploads), uploads
    assert {path for _, paths in uploads for path in paths.split(", ")} <= {"vllm/layers.py", *METADATA_INPUTS}

    # A test agent holding main's image pulls, to run this one, the changed module and its bytecode, the
    # version file and the dist-info (RECORD names the module's new hash): none of the unchanged files.
    assert report.record("package").note.startswith("built on ")
    pull = await pull_of(await main_test_image(warm_cache), str(report.record("test").ref))
    site = next(path.removesuffix("/vllm/layers.py") for path in pull.paths if path.endswith("/vllm/layers.py"))
    package = {path.removeprefix(f"{site}/vllm/") for path in pull.paths if path.startswith(f"{site}/vllm/")}
    source = {path for path in pull.paths if path.startswith("vllm-workspace/")}
    rest = set(pull.paths) - {f"{site}/vllm/{path}" for path in package} - source
    tag = next(path.split(".")[1] for path in package if path.startswith("__pycache__/layers."))  # cpython-3XY
    version_file = {"_version.py", f"__pycache__/_version.{tag}.pyc"}
    assert package - version_file == {"layers.py", f"__pycache__/layers.{tag}.pyc"}, package
    assert source == {"vllm-workspace/src/vllm/layers.py"}
    assert rest and all(path.startswith(f"{site}/mini_vllm-") and ".dist-info/" in path for path in rest), sorted(
        p for p in rest if ".dist-info/" not in p
    )
    # Only Debian's own python3-gi (software-properties-common's, as on upstream's Ubuntu) may be named.
    assert all(line.startswith("pygobject ") for line in pip_check.splitlines() if "No broken" not in line), pip_check


async def test_a_one_line_csrc_change_rebuilds_the_extension_and_never_reuploads_dependencies(
    engine: None, warm_cache: str, example_dir: pathlib.Path
) -> None:
    edit(example_dir / "csrc" / "ops.c", "int changed_by_a_test(void) { return 42; }")
    report, traffic, tests, *_ = await pr_build_on_a_fresh_agent(example_dir, warm_cache)
    outcomes = report.outcomes()
    assert outcomes["csrc-build"] == outcomes["extension"] == outcomes["test"] == "exported"
    assert outcomes["test-deps"] == "hit"
    deps_layers = await layers(report.record("test-deps").ref)
    assert not set(deps_layers) & set(traffic.pushed), "a dependency layer was uploaded again"
    assert " passed" in tests


async def test_a_one_line_python_change_to_the_cpu_image_pulls_none_of_its_heavy_layers(
    engine: None, warm_cpu_cache: tuple[str, dict], example_dir: pathlib.Path
) -> None:
    cache, _ = warm_cpu_cache
    edit(example_dir / "vllm" / "layers.py", "CHANGED_BY_TEST = 1")
    cpu_file = UpstreamFile.parse((example_dir / "docker" / "Dockerfile.cpu").read_text(), "docker/Dockerfile.cpu")
    pr_cache = f"{REGISTRY}/test/cpu-pr-{uuid.uuid4().hex[:12]}"
    image = f"{REGISTRY}/test/cpu-image:{uuid.uuid4().hex[:12]}"
    report, traffic, tests, _, stale, _ = await fresh_agent_build(
        example_dir, [pr_cache, cache], pr_cache, image, Build(cpu_module(), cpu_file)
    )
    outcomes = report.outcomes()
    # The compile does not read the changed module; vLLM's dependencies and extension come from the cache.
    assert outcomes["cpu.test-base"] == outcomes["cpu.extension"] == "hit", outcomes
    assert outcomes["cpu.compile"] == outcomes["cpu.base-arch"] == "unused" and "cpu.vllm-build" not in outcomes
    assert outcomes["cpu.package"] == outcomes["cpu.vllm-test"] == "exported"
    for heavy in ("cpu.test-base", "cpu.extension"):  # test-base holds vllm-test-deps' layers and all below
        assert not set(await layers(report.record(heavy).ref)) & set(traffic.pulled), f"{heavy}'s layers were pulled"
    assert " passed" in tests and "failed" not in tests, tests
    assert stale == "0", "bytecode compiled onto the previous entry's is not all up to date"
    # A test agent holding main's CPU image pulls, of vLLM, the changed module and its bytecode and the dist-info.
    assert report.record("cpu.package").note.startswith("built on ")
    pull = await pull_of(await main_test_image(cache, "cpu.vllm-test"), str(report.record("cpu.vllm-test").ref))
    site = next(path.removesuffix("/vllm/layers.py") for path in pull.paths if path.endswith("/vllm/layers.py"))
    package = {path.removeprefix(f"{site}/vllm/") for path in pull.paths if path.startswith(f"{site}/vllm/")}
    tag = next(path.split(".")[1] for path in package if path.startswith("__pycache__/layers."))
    assert package - {"_version.py", f"__pycache__/_version.{tag}.pyc"} == {
        "layers.py",
        f"__pycache__/layers.{tag}.pyc",
    }
    # Of site-packages, nothing else but the dist-info; the ADDs' layers come anew (each holds /vllm-workspace
    # with the time it was made), as BuildKit's do.
    rest = set(pull.paths) - {f"{site}/vllm/{path}" for path in package}
    assert rest and all(".dist-info/" in path or path.startswith("vllm-workspace/") for path in rest), rest
    assert any(path.startswith(f"{site}/mini_vllm-") for path in rest)
