"""TEST IMAGE: `FROM vllm-runtime-base AS test-deps` (the test requirements), then
`FROM test-deps AS test`: vLLM installed by file operations and the source tree as the last, thin layer."""

from __future__ import annotations

from collections.abc import Callable

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.stages.common import RUNTIME_WORKSPACE, with_vllm
from vllm_ci.stages.runtime import LIBRARY_PATHS, UV_BUILD_ENV
from vllm_ci.steps import with_env, with_files, with_pip_install

TEST_ENV = ("ENV HF_XET_HIGH_PERFORMANCE 1", "ENV HF_HUB_DOWNLOAD_TIMEOUT 60", "ENV VLLM_GPU_SYNC_CHECK=error")
TEST_DEPS_INPUTS = ("requirements/", "tests/vllm_test_utils/")
EVERYTHING = ("**",)  # the whole checkout
SOURCE_TREE = ("ADD . /vllm-workspace/", "RUN mkdir src", "RUN mv vllm src/vllm")
SOURCE_TREE_BY_FILES = ("the tree is added with vllm/ already at src/vllm: two file layers, no RUN, so a Python-only "
                        "change pulls nothing below them")


@stage("test-deps", from_="vllm-runtime-base", parents=("vllm-runtime-base",), reads=TEST_DEPS_INPUTS,
       args=("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "CUDA_VERSION", "PYTORCH_CUDA_INDEX_BASE_URL"))
async def test_deps(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-runtime-base AS test-deps: the test requirements and the test utilities package."""
    runtime, source = ctx.parents["vllm-runtime-base"], ctx.source
    return (
        runtime.with_(reproduces(UV_BUILD_ENV, with_env(args, UV_BUILD_ENV)))
        .with_(with_files(source, TEST_DEPS_INPUTS, "/tmp"))
        .with_(with_pip_install(args, ["/tmp/requirements/test/cuda.txt"], system=True))
        .with_exec(["python3", "-m", "pip", "install", "--no-deps", "/tmp/tests/vllm_test_utils"])
        .with_exec(["rm", "-rf", "/tmp/requirements", "/tmp/tests"])
    )


@stage("test", from_="test-deps", parents=("test-deps", "extension"), reads=EVERYTHING, args=("PYTHON_VERSION",),
       thin_over="test-deps")
async def test(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM test-deps AS test: vLLM installed, then the source tree as the last, thin layer."""
    deps, ext, source = ctx.parents["test-deps"], ctx.parents["extension"], ctx.source
    return (
        with_vllm(args, deps, ext, source)
        .with_(reproduces(LIBRARY_PATHS, with_env(args, LIBRARY_PATHS)))
        .with_(deviates(SOURCE_TREE, SOURCE_TREE_BY_FILES, with_source_tree(source)))
        .with_workdir(RUNTIME_WORKSPACE)
        .with_(reproduces(TEST_ENV, with_env(args, TEST_ENV)))
    )


def with_source_tree(source: dagger.Directory) -> Callable[[dagger.Container], dagger.Container]:
    """The checkout at /vllm-workspace with vllm/ at src/vllm, so tests import the installed vLLM
    (tests/__init__.py puts /vllm-workspace on sys.path), by two file layers and no RUN."""

    def step(ctr: dagger.Container) -> dagger.Container:
        return (ctr.with_directory(RUNTIME_WORKSPACE, source, exclude=["vllm/"])
                .with_directory(f"{RUNTIME_WORKSPACE}/src/vllm", source.directory("vllm")))

    return step

