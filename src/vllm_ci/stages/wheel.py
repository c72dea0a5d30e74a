"""WHEEL BUILD IMAGE: `FROM base AS build`: vLLM's wheel, repackaged by upstream's own setup.py from
csrc-build's compiled extension, rust-build's frontend and the Python sources, with its checksum, the
EP kernel wheels and the size check. Every instruction runs as upstream writes it. The result keeps
only what children take from it: dist/ and the EP kernel wheels."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import (
    DIST,
    EVERYTHING,
    SOURCE_DATE_EPOCH,
    UV_BUILD_ENV,
    WORKDIR,
    with_git_version,
    without_git,
)

# build repeats csrc-build's text for these.
from vllm_ci.stages.csrc import COPY_BUILD_REQUIREMENTS, INSTALL_BUILD_REQUIREMENTS, TARGET_DEVICE, USE_EXISTING_TORCH
from vllm_ci.stages.extensions import EP_DIST

NO_GIT = (
    "binds an empty .git: the upload leaves .git out, so setuptools-scm gets the version the host derived "
    "from it (git_version, as SETUPTOOLS_SCM_PRETEND_VERSION for this RUN only); the key holds that version, "
    "never .git. Runs with SOURCE_DATE_EPOCH=315532800, so the wheel's zip timestamps are fixed"
)
NO_GIT_CHECK = (
    "binds an empty .git (the upload leaves .git out), so tools/check_repo.sh could only fail ('Repo is dirty'): "
    "it runs as written with GIT_REPO_CHECK=0, and any other value is refused before any container work"
)
WITHOUT_UNREAD = (
    "COPY . . copies the upload, which leaves out .git (the version comes from the host), .github and docs "
    "(no step of the stage reads them; main.SOURCE_IGNORE)"
)

COPY_PRECOMPILED = "COPY --from=csrc-build /workspace/dist /precompiled-wheels"
COPY_ALL = "COPY . ."
COPY_RUST = (
    "COPY --from=rust-build /workspace/vllm/vllm-rs vllm/vllm-rs",
    "COPY --from=rust-build /workspace/vllm/_rust_*.so vllm/",
)
CHECK_REPO = """\
RUN --mount=type=bind,source=.git,target=.git \\
    if [ "$GIT_REPO_CHECK" != "0" ]; then bash tools/check_repo.sh ; fi
"""
NO_SUFFIX = "ENV VLLM_SKIP_PRECOMPILED_VERSION_SUFFIX=1"
BUILD_WHEEL = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=bind,source=.git,target=.git \\
    if [ "${vllm_target_device}" = "cuda" ]; then \\
        export VLLM_USE_PRECOMPILED=1; \\
        export VLLM_PRECOMPILED_WHEEL_LOCATION=$(ls /precompiled-wheels/*.whl); \\
    fi && \\
    python3 setup.py bdist_wheel --dist-dir=dist --py-limited-api=cp38
"""
WHEEL_SHA = "RUN sha256sum dist/*.whl > dist/wheel.sha256"
COPY_EP_WHEELS = "COPY --from=extensions-build /tmp/ep_kernels_workspace/dist /tmp/ep_kernels_workspace/dist"
EP_SHA = """\
RUN sha256sum /tmp/ep_kernels_workspace/dist/*.whl \\
    > /tmp/ep_kernels_workspace/dist/wheels.sha256
"""
COPY_SIZE_CHECK = "COPY .buildkite/check-wheel-size.py check-wheel-size.py"
MAX_SIZE = "ENV VLLM_MAX_SIZE_MB=$VLLM_MAX_SIZE_MB"
SIZE_CHECK = """\
RUN if [ "$RUN_WHEEL_CHECK" = "true" ] && \\
        [ "${CUDA_VERSION%%.*}" = "13" ]; then \\
        python3 check-wheel-size.py dist; \\
    else \\
        echo "Skipping wheel size check."; \\
    fi
"""


@stage(
    "build",
    from_="base",
    parents=("base", "csrc-build", "rust-build", "extensions-build"),
    reads=EVERYTHING,
    args=(
        "TARGETPLATFORM",
        "INSTALL_RUBIN_PRERELEASE",
        "PIP_INDEX_URL",
        "UV_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "PYTORCH_CUDA_INDEX_BASE_URL",
        "PYTORCH_NIGHTLY",
        "GIT_REPO_CHECK=0",
        "vllm_target_device=cuda",
        "VLLM_MAX_SIZE_MB=500",
        "RUN_WHEEL_CHECK=true",
        "git_version",
    ),
)
async def build(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM base AS build: the vLLM wheel, repackaged around csrc-build's extension; keep dist/ and the EP wheels."""
    upstream = as_written("build", args, ctx)
    git_free = as_written("build", args, without_git(ctx))  # upstream's two RUNs that bind .git
    built = (
        ctx.parents["base"]
        .with_(reproduces(COPY_BUILD_REQUIREMENTS, upstream))
        .with_(reproduces(UV_BUILD_ENV, upstream))
        .with_(reproduces(INSTALL_BUILD_REQUIREMENTS, upstream))
        .with_(reproduces(WORKDIR, upstream))
        .with_(reproduces(COPY_PRECOMPILED, upstream))
        .with_(deviates(COPY_ALL, WITHOUT_UNREAD, upstream))
        .with_(reproduces(COPY_RUST, upstream))
        .with_(deviates(CHECK_REPO, NO_GIT_CHECK, git_free))
        .with_(reproduces(TARGET_DEVICE, upstream))
        .with_(reproduces(NO_SUFFIX, upstream))
        .with_(reproduces(USE_EXISTING_TORCH, upstream))
        # Wheels are zips with timestamps: the same inputs give the same bytes (declared in NO_GIT; no layer).
        .with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .with_(with_git_version(args.git_version, deviates(BUILD_WHEEL, NO_GIT, git_free)))
        .with_(reproduces(WHEEL_SHA, upstream))
        .with_(reproduces(COPY_EP_WHEELS, upstream))
        .with_(reproduces(EP_SHA, upstream))
        .with_(reproduces(COPY_SIZE_CHECK, upstream))
        .with_(reproduces(MAX_SIZE, upstream))
        .with_(reproduces(SIZE_CHECK, upstream))
    )
    return dag.container().with_directory(DIST, built.directory(DIST)).with_directory(EP_DIST, built.directory(EP_DIST))
