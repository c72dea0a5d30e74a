"""This project's own stages, the fast path's: none is a stage of vLLM's Dockerfile. Each turns a heavy
upstream stage into a thin layer the images above take by file operations, so a Python-only change
pulls none of the heavy layers:
- `extension`: csrc-build's wheel and the EP kernel wheels unpacked as the runtime's system Python lays
  them out, alone in one layer;
- `runtime-python`: the runtime's own Python alone, which compiles vLLM's bytecode;
- `rust-installed`: rust-build's artifacts where vLLM's wheel installs them;
- `openai-deps`: vllm-openai-base's dependency RUNs, as written, on the runtime before vLLM is added;
- `package`: vLLM's Python files with their bytecode where the wheel installs them, and `source-tree`: the
  checkout where the test stage's `ADD .` puts it; each in layers in proportion to the change
  (stagecache.layered): a Python-only commit adds a layer of the files it changed onto the previous entry,
  and a test agent holding the previous image pulls only that."""

from __future__ import annotations

import json

import dagger
from dagger import dag

from stagecache import StageContext
from stagecache.errors import StageError
from stagecache.layered import layers_for
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.fastpath import program
from vllm_ci.fastpath.install import (
    COMPILE_BYTECODE,
    RECORD_LABEL,
    RUNTIME_PYTHON,
    RUNTIME_PYTHON_ROOT,
    dist_info_of,
    package_files,
    rows_of,
    with_bytecode,
    with_record,
)
from vllm_ci.stages.common import DIST, EVERYTHING, EXTENSION_ROOT, PRETEND_VERSION, RUNTIME_WORKSPACE, RUST_ARTIFACTS
from vllm_ci.stages.extensions import EP_DIST
from vllm_ci.stages.openai import AFTER_DEPS
from vllm_ci.steps import scratch_with

# Installs wheels into the runtime image's layout as upstream's uv install writes them (the program
# says what it writes); bench/equivalence.py compares the result with upstream's uv install.
INSTALL_INTO_RUNTIME_LAYOUT = program("install_into_runtime_layout.py")
INSTALLER_VERSION = "0.7.0"
# Where upstream's RUNs bind the wheels they install (`dist/*.whl`, `ep_kernels/dist/*.whl` under
# WORKDIR /vllm-workspace): what direct_url.json names.
VLLM_WHEEL_SEEN_AT = "/vllm-workspace/dist"
EP_WHEELS_SEEN_AT = "/vllm-workspace/ep_kernels/dist"


@stage(
    "extension",
    from_=None,
    parents=("base", "csrc-build", "extensions-build"),
    also_reads=("PYTHON_VERSION", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"),
)
async def extension(build: Build, ctx: StageContext) -> dagger.Container:
    """The compiled extension and the EP kernel wheels, with metadata and console scripts, as installed,
    alone in one layer (no RUN); vLLM's dist-info in its config instead (written under build's version)."""
    unpacked = (
        ctx.parents["base"]
        .with_directory(DIST, ctx.parents["csrc-build"].directory(DIST))
        .with_directory(EP_DIST, ctx.parents["extensions-build"].directory(EP_DIST))
        .with_exec(
            [
                "python3",
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                *build.pip_index_flags(),
                f"installer=={INSTALLER_VERSION}",
            ]
        )
        .with_exec(
            [
                "python3",
                "-c",
                INSTALL_INTO_RUNTIME_LAYOUT,
                EXTENSION_ROOT,
                build.site_packages(),
                DIST,
                VLLM_WHEEL_SEEN_AT,
                "0",
                EP_DIST,
                EP_WHEELS_SEEN_AT,
                "1",
            ]
        )
    )
    # csrc-build's wheel's dist-info (its texts and RECORD rows) and _version.py, in the image config and
    # not in the layer: the fast path writes them under build's version (csrc-build's is the pretend one)
    # without pulling this layer (common.vllm_installed).
    wheel = (await ctx.parents["csrc-build"].directory(DIST).glob("*.whl"))[0]
    dist_info = dist_info_of(wheel)
    layer = dag.directory().with_directory(
        ".", unpacked.directory(EXTENSION_ROOT), exclude=[f"{build.site_packages().lstrip('/')}/{dist_info}"]
    )
    installed = f"{EXTENSION_ROOT}{build.site_packages()}"
    pretend = build.env_value("csrc-build", PRETEND_VERSION)
    return await with_record(scratch_with("/", layer), unpacked, installed, dist_info, pretend)


# Copies the runtime's Python alone (interpreter, linked libraries, what the compile reads of the standard library)
# into a folder.
COPY_PYTHON_ALONE = program("copy_python_alone.sh")
STDLIB_THE_COMPILE_READS = program("stdlib_the_compile_reads.py")
# A file the compile must compile, in the check that the Python alone compiles as the whole one does.
CHECK_FOLDER, CHECK_MODULE = "/compile-check", "module"


async def python_alone(image: dagger.Container) -> dagger.Container:
    """An image's python3 (the one on its PATH) alone, with the link the bytecode compile runs (RUNTIME_PYTHON), and
    of its standard library only what the compile reads: some 400 files of 1,500, a quarter of a second to pull where
    the whole took 1.3 (the pull is on a Python-only change's critical path). Checked as it is made: alone, it
    compiles a module, with its pool of workers, as the compile does (a module it lacks fails the stage)."""
    alone = image.with_exec(
        [
            "sh",
            "-c",
            COPY_PYTHON_ALONE,
            "sh",
            RUNTIME_PYTHON_ROOT,
            RUNTIME_PYTHON,
            STDLIB_THE_COMPILE_READS,
            COMPILE_BYTECODE,
        ]
    )
    python = scratch_with("/", alone.directory(RUNTIME_PYTHON_ROOT))
    compiled = (
        python.with_new_file(f"{CHECK_FOLDER}/{CHECK_MODULE}.py", "VALUE = 1\n")
        .with_exec([RUNTIME_PYTHON, "-I", "-S", "-c", COMPILE_BYTECODE, CHECK_FOLDER])
        .directory(f"{CHECK_FOLDER}/__pycache__")
    )
    if not any(name.startswith(f"{CHECK_MODULE}.") for name in await compiled.entries()):
        raise StageError(
            "runtime-python: the Python alone did not compile a module (no bytecode written)", phase="build"
        )
    return python


@stage("runtime-python", from_=None, parents=("vllm-runtime-base",))
async def runtime_python(build: Build, ctx: StageContext) -> dagger.Container:
    """The runtime's own Python alone (interpreter, linked libraries, what the compile reads of the standard
    library), a few MB: it compiles vLLM's bytecode, as upstream's uv install does, without pulling the runtime."""
    return await python_alone(ctx.parents["vllm-runtime-base"])


@stage("rust-installed", from_=None, parents=("rust-build",), also_reads=("PYTHON_VERSION",))
async def rust_installed(build: Build, ctx: StageContext) -> dagger.Container:
    """rust-build's artifacts where vLLM's wheel installs them (site-packages/vllm), alone in one layer,
    with their RECORD rows in the image config: merged into the runtime images whole ("/" onto "/",
    which the engine does without reading the layer), so a hit is never pulled."""
    artifacts = ctx.parents["rust-build"].directory(RUST_ARTIFACTS)
    rows = await rows_of(artifacts, "vllm/")
    return scratch_with(f"{build.site_packages()}/vllm", artifacts).with_label(RECORD_LABEL, json.dumps(rows))


# What vllm-openai-base's RUNs read: of requirements/ (which they bind), only the files they open.
DEPS_READS = (
    "requirements/kv_connectors.txt",
    "requirements/kv_connectors_cu12.txt",
    "requirements/rubin-prerelease.txt",
    "tools/install_triton_from_source.sh",
)


@stage(
    "openai-deps",
    from_=None,
    parents=("vllm-runtime-base", "extensions-build"),
    reads=DEPS_READS,
    also_reads=("openai_extras", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"),
    runs_from=(("vllm-openai-base", AFTER_DEPS),),
)
async def openai_deps(build: Build, ctx: StageContext) -> dagger.Container:
    """vllm-openai-base's instructions above its build ENV, as written, on the runtime base (and the
    packages --openai-extras names, if any)."""
    walk = build.upstream("vllm-openai-base", ctx, register=False)
    deps = walk.walk_above(ctx.parents["vllm-runtime-base"], AFTER_DEPS)
    extras = build.value("openai_extras").split()
    if not extras:
        return deps
    return deps.with_env_variable("PIP_BREAK_SYSTEM_PACKAGES", "1").with_exec(
        ["python3", "-m", "pip", "install", "--disable-pip-version-check", *build.pip_index_flags(), *extras]
    )


@stage(
    "package",
    from_=None,
    parents=("runtime-python",),
    reads=("vllm/",),
    also_reads=("PYTHON_VERSION",),
    incremental=True,
)
async def package(build: Build, ctx: StageContext) -> dagger.Container:
    """vLLM's Python files (less _version.py) with their bytecode where the wheel installs them, in layers
    in proportion to the change: a miss compiles and adds only the files that changed since its previous
    entry, so an unchanged module's bytecode is never compiled or pushed again."""
    layers = layers_for(ctx.files, ctx.previous)
    site_vllm = f"{build.site_packages()}/vllm"
    # ctx.source holds the files this layer adds (stagecache.layered.stage_source): all, or the changed alone.
    added = with_bytecode(site_vllm, package_files(ctx.source, version_file=False), ctx)
    return layers.labelled(layers.base.with_directory(site_vllm, added))


@stage("source-tree", from_=None, reads=EVERYTHING, incremental=True)
async def source_tree(build: Build, ctx: StageContext) -> dagger.Container:
    """The checkout where the test stage's ADD . puts it, vllm/ at src/vllm (so tests import the installed
    vLLM), in layers in proportion to the change."""
    layers = layers_for(ctx.files, ctx.previous)
    changed = ctx.source  # the files this layer adds (stagecache.layered.stage_source): all, or the changed alone
    tree = dag.directory().with_directory(".", changed, exclude=["vllm/"])
    if any(path.startswith("vllm/") for path in layers.paths):
        tree = tree.with_directory("src/vllm", changed.directory("vllm"))
    return layers.labelled(layers.base.with_directory(RUNTIME_WORKSPACE, tree))
