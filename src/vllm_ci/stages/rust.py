"""RUST BUILD IMAGE: `FROM base AS rust-build-cache`, then `FROM rust-build-cache AS rust-build`: the Rust
frontend (`vllm-rs`) built apart from the wheel, so the wheel build needs neither the toolchain nor the
Rust source. Every instruction runs as upstream writes it; the dnf command, which upstream gives no
ARG, is a portability argument whose default is upstream's text. The result keeps only what the wheel
build copies from it: vllm/vllm-rs and vllm/_rust_*.so."""

from __future__ import annotations

import json

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import RECORD_LABEL, RUST_ARTIFACTS, WORKDIR, rows_of, with_git_version, without_git
from vllm_ci.steps import scratch_with

READS = ("requirements/build/rust.txt", "rust/", "rust-toolchain.toml", "tools/build_rust.py", "tools/build_rust.sh")
NO_GIT = (
    "binds an empty .git: the upload leaves .git out, so setuptools-scm gets the version the host derived "
    "from it with the tree taken as clean (git_version_clean, as SETUPTOOLS_SCM_PRETEND_VERSION for this RUN "
    "only); the key holds that version, never .git"
)

INSTALL_RUST_TOOLS = """\
RUN dnf install -y --setopt=install_weak_deps=False make perl-core \\
    && dnf clean all \\
    && rm -rf /var/cache/dnf
"""
COPY_RUST_REQUIREMENTS = "COPY requirements/build/rust.txt requirements/build/rust.txt"
INSTALL_RUST_REQUIREMENTS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    uv pip install --python /opt/venv/bin/python3 -r requirements/build/rust.txt
"""
COPY_RUST_INPUTS = (
    "COPY rust rust",
    "COPY rust-toolchain.toml rust-toolchain.toml",
    "COPY tools/build_rust.py tools/build_rust.py",
    "COPY tools/build_rust.sh tools/build_rust.sh",
)
CARGO_JOBS = "ENV CARGO_BUILD_JOBS=4"
SCCACHE_PORT = "ENV SCCACHE_SERVER_PORT=4227"
BUILD_RUST = """\
RUN --mount=type=cache,target=/root/.cargo/registry,sharing=locked \\
    --mount=type=cache,target=/root/.cargo/git,sharing=locked \\
    --mount=type=secret,id=aws-credentials,target=/root/.aws/credentials,required=false \\
    if [ "$USE_SCCACHE" = "1" ]; then \\
        if [ -n "${SCCACHE_ENDPOINT}" ]; then export SCCACHE_ENDPOINT="${SCCACHE_ENDPOINT}"; fi; \\
        export RUSTC_WRAPPER=sccache; \\
        sccache --show-stats; \\
    fi \\
    && SETUPTOOLS_SCM_PRETEND_VERSION="0.0.0+docker.cache" bash tools/build_rust.sh \\
    && if [ "$USE_SCCACHE" = "1" ]; then \\
        sccache --show-stats; \\
    fi
"""
RELINK = """\
RUN --mount=type=cache,target=/root/.cargo/registry,sharing=locked \\
    --mount=type=cache,target=/root/.cargo/git,sharing=locked \\
    --mount=type=bind,source=.git,target=.git \\
    SETUPTOOLS_SCM_PRETEND_METADATA="{dirty=false}" bash tools/build_rust.sh
"""


@stage(
    "rust-build-cache",
    from_="base",
    parents=("base",),
    reads=READS,
    args=("USE_SCCACHE", "SCCACHE_ENDPOINT", "rust_packages_command"),
)
async def rust_build_cache(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM base AS rust-build-cache: the Rust artifacts built with a stable version, keyed only by Rust inputs."""
    upstream = as_written("rust-build-cache", args, ctx, portable=("rust_packages_command",))
    return (
        ctx.parents["base"]
        .with_(reproduces(INSTALL_RUST_TOOLS, upstream))
        .with_(reproduces(WORKDIR, upstream))
        .with_(reproduces(COPY_RUST_REQUIREMENTS, upstream))
        .with_(reproduces(INSTALL_RUST_REQUIREMENTS, upstream))
        .with_(reproduces(COPY_RUST_INPUTS, upstream))
        .with_(reproduces(CARGO_JOBS, upstream))
        .with_(reproduces(SCCACHE_PORT, upstream))
        .with_(reproduces(BUILD_RUST, upstream))
    )


@stage("rust-build", from_="rust-build-cache", parents=("rust-build-cache",), args=("git_version_clean",))
async def rust_build(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM rust-build-cache AS rust-build: relink with the exact version; keep only the artifacts."""
    relink = deviates(RELINK, NO_GIT, as_written("rust-build", args, without_git(ctx)))
    built = ctx.parents["rust-build-cache"].with_(with_git_version(args.git_version_clean, relink))
    artifacts = dag.directory().with_directory(".", built.directory(RUST_ARTIFACTS), include=["vllm-rs", "_rust_*.so"])
    return dag.container().with_directory(RUST_ARTIFACTS, artifacts)


@stage("rust-installed", from_=None, parents=("rust-build",), args=("PYTHON_VERSION",))
async def rust_installed(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """rust-build's artifacts where vLLM's wheel installs them (site-packages/vllm), alone in one layer,
    with their RECORD rows in the image config: merged into the runtime images whole ("/" onto "/",
    which the engine does without reading the layer), so a hit is never pulled."""
    artifacts = ctx.parents["rust-build"].directory(RUST_ARTIFACTS)
    rows = await rows_of(artifacts, "vllm/")
    return scratch_with(f"{args.site_packages()}/vllm", artifacts).with_label(RECORD_LABEL, json.dumps(rows))
