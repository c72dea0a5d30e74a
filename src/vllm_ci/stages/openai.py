"""OpenAI API SERVER IMAGE: `FROM vllm-base AS vllm-openai-base`, then `vllm-sagemaker`, `vllm-openai`
and `vllm-openai-nonroot` on top of it.

vllm-openai-base's RUNs (KV connectors, Rubin, Triton and NIXL from extensions-build) run as written,
but on vllm-runtime-base in `openai-deps`, before vLLM is added: a new vLLM then never redoes them,
and the images above get vLLM, the ENV and LABELs, and their entrypoints as thin layers with no RUN."""

from __future__ import annotations

import dagger

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import ARCH_ENV
from vllm_ci.stages.runtime import COPY_EXTRAS, EXTRAS_READS, LIBRARY_PATHS, PACKAGE_INPUTS, with_vllm_installed

# What vllm-openai-base's RUNs read: of requirements/ (which they bind), only the files they open.
DEPS_READS = (
    "requirements/kv_connectors.txt",
    "requirements/kv_connectors_cu12.txt",
    "requirements/rubin-prerelease.txt",
    "tools/install_triton_from_source.sh",
)
OPENAI_BASE_ARGS = (
    "TARGETPLATFORM",
    "INSTALL_KV_CONNECTORS=false",
    "INSTALL_RUBIN_PRERELEASE",
    "TRITON_INSTALL_FROM_SOURCE_REPO",
    "CUDA_VERSION",
    "VLLM_BUILD_COMMIT",
    "VLLM_BUILD_PIPELINE",
    "VLLM_BUILD_URL",
    "VLLM_IMAGE_TAG",
    "PIP_INDEX_URL",
    "UV_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "torch_cuda_arch_list=7.5 8.0 8.6 8.9 9.0 10.0 11.0 12.0",
    "BUILD_NIXL",
)
BEFORE_VLLM = (
    "run as written on vllm-runtime-base in openai-deps, before vLLM is added, so a new vLLM never redoes them"
)
BY_FILE_MODE = "the script is added with mode 0755 in one file layer instead of a chmod RUN that would pull the image"

UV_TIMEOUT = "ENV UV_HTTP_TIMEOUT=500"
INSTALL_KV_CONNECTORS_RUN = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=bind,source=requirements,target=/tmp/vllm-requirements,ro \\
    set -eu; \\
    CUDA_MAJOR="${CUDA_VERSION%%.*}"; \\
    CUDA_VERSION_DASH=$(echo $CUDA_VERSION | cut -d. -f1,2 | tr '.' '-'); \\
    CUDA_HOME=/usr/local/cuda; \\
    BUILD_PKGS="libcusparse-dev-${CUDA_VERSION_DASH} \\
                libcublas-dev-${CUDA_VERSION_DASH} \\
                libcusolver-dev-${CUDA_VERSION_DASH}"; \\
    if [ "$INSTALL_KV_CONNECTORS" = "true" ]; then \\
        KV_REQUIREMENTS=/tmp/vllm-requirements/kv_connectors.txt; \\
        if [ "${CUDA_MAJOR}" = "12" ]; then \\
            KV_REQUIREMENTS=/tmp/vllm-requirements/kv_connectors_cu12.txt; \\
        fi; \\
        uv pip freeze --system > /tmp/kv-installed.txt; \\
        grep -E '^(torch|torchaudio|torchvision|triton|cuda-bindings|cuda-python|cuda-toolkit)==' \\
            /tmp/kv-installed.txt > /tmp/kv-constraints.txt; \\
        uv pip install --system -c /tmp/kv-constraints.txt -r "${KV_REQUIREMENTS}" --no-build || ( \\
            apt-get update -y && \\
            apt-get install -y --no-install-recommends --allow-change-held-packages ${BUILD_PKGS} && \\
            uv pip install --system -c /tmp/kv-constraints.txt -r "${KV_REQUIREMENTS}" --no-build-isolation && \\
            apt-get purge -y ${BUILD_PKGS} && \\
            rm -rf /var/lib/apt/lists/* \\
        ); \\
        MOONCAKE_VERSION=$(python3 -c "import importlib.metadata as m; print(m.version('mooncake-transfer-engine'))" 2>/dev/null || true) && \\
        if [ "${CUDA_MAJOR}" = "13" ] && [ -n "${MOONCAKE_VERSION}" ]; then \\
            uv pip uninstall --system mooncake-transfer-engine 2>/dev/null || true; \\
            uv pip install --system -c /tmp/kv-constraints.txt "mooncake-transfer-engine-cuda13==${MOONCAKE_VERSION}"; \\
        fi; \\
        rm -f /tmp/kv-installed.txt /tmp/kv-constraints.txt; \\
    fi
"""
INSTALL_RUBIN = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=bind,source=requirements,target=/tmp/vllm-requirements,ro \\
    if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
        echo "Installing Rubin prerelease requirements..." \\
        && uv pip install --system \\
            --prerelease=allow --index-strategy unsafe-first-match \\
            -r /tmp/vllm-requirements/rubin-prerelease.txt; \\
    fi
"""
COPY_TRITON_INPUTS = (
    """\
COPY --from=extensions-build \\
    /tmp/triton_from_source_workspace/dist/wheel.sha256 \\
    /tmp/triton-source-wheel.sha256
""",
    "COPY tools/install_triton_from_source.sh /tmp/install_triton_from_source.sh",
)
INSTALL_TRITON = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=bind,from=extensions-build,source=/tmp/triton_from_source_workspace/dist,target=/tmp/triton-source-dist,ro \\
    if [ -n "${TRITON_INSTALL_FROM_SOURCE_REPO}" ]; then \\
        CUDA_MAJOR_MINOR=$(echo "${CUDA_VERSION}" | cut -d. -f1,2); \\
        if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
            case "${CUDA_MAJOR_MINOR}" in \\
                13.4|13.5) \\
                    TRITON_SYSTEM_PTXAS_PATH=/usr/local/cuda/bin/ptxas \\
                    TRITON_EXPECTED_PTXAS_VERSION="${CUDA_MAJOR_MINOR}" \\
                        bash /tmp/install_triton_from_source.sh \\
                            /tmp/triton-source-dist \\
                            /tmp/triton-source-wheel.sha256 \\
                    ;; \\
                *) \\
                    echo "Unsupported Rubin CUDA version: ${CUDA_MAJOR_MINOR}" >&2; \\
                    exit 1 \\
                    ;; \\
            esac; \\
        else \\
            bash /tmp/install_triton_from_source.sh \\
                /tmp/triton-source-dist \\
                /tmp/triton-source-wheel.sha256; \\
        fi; \\
    fi \\
    && rm -f \\
        /tmp/install_triton_from_source.sh \\
        /tmp/triton-source-wheel.sha256
"""
INSTALL_NIXL = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=bind,from=extensions-build,source=/tmp/nixl_workspace/dist,target=/tmp/nixl-dist,ro \\
    set -eu; \\
    if [ "${BUILD_NIXL}" = "true" ]; then \\
        ls /tmp/nixl-dist/*.whl; \\
        uv pip uninstall --system nixl nixl-cu12 nixl-cu13; \\
        uv pip install --system --no-deps /tmp/nixl-dist/*.whl; \\
        python3 -c "import glob, importlib.util as u, os, torch; \\
            spec = u.find_spec('nixl_ep_cu' + os.environ['CUDA_VERSION'].split('.')[0]); \\
            mm = ''.join(torch.__version__.split('.')[:2]); \\
            ext = glob.glob(os.path.join(spec.submodule_search_locations[0], 'nixl_ep_cpp_torch' + mm + '.*')) if spec else []; \\
            assert ext, 'NIXL EP has no build for torch ' + torch.__version__; \\
            print('NIXL EP extension:', ext[0])"; \\
    fi
"""
BUILD_ENV = (
    "ENV VLLM_USAGE_SOURCE production-docker-image",
    """\
ENV VLLM_BUILD_COMMIT=${VLLM_BUILD_COMMIT:-unknown} \\
    VLLM_BUILD_PIPELINE=${VLLM_BUILD_PIPELINE:-local} \\
    VLLM_BUILD_URL=${VLLM_BUILD_URL:-} \\
    VLLM_IMAGE_TAG=${VLLM_IMAGE_TAG:-local/vllm-openai:dev}
""",
)
BUILD_LABELS = """\
LABEL org.opencontainers.image.source="https://github.com/vllm-project/vllm" \\
      org.opencontainers.image.revision="${VLLM_BUILD_COMMIT}" \\
      org.opencontainers.image.version="${VLLM_IMAGE_TAG}" \\
      org.opencontainers.image.url="${VLLM_BUILD_URL}" \\
      ai.vllm.build.commit="${VLLM_BUILD_COMMIT}" \\
      ai.vllm.build.pipeline="${VLLM_BUILD_PIPELINE}" \\
      ai.vllm.build.url="${VLLM_BUILD_URL}" \\
      ai.vllm.image.tag="${VLLM_IMAGE_TAG}"
"""
SAGEMAKER = (
    "COPY examples/deployment/sagemaker-entrypoint.sh .",
    "RUN chmod +x sagemaker-entrypoint.sh",
)
SAGEMAKER_ENTRYPOINT = 'ENTRYPOINT ["./sagemaker-entrypoint.sh"]'
SERVE = 'ENTRYPOINT ["vllm", "serve"]'
NONROOT = (
    "USER vllm",
    "WORKDIR /home/vllm",
    'ENTRYPOINT ["/usr/local/bin/vllm-nonroot-entrypoint.sh"]',
)
DEPS_INSTRUCTIONS = (
    UV_TIMEOUT,
    ARCH_ENV,
    INSTALL_KV_CONNECTORS_RUN,
    INSTALL_RUBIN,
    *COPY_TRITON_INPUTS,
    INSTALL_TRITON,
    INSTALL_NIXL,
)


@stage(
    "openai-deps",
    from_=None,
    parents=("vllm-runtime-base", "extensions-build"),
    reads=DEPS_READS,
    args=(*OPENAI_BASE_ARGS, "openai_extras"),
)
async def openai_deps(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """vllm-openai-base's RUNs, as written, on the runtime base (and the packages --openai-extras names, if any)."""
    deps = ctx.parents["vllm-runtime-base"].with_(as_written("openai-deps", args, ctx).step(DEPS_INSTRUCTIONS))
    extras = args.openai_extras.split()
    if not extras:
        return deps
    return deps.with_env_variable("PIP_BREAK_SYSTEM_PACKAGES", "1").with_exec(
        ["python3", "-m", "pip", "install", "--disable-pip-version-check", *args.pip_index_flags(), *extras]
    )


@stage(
    "vllm-openai-base",
    from_="vllm-base",
    parents=("openai-deps", "extension", "rust-installed", "runtime-python"),
    reads=(*PACKAGE_INPUTS, *EXTRAS_READS),
    args=OPENAI_BASE_ARGS,
    also_reads=("PYTHON_VERSION", "git_version"),
    not_read=("openai-deps", "extension", "rust-installed"),
)
async def openai_base(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-base AS vllm-openai-base: the server's dependencies, vLLM, and the build's ENV and LABELs."""
    upstream = as_written("vllm-openai-base", args, ctx)
    return (
        # What vllm-base adds onto the runtime, added here onto openai-deps (its markers are vllm-base's).
        ctx.parents["openai-deps"]
        .with_(await with_vllm_installed(args, ctx))
        .with_(as_written("vllm-base", args, ctx).step((*LIBRARY_PATHS, *COPY_EXTRAS)))
        .with_(deviates(DEPS_INSTRUCTIONS, BEFORE_VLLM))
        .with_(reproduces(BUILD_ENV, upstream))
        .with_(reproduces(BUILD_LABELS, upstream))
    )


@stage(
    "vllm-sagemaker",
    from_="vllm-openai-base",
    parents=("vllm-openai-base",),
    reads=("examples/deployment/sagemaker-entrypoint.sh",),
    not_read=("vllm-openai-base",),
)
async def sagemaker(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-openai-base AS vllm-sagemaker: the server behind SageMaker's entrypoint script."""
    script = ctx.source.file("examples/deployment/sagemaker-entrypoint.sh")
    return (
        ctx.parents["vllm-openai-base"]
        .with_(
            deviates(
                SAGEMAKER, BY_FILE_MODE, lambda ctr: ctr.with_file("sagemaker-entrypoint.sh", script, permissions=0o755)
            )
        )
        .with_(reproduces(SAGEMAKER_ENTRYPOINT, as_written("vllm-sagemaker", args, ctx)))
    )


@stage("vllm-openai", from_="vllm-openai-base", parents=("vllm-openai-base",), not_read=("vllm-openai-base",))
async def openai(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-openai-base AS vllm-openai: the server image, `vllm serve` as its entrypoint."""
    return ctx.parents["vllm-openai-base"].with_(reproduces(SERVE, as_written("vllm-openai", args, ctx)))


@stage("vllm-openai-nonroot", from_="vllm-openai", parents=("vllm-openai",), not_read=("vllm-openai",))
async def openai_nonroot(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-openai AS vllm-openai-nonroot: the server image run as the `vllm` user (opt-in)."""
    return ctx.parents["vllm-openai"].with_(reproduces(NONROOT, as_written("vllm-openai-nonroot", args, ctx)))
