"""BASE BUILD IMAGE: `FROM ${BUILD_BASE_IMAGE} AS base` (docker/Dockerfile, the first section).

The build environment every build stage starts from: uv, a venv of PYTHON_VERSION from the
builder's own interpreter, and torch with the rest of requirements/cuda.txt from the CUDA index
derived from CUDA_VERSION. Every instruction runs as upstream writes it; two commands upstream
hard-codes with no ARG (dnf, the uv installer) are portability arguments whose default is
upstream's text."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import ARCH_ENV, COMPAT, WORKDIR

# What base reads of the checkout: its COPYs, and of the requirements folder it binds, the one
# file its RUN opens there (rubin-prerelease.txt; cuda.txt's `-r common.txt` is copied).
READS = (
    "requirements/common.txt",
    "requirements/cuda.txt",
    "requirements/rubin-prerelease.txt",
    "tools/use_existing_torch.py",
    "pyproject.toml",
)
PRECISE_BIND = "binds only the files of requirements/ the step reads, so an unrelated requirement never moves base"

UV_ENV = (
    "ENV UV_HTTP_TIMEOUT=500",
    'ENV UV_INDEX_STRATEGY="unsafe-best-match"',
    "ENV UV_PYTHON_INSTALL_DIR=/opt/uv/python",
    "ENV UV_CACHE_DIR=/opt/uv/cache",
    "ENV UV_INSTALL_DIR=/opt/uv/bin",
    'ENV PATH="/opt/venv/bin:/opt/uv/bin:$PATH"',
    'ENV VIRTUAL_ENV="/opt/venv"',
)
INSTALL_SYSTEM_PACKAGES = """\
RUN dnf install -y --setopt=install_weak_deps=False \\
        ccache \\
        git \\
        curl \\
        sudo \\
        elfutils-devel \\
        rdma-core-devel \\
    && dnf clean all \\
    && rm -rf /var/cache/dnf
"""
INSTALL_SCCACHE = """\
RUN if [ "$USE_SCCACHE" = "1" ]; then \\
        echo "Installing sccache..." \\
        && case "${TARGETPLATFORM}" in \\
          linux/arm64) SCCACHE_ARCH="aarch64" ;; \\
          linux/amd64) SCCACHE_ARCH="x86_64" ;; \\
          *) echo "Unsupported TARGETPLATFORM for sccache: ${TARGETPLATFORM}" >&2; exit 1 ;; \\
        esac \\
        && export SCCACHE_DOWNLOAD_URL="${SCCACHE_DOWNLOAD_URL:-https://github.com/mozilla/sccache/releases/download/v0.8.1/sccache-v0.8.1-${SCCACHE_ARCH}-unknown-linux-musl.tar.gz}" \\
        && curl -L -o sccache.tar.gz ${SCCACHE_DOWNLOAD_URL} \\
        && tar -xzf sccache.tar.gz \\
        && mv sccache-v0.8.1-${SCCACHE_ARCH}-unknown-linux-musl/sccache /usr/bin/sccache \\
        && rm -rf sccache.tar.gz sccache-v0.8.1-${SCCACHE_ARCH}-unknown-linux-musl; \\
    fi
"""
SCCACHE_ENV = (
    "ENV SCCACHE_BUCKET=${USE_SCCACHE:+${SCCACHE_BUCKET_NAME}}",
    "ENV SCCACHE_REGION=${USE_SCCACHE:+${SCCACHE_REGION_NAME}}",
    "ENV SCCACHE_S3_NO_CREDENTIALS=${USE_SCCACHE:+${SCCACHE_S3_NO_CREDENTIALS}}",
    "ENV SCCACHE_IDLE_TIMEOUT=${USE_SCCACHE:+0}",
)
INSTALL_UV_AND_VENV = """\
RUN mkdir -p "${UV_PYTHON_INSTALL_DIR}" "${UV_CACHE_DIR}" "${UV_INSTALL_DIR}" \\
    && chmod -R a+rX /opt/uv \\
    && curl -LsSf https://astral.sh/uv/install.sh | sh \\
    && PYV_NODOT=$(echo ${PYTHON_VERSION} | tr -d '.') \\
    && MANYLINUX_PY=/opt/python/cp${PYV_NODOT}-cp${PYV_NODOT}/bin/python${PYTHON_VERSION} \\
    && uv venv --seed /opt/venv --python "$MANYLINUX_PY" \\
    && rm -f /usr/bin/python3 /usr/bin/python3-config /usr/bin/pip \\
    && ln -sf /opt/venv/bin/python3 /usr/bin/python3 \\
    && ln -sf /opt/venv/bin/python3-config /usr/bin/python3-config \\
    && ln -sf /opt/venv/bin/pip /usr/bin/pip \\
    && python3 --version && python3 -m pip --version
"""
LINK_MODE = "ENV UV_LINK_MODE=copy"
GCC = "RUN gcc --version"
COPY_TORCH_INPUTS = (
    "COPY requirements/common.txt requirements/common.txt",
    "COPY requirements/cuda.txt requirements/cuda.txt",
    "COPY tools/use_existing_torch.py tools/use_existing_torch.py",
    "COPY pyproject.toml pyproject.toml",
)
INSTALL_TORCH = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=bind,source=requirements,target=/tmp/vllm-requirements,ro \\
    if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ] && \\
        [ ! -f /tmp/vllm-requirements/rubin-prerelease.txt ]; then \\
        echo "INSTALL_RUBIN_PRERELEASE=true requires requirements/rubin-prerelease.txt" >&2; \\
        exit 1; \\
    fi \\
    && if [ "$(echo $CUDA_VERSION | cut -d. -f1)" = "12" ]; then \\
        sed -i 's/^nvidia-cutlass-dsl\\[cu13\\]/nvidia-cutlass-dsl/' requirements/cuda.txt; \\
        sed -i 's/^humming-kernels\\[cu13\\]/humming-kernels[cu12]/' requirements/cuda.txt; \\
    fi \\
    && if [ "$(uname -m)" = "aarch64" ]; then \\
        printf 'cython<3.3\\n' > /tmp/build-constraints.txt \\
        && export UV_BUILD_CONSTRAINT=/tmp/build-constraints.txt; \\
    fi \\
    && if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
        echo "Installing Rubin prerelease requirements..." \\
        && /opt/venv/bin/python3 tools/use_existing_torch.py --prefix \\
        && uv pip install --python /opt/venv/bin/python3 \\
            --prerelease=allow --index-strategy unsafe-first-match \\
            -r /tmp/vllm-requirements/rubin-prerelease.txt \\
        && uv pip install --python /opt/venv/bin/python3 \\
            -r requirements/cuda.txt \\
        && uv pip install --python /opt/venv/bin/python3 \\
            --prerelease=allow --index-strategy unsafe-first-match \\
            -r /tmp/vllm-requirements/rubin-prerelease.txt; \\
    elif [ "${PYTORCH_NIGHTLY}" = "1" ]; then \\
        echo "Installing torch nightly..." \\
        && uv pip install --python /opt/venv/bin/python3 torch torchaudio torchvision --pre \\
        --index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.') \\
        && echo "Installing other requirements..." \\
        && /opt/venv/bin/python3 tools/use_existing_torch.py --prefix \\
        && uv pip install --python /opt/venv/bin/python3 -r requirements/cuda.txt \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    else \\
        uv pip install --python /opt/venv/bin/python3 -r requirements/cuda.txt \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    fi
"""
TORCH_LIB_VERSIONS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    uv pip freeze | grep -i "^torch=\\|^torchvision=\\|^torchaudio=" > torch_lib_versions.txt \\
    && TORCH_LIB_VERSIONS=$(cat torch_lib_versions.txt | xargs) \\
    && echo "Installed torch libs: ${TORCH_LIB_VERSIONS}"
"""


@stage(
    "base",
    from_="${BUILD_BASE_IMAGE}",
    reads=READS,
    args=(
        "TARGETPLATFORM",
        "INSTALL_RUBIN_PRERELEASE",
        "CUDA_VERSION",
        "PYTHON_VERSION",
        "USE_SCCACHE",
        "SCCACHE_DOWNLOAD_URL",
        "SCCACHE_ENDPOINT",
        "SCCACHE_BUCKET_NAME=vllm-build-sccache",
        "SCCACHE_REGION_NAME=us-west-2",
        "SCCACHE_S3_NO_CREDENTIALS=0",
        "PYTORCH_CUDA_INDEX_BASE_URL",
        "PYTORCH_NIGHTLY",
        "torch_cuda_arch_list=7.5 8.0 8.6 8.9 9.0 10.0 11.0 12.0",
        "manylinux_packages_command",
        "uv_installer_command",
    ),
)
async def base(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM ${BUILD_BASE_IMAGE} AS base: uv, the venv, torch and the CUDA requirements."""
    upstream = as_written("base", args, ctx, portable=("manylinux_packages_command", "uv_installer_command"))
    return (
        dag.container()
        .from_(args.expand(args.build_base_image))
        .with_(reproduces(UV_ENV, upstream))
        .with_(reproduces(INSTALL_SYSTEM_PACKAGES, upstream))
        .with_(reproduces(INSTALL_SCCACHE, upstream))
        .with_(reproduces(SCCACHE_ENV, upstream))
        .with_(reproduces(INSTALL_UV_AND_VENV, upstream))
        .with_(reproduces(LINK_MODE, upstream))
        .with_(reproduces(GCC, upstream))
        .with_(reproduces(COMPAT, upstream))
        .with_(reproduces(WORKDIR, upstream))
        .with_(reproduces(COPY_TORCH_INPUTS, upstream))
        .with_(deviates(INSTALL_TORCH, PRECISE_BIND, upstream))
        .with_(reproduces(TORCH_LIB_VERSIONS, upstream))
        .with_(reproduces(ARCH_ENV, upstream))
    )
