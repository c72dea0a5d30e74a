"""The CPU stage set's fast path (docker/Dockerfile.cpu): none of these is a stage of the file. Upstream's
vllm-test installs vllm-build's wheel, which is built from `COPY . .`, so any change rebuilds the compile and
reinstalls onto the test dependencies with a RUN that pulls every layer below. These stages split that:
- `compile`: vllm-src's and vllm-build's instructions as written, with `COPY . .` copying only what the
  compile reads, under a fixed version: the compiled wheel, rebuilt only when those files change;
- `extension`: that wheel installed onto vllm-test-deps by vllm-test's own RUN, and of what uv wrote, the
  compiled parts, the artifacts and the console script alone in one layer (its dist-info in the image config);
- `test-base`: vllm-test-deps with the wheel's dependencies (the same RUN, then vLLM uninstalled) and
  vllm-test's editable install of the test utilities;
- `runtime-python` and `package`: the venv's Python alone, and the vllm/ files with their bytecode in layers in
  proportion to the change (the CUDA set's functions, on the CPU image's site-packages).
vllm-test then adds vLLM by file layers onto test-base, so a Python-only change pulls none of the heavy ones."""

from __future__ import annotations

import dataclasses

import dagger

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import STAGE_SETS, stage
from vllm_ci.deviations import Deviation
from vllm_ci.fastpath import program
from vllm_ci.fastpath.install import dist_info_of, with_record
from vllm_ci.fastpath.stages import package, python_alone
from vllm_ci.stages.common import RUNTIME_WORKSPACE
from vllm_ci.stages.cpu import BUILD_WHEEL, COPY_ALL, CPU, EDITABLE_TEST_UTILS, INSTALL_WHEEL, wheel_at
from vllm_ci.steps import scratch_with

PYTHON_VERSION = STAGE_SETS[CPU].python_version
# Where vllm-build leaves the wheel (WORKDIR /vllm-workspace, --dist-dir=dist), which vllm-test binds.
CPU_DIST = f"{RUNTIME_WORKSPACE}/dist"
# The version setup.py is given in the compile stage: fixed, so the compile's key holds no commit; vllm-test's
# dist-info and _version.py are written under the build's own version (fastpath.install.build_version).
COMPILE_VERSION = "0.0.0+csrc.build"
# What the CPU compile reads of the checkout (setup.py's own reads: the requirements it installs, the
# version settings, CMake and the C++ sources, vllm/envs.py and the Rust helper it loads; vllm/__init__.py so
# the package is found); requirements/build/cpu.txt comes with the instructions above `COPY . .`.
COMPILE_READS = (
    "requirements/",
    "pyproject.toml",
    "setup.py",
    "CMakeLists.txt",
    "cmake/",
    "csrc/",
    "vllm/envs.py",
    "vllm/__init__.py",
    "tools/build_rust.py",
    "tools/check_repo.sh",
    "tools/use_existing_torch.py",
)
ONLY_COMPILE_READS = "copies only what the compile reads (COMPILE_READS), so a Python-only change keeps the compile"
# vllm-src's instructions the compile stage runs: above `COPY . .`, then the ones after it, one each.
ABOVE_CHECKOUT = Deviation("COPY", "COPY . .", ONLY_COMPILE_READS, above=True)
AFTER_CHECKOUT = (
    Deviation("COPY", "vllm/vllm-rs"),
    Deviation("COPY", "_rust_*.so"),
    Deviation("RUN", "check_repo.sh"),
    Deviation("RUN", "--prefix;"),
)
COLLECT_INSTALLED = program("collect_installed.py")


@stage(
    "compile",
    from_=None,
    parents=("base-arch", "rust-build"),
    reads=COMPILE_READS,
    runs_from=(("vllm-src", ABOVE_CHECKOUT), *(("vllm-src", d) for d in AFTER_CHECKOUT), ("vllm-build", None)),
    stage_set=CPU,
)
async def compile_wheel(build: Build, ctx: StageContext) -> dagger.Container:
    """vllm-src's and vllm-build's instructions as written on base-arch, from only the files the compile reads,
    under a fixed version; keep only dist/ (the wheel)."""
    source = build.upstream("vllm-src", ctx, register=False)
    checkout = source.walk_above(ctx.parents["base-arch"], ABOVE_CHECKOUT).with_(
        build.step_elsewhere("vllm-src", COPY_ALL, ctx)
    )
    for deviation in AFTER_CHECKOUT:
        checkout = checkout.with_(build.step_elsewhere("vllm-src", deviation, ctx))

    built = build.upstream("vllm-build", ctx, register=False).walk(checkout, {BUILD_WHEEL: wheel_at(COMPILE_VERSION)})
    return scratch_with(CPU_DIST, built.directory(CPU_DIST))


def wheel_installed(build: Build, ctx: StageContext) -> dagger.Container:
    """vllm-test's RUN that installs vllm-build's wheel, as written, with the compile stage's wheel where it binds that."""
    compiled = dataclasses.replace(ctx, parents={**ctx.parents, "vllm-build": ctx.parents["compile"]})
    return ctx.parents["vllm-test-deps"].with_(build.step_elsewhere("vllm-test", INSTALL_WHEEL, compiled))


async def wheel_dist_info(ctx: StageContext) -> tuple[str, str]:
    """The project name of the compile stage's wheel and the dist-info folder an installer makes of it."""
    wheel = (await ctx.parents["compile"].directory(CPU_DIST).glob("*.whl"))[0]
    return wheel.split("-")[0], dist_info_of(wheel)


@stage(
    "extension",
    from_=None,
    parents=("vllm-test-deps", "compile"),
    runs_from=(("vllm-test", INSTALL_WHEEL),),
    also_reads=(PYTHON_VERSION,),
    stage_set=CPU,
)
async def extension(build: Build, ctx: StageContext) -> dagger.Container:
    """Of the compile stage's wheel as uv installs it: the compiled extension, the artifacts and the console script,
    alone in one layer; its dist-info (texts and RECORD rows) and _version.py in the image config."""
    installed = wheel_installed(build, ctx)
    _, dist_info = await wheel_dist_info(ctx)
    site = build.site_packages()
    collected = installed.with_exec(["python3", "-c", COLLECT_INSTALLED, "/collected", site, dist_info])
    return await with_record(
        scratch_with("/", collected.directory("/collected")), installed, site, dist_info, COMPILE_VERSION
    )


@stage(
    "test-base",
    from_=None,
    parents=("vllm-test-deps", "compile"),
    reads=("tests/vllm_test_utils/",),
    runs_from=(("vllm-test", INSTALL_WHEEL), ("vllm-test", EDITABLE_TEST_UTILS)),
    also_reads=(PYTHON_VERSION,),
    stage_set=CPU,
)
async def test_base(build: Build, ctx: StageContext) -> dagger.Container:
    """vllm-test-deps with the dependencies vllm-test's wheel install adds (the RUN as written, then vLLM
    uninstalled) and vllm-test's editable install of the test utilities, at the path its ADD puts them."""
    name, _ = await wheel_dist_info(ctx)
    return (
        wheel_installed(build, ctx)
        .with_exec(["uv", "pip", "uninstall", name])
        .with_exec(["rm", "-rf", f"{build.site_packages()}/vllm"])  # bytecode uv compiled and RECORD does not name
        .with_directory(f"{RUNTIME_WORKSPACE}/tests/vllm_test_utils", ctx.source.directory("tests/vllm_test_utils"))
        .with_(build.step_elsewhere("vllm-test", EDITABLE_TEST_UTILS, ctx))
    )


@stage("runtime-python", from_=None, parents=("base-arch",), stage_set=CPU)
async def runtime_python(build: Build, ctx: StageContext) -> dagger.Container:
    """The venv's Python alone (interpreter, linked libraries, what the compile reads of the standard library): it
    compiles vLLM's bytecode, as vllm-test's uv install does, without pulling base-arch."""
    return await python_alone(ctx.parents["base-arch"])


# vllm/ with its bytecode where the CPU image's venv has it: the CUDA set's function, declared for this set.
stage(
    "package",
    from_=None,
    parents=("runtime-python",),
    reads=("vllm/",),
    also_reads=(PYTHON_VERSION,),
    incremental=True,
    stage_set=CPU,
)(package)
