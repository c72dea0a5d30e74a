"""vLLM's docker/Dockerfile.cpu, the CPU stage set: one async function per stage, chained as the file
chains them, on the same machinery as the CUDA set (each walks its stage of the file being built and
runs every instruction as written unless a deviation below claims it). Chosen by the Dockerfile's name
(`--dockerfile docker/Dockerfile.cpu`); the cache names these stages `cpu.<stage>`.

What differs, and why: the upload leaves .git out, so the three RUNs that ask setuptools-scm for the
version (rust-build's relink, vllm-build's wheel, vllm-dev's develop) get the version the host derived,
as for the CUDA set; the wheel is built with fixed zip timestamps. Stages whose children take only some
of their files (binutils-build, rust-build, vllm-build) keep only those. Three RUNs that fetch what has
no ARG (binutils' release, the gcc-15 PPA and uv's installer, the Rust stage's apt tools) can be replaced
by a portability argument, and base's `FROM ubuntu:22.04` by a mirror's copy (--image-rewrite)."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import STAGE_SETS, stage
from vllm_ci.deviations import Deviation, Handler, skipped
from vllm_ci.fastpath.install import METADATA_INPUTS, vllm_installed
from vllm_ci.instructions import AUTOMATIC_VALUES
from vllm_ci.stages.common import SOURCE_DATE_EPOCH, installing_vllm, keeping, with_git_version, with_host_version
from vllm_ci.stages.rust import NO_GIT as RELINK_WITHOUT_GIT
from vllm_ci.stages.wheel import WITHOUT_UNREAD

CPU = "cpu"
SCM_VERSION = (
    "the upload leaves .git out, so setuptools-scm gets the version the host derived from it (git_version, "
    "as SETUPTOOLS_SCM_PRETEND_VERSION for this RUN only); the key holds that version, never .git"
)
FIXED_EPOCH = f"{SCM_VERSION}. Runs with SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}, so the wheel's zip timestamps are fixed"
NO_GIT = f"binds an empty .git: {SCM_VERSION}"
# base-arch is FROM base-${TARGETARCH}: both are its parents, and it builds on the build platform's one.
ARCH_BASES = ("base-amd64", "base-arm64")

RELINK = Deviation("RUN", "target=.git", RELINK_WITHOUT_GIT)
# Portability: what upstream fetches with no ARG (a release site, a PPA, an installer script) can be replaced
# by this project's argument; empty, the default, is upstream's step.
BINUTILS = Deviation("RUN", "--disable-werror", portable="binutils_command", whole=True)
TOOLCHAIN = Deviation("RUN", "gcc-15 g++-15", portable="toolchain_command", whole=True)
RUST_TOOLS = Deviation("RUN", "python3-pip", portable="rust_packages_command", whole=True)
COPY_ALL = Deviation("COPY", "COPY . .", WITHOUT_UNREAD)
# vllm-test's two RUNs that would pull every layer below: vLLM comes by file layers (vllm_ci.fastpath.cpu).
CPU_FLOOR = (
    "vLLM is added by file layers onto test-base (vllm-test-deps with the wheel's dependencies, installed by this "
    "RUN as written): the extension layer (the compile stage's wheel as uv installs it: the compiled parts, the artifacts "
    "and the console script), the vllm/ files with their bytecode, compiled by the venv's own Python, and the "
    "dist-info, not by installing vllm-build's wheel with a RUN that would pull every layer below"
)
INSTALL_WHEEL = Deviation("RUN", "dist/*.whl", CPU_FLOOR)
EDITABLE_TEST_UTILS = Deviation(
    "RUN", "tests/vllm_test_utils", "run as written in test-base, at the path the ADD puts it, so this stage stays thin"
)
BUILD_WHEEL = Deviation("RUN", "setup.py bdist_wheel", FIXED_EPOCH)
DEVELOP = Deviation("RUN", "setup.py develop", NO_GIT)


def wheel_at(version: str) -> Handler:
    """The handler of vllm-build's wheel RUN: as written, given the version (SETUPTOOLS_SCM_PRETEND_VERSION for the
    RUN only, with_git_version) and fixed zip timestamps (SOURCE_DATE_EPOCH)."""
    return lambda ctr, step: with_git_version(version, step)(
        ctr.with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
    )


def walked_onto(build: Build, name: str, ctx: StageContext, parent: str) -> dagger.Container:
    """A stage's instructions, each as written, onto its parent's image."""
    return build.upstream(name, ctx).walk(ctx.parents[parent])


@stage("base", from_="ubuntu:22.04", stage_set=CPU)
async def base(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM ubuntu:22.04 AS base: the apt packages every CPU stage shares, and sccache when asked for."""
    return build.upstream("base", ctx).walk(dag.container().from_(build.from_image("base")))


@stage("binutils-build", from_="base", parents=("base",), deviations=(BINUTILS,), stage_set=CPU)
async def binutils_build(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base AS binutils-build: a newer GNU assembler; keep only what base-common copies from it."""
    return keeping(build.taken_from("binutils-build"), walked_onto(build, "binutils-build", ctx, "base"))


@stage("base-common", from_="base", parents=("base", "binutils-build"), deviations=(TOOLCHAIN,), stage_set=CPU)
async def base_common(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base AS base-common: gcc-15, uv and the venv."""
    return walked_onto(build, "base-common", ctx, "base")


@stage("base-common-pydeps", from_="base-common", parents=("base-common",), stage_set=CPU)
async def base_common_pydeps(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base-common AS base-common-pydeps: torch for CPU and vLLM's CPU requirements."""
    return walked_onto(build, "base-common-pydeps", ctx, "base-common")


@stage("base-amd64", from_="base-common-pydeps", parents=("base-common-pydeps",), stage_set=CPU)
async def base_amd64(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base-common-pydeps AS base-amd64: the x86_64 preloads."""
    return walked_onto(build, "base-amd64", ctx, "base-common-pydeps")


@stage("base-arm64", from_="base-common-pydeps", parents=("base-common-pydeps",), stage_set=CPU)
async def base_arm64(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base-common-pydeps AS base-arm64: the aarch64 preloads."""
    return walked_onto(build, "base-arm64", ctx, "base-common-pydeps")


@stage("base-arch", from_="base-${TARGETARCH}", parents=ARCH_BASES, stage_set=CPU)
async def base_arch(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base-${TARGETARCH} AS base-arch: the base of the build's platform."""
    return walked_onto(build, "base-arch", ctx, f"base-{AUTOMATIC_VALUES['TARGETARCH']}")


@stage("rust-build-cache", from_="base", parents=("base",), deviations=(RUST_TOOLS,), stage_set=CPU)
async def rust_build_cache(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base AS rust-build-cache: vllm-rs built with a stable version, keyed only by the Rust inputs."""
    return walked_onto(build, "rust-build-cache", ctx, "base")


@stage(
    "rust-build",
    from_="rust-build-cache",
    parents=("rust-build-cache",),
    deviations=(RELINK,),
    also_reads=("git_version_clean",),
    stage_set=CPU,
)
async def rust_build(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM rust-build-cache AS rust-build: relink with the exact version; keep only what vllm-src copies."""
    upstream = build.upstream("rust-build", ctx)
    relink = with_host_version(upstream, ctx, RELINK, build.value("git_version_clean"))
    built = upstream.walk(ctx.parents["rust-build-cache"], {RELINK: relink})
    return keeping(build.taken_from("rust-build"), built)


@stage("vllm-src", from_="base-arch", parents=("base-arch", "rust-build"), deviations=(COPY_ALL,), stage_set=CPU)
async def vllm_src(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base-arch AS vllm-src: the build requirements, the checkout and the Rust artifacts."""
    return walked_onto(build, "vllm-src", ctx, "base-arch")


@stage(
    "vllm-build",
    from_="vllm-src",
    parents=("vllm-src",),
    deviations=(BUILD_WHEEL,),
    also_reads=("git_version",),
    stage_set=CPU,
)
async def vllm_build(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM vllm-src AS vllm-build: the CPU wheel; keep only dist/, which its children bind."""
    upstream = build.upstream("vllm-build", ctx)

    built = upstream.walk(ctx.parents["vllm-src"], {BUILD_WHEEL: wheel_at(build.value("git_version"))})
    return keeping(build.taken_from("vllm-build"), built)


@stage("vllm-test-deps", from_="base-arch", parents=("base-arch",), stage_set=CPU)
async def vllm_test_deps(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base-arch AS vllm-test-deps: the CPU test requirements."""
    return walked_onto(build, "vllm-test-deps", ctx, "base-arch")


@stage(
    "vllm-dev",
    from_="vllm-src",
    parents=("vllm-src", "vllm-test-deps"),
    deviations=(DEVELOP,),
    also_reads=("git_version",),
    stage_set=CPU,
)
async def vllm_dev(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM vllm-src AS vllm-dev: vLLM installed in develop mode, with the lint and test requirements."""
    upstream = build.upstream("vllm-dev", ctx)
    develop = with_host_version(upstream, ctx, DEVELOP, build.value("git_version"))
    return upstream.walk(ctx.parents["vllm-src"], {DEVELOP: develop})


@stage(
    "vllm-test",
    from_="vllm-test-deps",
    parents=("vllm-test-deps", "test-base", "extension", "package", "runtime-python"),
    # What vLLM's dist-info is written from: the package's files (their RECORD rows) and the metadata's inputs.
    reads=("vllm/", *METADATA_INPUTS),
    deviations=(INSTALL_WHEEL, EDITABLE_TEST_UTILS),
    also_reads=(STAGE_SETS[CPU].python_version, "git_version"),
    not_read=("vllm-test-deps", "test-base", "extension", "package"),
    stage_set=CPU,
)
async def vllm_test(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM vllm-test-deps AS vllm-test: the CI test image, vLLM added by file layers onto test-base and the
    tests added as written."""
    handlers = {**installing_vllm(await vllm_installed(build, ctx), (INSTALL_WHEEL,)), EDITABLE_TEST_UTILS: skipped}
    return build.upstream("vllm-test", ctx).walk(ctx.parents["test-base"], handlers)


@stage("vllm-openai", from_="base-arch", parents=("base-arch", "vllm-build"), stage_set=CPU)
async def vllm_openai(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base-arch AS vllm-openai: the CPU server image, `vllm serve` as its entrypoint."""
    return walked_onto(build, "vllm-openai", ctx, "base-arch")
