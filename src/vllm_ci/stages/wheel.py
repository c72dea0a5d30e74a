"""WHEEL BUILD IMAGE: `FROM base AS build`: vLLM's wheel, repackaged by upstream's own setup.py from
csrc-build's compiled extension, rust-build's frontend and the Python sources, with its checksum, the
EP kernel wheels and the size check. Every instruction runs as upstream writes it. The result keeps
only what children take from it: dist/ and the EP kernel wheels."""

from __future__ import annotations

import dataclasses

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import DIST, SOURCE_DATE_EPOCH
from vllm_ci.stages.extensions import EP_DIST

EVERYTHING = ("**",)  # COPY . . : the whole checkout (less what the upload leaves out)
NO_GIT = ("binds an empty .git: the uploaded source leaves .git out, so the version comes from the package "
          "(setuptools-scm needs SETUPTOOLS_SCM_PRETEND_VERSION); a key never reads .git")

COPY_BUILD_REQUIREMENTS = (
    'COPY requirements/build/cuda.txt requirements/build/cuda.txt',
    'COPY tools/use_existing_torch.py tools/use_existing_torch.py',
    'COPY --from=base /workspace/torch_lib_versions.txt torch_lib_versions.txt',
)
UV_BUILD_ENV = (
    'ENV UV_HTTP_TIMEOUT=500',
    'ENV UV_INDEX_STRATEGY="unsafe-best-match"',
    'ENV UV_LINK_MODE=copy',
)
INSTALL_BUILD_REQUIREMENTS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
        echo "Installing build requirements with Rubin prerelease PyTorch..." \\
        && python3 tools/use_existing_torch.py --prefix \\
        && uv pip install --python /opt/venv/bin/python3 -r requirements/build/cuda.txt; \\
    elif [ "${PYTORCH_NIGHTLY}" = "1" ]; then \\
        echo "Installing build requirements without torch..." \\
        && python3 tools/use_existing_torch.py --prefix \\
        && uv pip install --python /opt/venv/bin/python3 -r requirements/build/cuda.txt \\
        && echo "Installing torch nightly..." \\
        && uv pip install --python /opt/venv/bin/python3 $(cat torch_lib_versions.txt | grep -i "^torch=" | xargs) --pre \\
        --index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    else \\
        echo "Installing build requirements..." \\
        && uv pip install --python /opt/venv/bin/python3 -r requirements/build/cuda.txt \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    fi
"""
WORKDIR = 'WORKDIR /workspace'
COPY_SOURCES = (
    'COPY --from=csrc-build /workspace/dist /precompiled-wheels',
    'COPY . .',
    'COPY --from=rust-build /workspace/vllm/vllm-rs vllm/vllm-rs',
    'COPY --from=rust-build /workspace/vllm/_rust_*.so vllm/',
)
CHECK_REPO = """\
RUN --mount=type=bind,source=.git,target=.git \\
    if [ "$GIT_REPO_CHECK" != "0" ]; then bash tools/check_repo.sh ; fi
"""
TARGET_DEVICE = 'ENV VLLM_TARGET_DEVICE=${vllm_target_device}'
NO_SUFFIX = 'ENV VLLM_SKIP_PRECOMPILED_VERSION_SUFFIX=1'
USE_EXISTING_TORCH = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    if [ "${PYTORCH_NIGHTLY}" = "1" ] || \\
        [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
        python3 tools/use_existing_torch.py --prefix; \\
    fi
"""
BUILD_WHEEL = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=bind,source=.git,target=.git \\
    if [ "${vllm_target_device}" = "cuda" ]; then \\
        export VLLM_USE_PRECOMPILED=1; \\
        export VLLM_PRECOMPILED_WHEEL_LOCATION=$(ls /precompiled-wheels/*.whl); \\
    fi && \\
    python3 setup.py bdist_wheel --dist-dir=dist --py-limited-api=cp38
"""
WHEEL_SHA = 'RUN sha256sum dist/*.whl > dist/wheel.sha256'
COPY_EP_WHEELS = 'COPY --from=extensions-build /tmp/ep_kernels_workspace/dist /tmp/ep_kernels_workspace/dist'
EP_SHA = """\
RUN sha256sum /tmp/ep_kernels_workspace/dist/*.whl \\
    > /tmp/ep_kernels_workspace/dist/wheels.sha256
"""
COPY_SIZE_CHECK = 'COPY .buildkite/check-wheel-size.py check-wheel-size.py'
MAX_SIZE = 'ENV VLLM_MAX_SIZE_MB=$VLLM_MAX_SIZE_MB'
SIZE_CHECK = """\
RUN if [ "$RUN_WHEEL_CHECK" = "true" ] && \\
        [ "${CUDA_VERSION%%.*}" = "13" ]; then \\
        python3 check-wheel-size.py dist; \\
    else \\
        echo "Skipping wheel size check."; \\
    fi
"""


@stage("build", from_="base", parents=("base", "csrc-build", "rust-build", "extensions-build"), reads=EVERYTHING, args=(
    "TARGETPLATFORM", "INSTALL_RUBIN_PRERELEASE", "PIP_INDEX_URL", "UV_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL",
    "PYTORCH_CUDA_INDEX_BASE_URL", "PYTORCH_NIGHTLY", "GIT_REPO_CHECK=0", "vllm_target_device=cuda", "VLLM_MAX_SIZE_MB=500",
    "RUN_WHEEL_CHECK=true",
))
async def build(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM base AS build: the vLLM wheel, repackaged around csrc-build's extension; keep dist/ and the EP wheels."""
    upstream = as_written("build", args, ctx)
    # Upstream's two RUNs that bind .git, with an empty .git: the uploaded source has none.
    git_free = as_written("build", args, dataclasses.replace(ctx, source=ctx.source.with_new_directory(".git")))
    built = (
        ctx.parents["base"]
        .with_(reproduces(COPY_BUILD_REQUIREMENTS, upstream))
        .with_(reproduces(UV_BUILD_ENV, upstream))
        .with_(reproduces(INSTALL_BUILD_REQUIREMENTS, upstream))
        .with_(reproduces(WORKDIR, upstream))
        .with_(reproduces(COPY_SOURCES, upstream))
        .with_(deviates(CHECK_REPO, NO_GIT, git_free))
        .with_(reproduces(TARGET_DEVICE, upstream))
        .with_(reproduces(NO_SUFFIX, upstream))
        .with_(reproduces(USE_EXISTING_TORCH, upstream))
        # Wheels are zips with timestamps: the same inputs give the same bytes (not upstream's; no layer).
        .with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .with_(deviates(BUILD_WHEEL, NO_GIT, git_free))
        .with_(reproduces(WHEEL_SHA, upstream))
        .with_(reproduces(COPY_EP_WHEELS, upstream))
        .with_(reproduces(EP_SHA, upstream))
        .with_(reproduces(COPY_SIZE_CHECK, upstream))
        .with_(reproduces(MAX_SIZE, upstream))
        .with_(reproduces(SIZE_CHECK, upstream))
    )
    return dag.container().with_directory(DIST, built.directory(DIST)).with_directory(EP_DIST, built.directory(EP_DIST))
