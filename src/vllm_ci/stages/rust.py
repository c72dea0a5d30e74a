"""RUST BUILD IMAGE: `FROM base AS rust-build-cache`, then `FROM rust-build-cache AS rust-build`: the Rust
frontend (`vllm-rs`) built apart from the wheel, so the wheel build needs neither the toolchain nor the
Rust source. Every instruction runs as the file writes it; the dnf command, which upstream gives no
ARG, can be replaced by a portability argument (empty: upstream's). The result keeps only what the wheel
build copies from it: vllm/vllm-rs and vllm/_rust_*.so."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation
from vllm_ci.stages.common import RUST_ARTIFACTS, with_host_version

READS = ("requirements/build/rust.txt", "rust/", "rust-toolchain.toml", "tools/build_rust.py", "tools/build_rust.sh")
NO_GIT = (
    "binds an empty .git: the upload leaves .git out, so setuptools-scm gets the version the host derived "
    "from it with the tree taken as clean (git_version_clean, as SETUPTOOLS_SCM_PRETEND_VERSION for this RUN "
    "only); the key holds that version, never .git"
)

NATIVE_TOOLS = Deviation("RUN", "dnf install", portable="rust_packages_command", whole=True)
RELINK = Deviation("RUN", "target=.git", NO_GIT)


@stage("rust-build-cache", from_="base", parents=("base",), reads=READS, deviations=(NATIVE_TOOLS,))
async def rust_build_cache(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base AS rust-build-cache: the Rust artifacts built with a stable version, keyed only by Rust inputs."""
    return build.upstream("rust-build-cache", ctx).walk(ctx.parents["base"])


@stage(
    "rust-build",
    from_="rust-build-cache",
    parents=("rust-build-cache",),
    deviations=(RELINK,),
    also_reads=("git_version_clean",),
)
async def rust_build(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM rust-build-cache AS rust-build: relink with the exact version; keep only the artifacts."""
    upstream = build.upstream("rust-build", ctx)
    relink = with_host_version(upstream, ctx, RELINK, build.value("git_version_clean"))
    built = upstream.walk(ctx.parents["rust-build-cache"], {RELINK: relink})
    artifacts = dag.directory().with_directory(".", built.directory(RUST_ARTIFACTS), include=["vllm-rs", "_rust_*.so"])
    return dag.container().with_directory(RUST_ARTIFACTS, artifacts)
