"""TEST IMAGE: `FROM vllm-runtime-base AS test-deps` (every instruction as upstream writes it), then
`FROM test-deps AS test`: vLLM and the source tree added by file operations, the thin top layers.

What the test stage does differently, and why: it adds vLLM (csrc-build's extension and the vllm/
files) and the checkout by file layers onto the imported test-deps, with no RUN, so a Python-only
change pulls none of the layers below; the editable install of tests/vllm_test_utils, the one RUN
that does not depend on vLLM, is done in test-deps at the same path."""

from __future__ import annotations

import dagger

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import EVERYTHING, FLOOR, RUNTIME_WORKSPACE, UV_BUILD_ENV, vllm_installed

# test-deps and test repeat dev's and vllm-base's text for these.
from vllm_ci.stages.dev import COPY_DEV_REQUIREMENTS
from vllm_ci.stages.runtime import EP_WHEELS, INSTALL_WHEEL, LIBRARY_PATHS, WHEEL_COPIES
from vllm_ci.steps import Step

TEST_DEPS_READS = (
    "requirements/common.txt",
    "requirements/lint.txt",
    "requirements/test/cuda.in",
    "requirements/test/cuda.txt",
    "requirements/dev.txt",
    "pyproject.toml",
    "tools/use_existing_torch.py",
    "tests/vllm_test_utils/",
)
INDEX_ARGS = (
    "PIP_INDEX_URL",
    "UV_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "PYTORCH_CUDA_INDEX_BASE_URL",
    "PIP_KEYRING_PROVIDER",
    "UV_KEYRING_PROVIDER",
)
SOURCE_TREE = ("ADD . /vllm-workspace/", "RUN mkdir src", "RUN mv vllm src/vllm")
SOURCE_TREE_BY_FILES = (
    "the tree is added with vllm/ already at src/vllm: two file layers, no RUN, so a Python-only "
    "change pulls nothing below them"
)
IN_TEST_DEPS = (
    "run as written in test-deps on the same path (/vllm-workspace/tests/vllm_test_utils), so this stage stays thin"
)
V1_INCLUDED = "vllm/v1 is already in site-packages: the file layers add all of vllm/ there"

INSTALL_GIT = """\
RUN apt-get update -y \\
    && apt-get install -y git
"""
INSTALL_DEV_REQUIREMENTS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    CUDA_MAJOR="${CUDA_VERSION%%.*}"; \\
    if [ "$CUDA_MAJOR" -ge 12 ]; then \\
        if [ "${PYTORCH_NIGHTLY}" = "1" ]; then \\
            echo "Installing dev requirements plus torch nightly..." \\
            && python3 tools/use_existing_torch.py --prefix \\
            && cat torch_lib_versions.txt >> requirements/test/cuda.in \\
            && uv pip compile requirements/test/cuda.in -o requirements/test/cuda.txt --index-strategy unsafe-best-match \\
            --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.') \\
            && uv pip install --system $(cat torch_lib_versions.txt | xargs) --pre \\
            -r requirements/dev.txt \\
            --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
        else \\
            echo "Installing dev requirements..." \\
            && if [ "$TARGETPLATFORM" = "linux/arm64" ]; then \\
                echo "Recompiling test requirements for arm64..." \\
                && uv pip compile requirements/test/cuda.in -o requirements/test/cuda.txt --index-strategy unsafe-best-match \\
                --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
            fi \\
            && uv pip install --system -r requirements/dev.txt \\
            --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
        fi \\
    fi
"""
EDITABLE_TEST_UTILS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    uv pip install --system -e tests/vllm_test_utils
"""
TEST_ENV = (
    "ENV HF_XET_HIGH_PERFORMANCE 1",
    "ENV HF_HUB_DOWNLOAD_TIMEOUT 60",
    "ENV VLLM_GPU_SYNC_CHECK=error",
)
COPY_V1 = "COPY vllm/v1 /usr/local/lib/python${PYTHON_VERSION}/dist-packages/vllm/v1"


@stage(
    "test-deps",
    from_="vllm-runtime-base",
    parents=("vllm-runtime-base", "base"),
    reads=TEST_DEPS_READS,
    args=("PYTHON_VERSION", "TARGETPLATFORM", *INDEX_ARGS, "PYTORCH_NIGHTLY"),
)
async def test_deps(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-runtime-base AS test-deps: git, the dev requirements (lint and tests) and the test utilities."""
    upstream = as_written("test-deps", args, ctx)
    return (
        ctx.parents["vllm-runtime-base"]
        .with_(reproduces(UV_BUILD_ENV, upstream))
        .with_(reproduces(INSTALL_GIT, upstream))
        .with_(reproduces(COPY_DEV_REQUIREMENTS, upstream))
        .with_(reproduces(INSTALL_DEV_REQUIREMENTS, upstream))
        # The test stage's editable install of the test utilities, where ADD . will put them.
        .with_directory(f"{RUNTIME_WORKSPACE}/tests/vllm_test_utils", ctx.source.directory("tests/vllm_test_utils"))
        .with_(upstream.step(EDITABLE_TEST_UTILS))
    )


@stage(
    "test",
    from_="test-deps",
    parents=("test-deps", "extension", "rust-installed", "runtime-python"),
    reads=EVERYTHING,
    args=("PYTHON_VERSION", *INDEX_ARGS, "PYTORCH_NIGHTLY"),
    also_reads=("git_version",),
    not_read=("test-deps", "extension", "rust-installed"),
)
async def test(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM test-deps AS test: vLLM installed, then the source tree as the last, thin layer."""
    upstream = as_written("test", args, ctx)
    return (
        ctx.parents["test-deps"]
        .with_(deviates((*WHEEL_COPIES, INSTALL_WHEEL, *EP_WHEELS), FLOOR, await vllm_installed(args, ctx)))
        .with_(reproduces(LIBRARY_PATHS, upstream))
        .with_(deviates(SOURCE_TREE, SOURCE_TREE_BY_FILES, with_source_tree(ctx.source)))
        .with_(deviates(EDITABLE_TEST_UTILS, IN_TEST_DEPS))
        .with_(reproduces(TEST_ENV, upstream))
        .with_(deviates(COPY_V1, V1_INCLUDED))
    )


def with_source_tree(source: dagger.Directory) -> Step:
    """The checkout at /vllm-workspace with vllm/ at src/vllm, so tests import the installed vLLM
    (tests/__init__.py puts /vllm-workspace on sys.path), by two file layers and no RUN."""

    def step(ctr: dagger.Container) -> dagger.Container:
        return ctr.with_directory(RUNTIME_WORKSPACE, source, exclude=["vllm/"]).with_directory(
            f"{RUNTIME_WORKSPACE}/src/vllm", source.directory("vllm")
        )

    return step
