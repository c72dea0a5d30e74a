"""EXTENSIONS BUILD IMAGE: `FROM base AS extensions-build`: the expert-parallel kernel wheels (DeepEP
and NVSHMEM), Triton from source and NIXL, each only when its ARG asks for it. Every instruction runs
as upstream writes it; the result keeps only the three dist/ folders its children take."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import UV_BUILD_ENV, WORKDIR

# The three folders children copy or bind from this stage.
EP_DIST = "/tmp/ep_kernels_workspace/dist"
TRITON_DIST = "/tmp/triton_from_source_workspace/dist"
NIXL_DIST = "/tmp/nixl_workspace/dist"
READS = (
    "tools/ep_kernels/install_python_libraries.sh",
    "tools/build_triton_from_source.sh",
    "tools/build_nixl_with_torch215_for_rubin.py",
    "requirements/kv_connectors.txt",
)
PRECISE_BIND = "binds only requirements/kv_connectors.txt, the one file of requirements/ the step reads"

COPY_EP_INSTALLER = "COPY tools/ep_kernels/install_python_libraries.sh /tmp/install_python_libraries.sh"
BUILD_EP_KERNELS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    mkdir -p /tmp/ep_kernels_workspace/dist && \\
    CUDA_MAJOR=$(echo $CUDA_VERSION | cut -d. -f1) && \\
    if [ -n "$NCCL_VERSION" ]; then \\
        echo "nvidia-nccl-cu${CUDA_MAJOR}==${NCCL_VERSION}" \\
            > /tmp/nccl-override.txt && \\
        export UV_OVERRIDE=/tmp/nccl-override.txt; \\
    fi && \\
    DEEPEP_ARCH_LIST='9.0a 10.0a' && \\
    if [ "$(printf '%s\\n' 12.9 "$CUDA_VERSION" | sort -V | head -n1)" = 12.9 ]; then \\
        DEEPEP_ARCH_LIST="$DEEPEP_ARCH_LIST 10.3a"; \\
    fi && \\
    if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
        DEEPEP_ARCH_LIST="$DEEPEP_ARCH_LIST 10.7a"; \\
    fi && \\
    export TORCH_CUDA_ARCH_LIST="$DEEPEP_ARCH_LIST" && \\
    /tmp/install_python_libraries.sh \\
        --workspace /tmp/ep_kernels_workspace \\
        --mode wheel \\
        ${DEEPEP_COMMIT_HASH:+--deepep-ref "$DEEPEP_COMMIT_HASH"} \\
        ${NVSHMEM_VER:+--nvshmem-ver "$NVSHMEM_VER"} && \\
    find /tmp/ep_kernels_workspace/nvshmem -name '*.a' -delete
"""
COPY_TRITON_BUILDER = "COPY tools/build_triton_from_source.sh /tmp/build_triton_from_source.sh"
BUILD_TRITON = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=cache,id=triton-source-${TARGETARCH},target=/root/.triton,sharing=locked \\
    --mount=type=cache,id=triton-source-ccache-${TARGETARCH},target=/root/.cache/ccache,sharing=locked \\
    set -eux; \\
    TRITON_WORKSPACE=/tmp/triton_from_source_workspace; \\
    if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ] \\
        && [ -z "${TRITON_INSTALL_FROM_SOURCE_REPO}" ]; then \\
        echo "Rubin prerelease builds require TRITON_INSTALL_FROM_SOURCE_REPO" >&2; \\
        exit 1; \\
    elif [ -z "${TRITON_INSTALL_FROM_SOURCE_REPO}" ] \\
        && [ -n "${TRITON_INSTALL_FROM_SOURCE_REVISION}" ]; then \\
        echo "TRITON_INSTALL_FROM_SOURCE_REVISION requires TRITON_INSTALL_FROM_SOURCE_REPO" >&2; \\
        exit 1; \\
    elif [ -n "${TRITON_INSTALL_FROM_SOURCE_REPO}" ]; then \\
        dnf install -y --setopt=install_weak_deps=False zlib-devel; \\
        dnf clean all; \\
        rm -rf /var/cache/dnf; \\
        CUDA_MAJOR_MINOR=$(echo "${CUDA_VERSION}" | cut -d. -f1,2); \\
        if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
            case "${CUDA_MAJOR_MINOR}" in \\
                13.4|13.5) \\
                    export TRITON_PTXAS_BLACKWELL_PATH=/usr/local/cuda/bin/ptxas \\
                    ;; \\
                *) \\
                    echo "Unsupported Rubin CUDA version: ${CUDA_MAJOR_MINOR}" >&2; \\
                    exit 1 \\
                    ;; \\
            esac; \\
        fi; \\
        TRITON_WORKSPACE="${TRITON_WORKSPACE}" \\
        MAX_JOBS="${max_jobs:-}" \\
            bash /tmp/build_triton_from_source.sh; \\
    else \\
        mkdir -p "${TRITON_WORKSPACE}/dist"; \\
        printf '%s\\n' disabled > "${TRITON_WORKSPACE}/dist/build-state"; \\
        (cd "${TRITON_WORKSPACE}/dist" \\
            && sha256sum build-state > wheel.sha256); \\
    fi
"""
COPY_NIXL_BUILDER = "COPY tools/build_nixl_with_torch215_for_rubin.py /tmp/build_nixl_for_rubin.py"
BUILD_NIXL_WHEEL = """\
RUN --mount=type=bind,source=requirements,target=/tmp/vllm-requirements,ro \\
    set -eux; \\
    NIXL_WORKSPACE=/tmp/nixl_workspace; \\
    mkdir -p "${NIXL_WORKSPACE}/dist"; \\
    if [ "${BUILD_NIXL}" = "true" ]; then \\
        dnf install -y --setopt=install_weak_deps=False autoconf automake libtool; \\
        dnf clean all; \\
        rm -rf /var/cache/dnf; \\
        NIXL_REQUIREMENTS_FILE=/tmp/vllm-requirements/kv_connectors.txt \\
        WHEELS_CACHE_HOME="${NIXL_WORKSPACE}/dist" \\
        MAX_JOBS="${max_jobs:-}" \\
            python3 /tmp/build_nixl_for_rubin.py --skip-system-deps --build-only; \\
    fi
"""


@stage(
    "extensions-build",
    from_="base",
    parents=("base",),
    reads=READS,
    args=(
        "TARGETARCH",
        "CUDA_VERSION",
        "INSTALL_RUBIN_PRERELEASE",
        "TRITON_INSTALL_FROM_SOURCE_REPO",
        "TRITON_INSTALL_FROM_SOURCE_REVISION",
        "max_jobs",
        "DEEPEP_COMMIT_HASH=d4f41e4e93",
        "NVSHMEM_VER",
        "NCCL_VERSION",
        "BUILD_NIXL",
    ),
)
async def extensions_build(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM base AS extensions-build: the EP kernel wheels, Triton and NIXL; keep only their dist/ folders."""
    upstream = as_written("extensions-build", args, ctx)
    built = (
        ctx.parents["base"]
        .with_(reproduces(UV_BUILD_ENV, upstream))
        .with_(reproduces(WORKDIR, upstream))
        .with_(reproduces(COPY_EP_INSTALLER, upstream))
        .with_(reproduces(BUILD_EP_KERNELS, upstream))
        .with_(reproduces(COPY_TRITON_BUILDER, upstream))
        .with_(reproduces(BUILD_TRITON, upstream))
        .with_(reproduces(COPY_NIXL_BUILDER, upstream))
        .with_(deviates(BUILD_NIXL_WHEEL, PRECISE_BIND, upstream))
    )
    return (
        dag.container()
        .with_directory(EP_DIST, built.directory(EP_DIST))
        .with_directory(TRITON_DIST, built.directory(TRITON_DIST))
        .with_directory(NIXL_DIST, built.directory(NIXL_DIST))
    )
