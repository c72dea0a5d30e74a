"""vLLM installation IMAGE: `FROM ${FINAL_BASE_IMAGE} AS vllm-runtime-base` (every instruction as upstream
writes it), then `FROM vllm-runtime-base AS vllm-base` (vLLM installed by file operations onto it).

Upstream's runtime base installs CUDA JIT packages from NVIDIA's apt repository, which it names with no
ARG; that command is a portability argument whose default is upstream's text. Everything else that
points outside this machine has an ARG of upstream's own (DEADSNAKES_MIRROR_URL, GET_PIP_URL,
PYTORCH_CUDA_INDEX_BASE_URL), which the bundled example overrides."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.fastpath import program
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import COMPAT, FLOOR, METADATA_INPUTS, RUNTIME_PYTHON, RUNTIME_PYTHON_ROOT, vllm_installed
from vllm_ci.steps import Step, scratch_with

# After vLLM's wheel is installed (PyTorch's NVSHMEM), then in front of it the driver's path;
# vllm-base and test set both.
LIBRARY_PATHS = (
    "ENV LD_LIBRARY_PATH=/usr/local/cuda/lib64:$LD_LIBRARY_PATH",
    "ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64:${LD_LIBRARY_PATH}",
)
# What the Python package layer reads.
PACKAGE_INPUTS = ("vllm/", *METADATA_INPUTS)
# What the runtime base reads: its COPYs, and of the requirements folder it binds, the one file its RUN opens.
READS = (
    "requirements/common.txt",
    "requirements/cuda.txt",
    "requirements/rubin-prerelease.txt",
    "tools/install_snapshot_runtime.sh",
    "docker/entrypoints/vllm-nonroot-entrypoint.sh",
    "tools/install_gdrcopy.sh",
)
PRECISE_BIND = (
    "binds only the files of requirements/ the step reads, so an unrelated requirement never moves the runtime"
)

FRONTEND = "ENV DEBIAN_FRONTEND=noninteractive"
WORKDIR = "WORKDIR /vllm-workspace"
PYTHON_VERSION_STR = """\
RUN PYTHON_VERSION_STR=$(echo ${PYTHON_VERSION} | sed 's/\\.//g') && \\
    echo "export PYTHON_VERSION_STR=${PYTHON_VERSION_STR}" >> /etc/environment
"""
INSTALL_PYTHON = """\
RUN apt-get update -y \\
    && apt-get install -y --no-install-recommends \\
        ca-certificates \\
        software-properties-common \\
        curl \\
        sudo \\
        ffmpeg \\
        libsm6 \\
        libxext6 \\
        libgl1 \\
    && if [ ! -z ${DEADSNAKES_MIRROR_URL} ] ; then \\
        if [ ! -z "${DEADSNAKES_GPGKEY_URL}" ] ; then \\
            mkdir -p -m 0755 /etc/apt/keyrings ; \\
            curl -L ${DEADSNAKES_GPGKEY_URL} | gpg --dearmor > /etc/apt/keyrings/deadsnakes.gpg ; \\
            sudo chmod 644 /etc/apt/keyrings/deadsnakes.gpg ; \\
            echo "deb [signed-by=/etc/apt/keyrings/deadsnakes.gpg] ${DEADSNAKES_MIRROR_URL} $(lsb_release -cs) main" > /etc/apt/sources.list.d/deadsnakes.list ; \\
        fi ; \\
    else \\
        for i in 1 2 3; do \\
            add-apt-repository -y ppa:deadsnakes/ppa && break || \\
            { echo "Attempt $i failed, retrying in 5s..."; sleep 5; }; \\
        done ; \\
    fi \\
    && apt-get update -y \\
    && apt-get install -y --no-install-recommends \\
        python${PYTHON_VERSION} \\
        python${PYTHON_VERSION}-dev \\
        python${PYTHON_VERSION}-venv \\
        libibverbs-dev \\
    && rm -rf /var/lib/apt/lists/* \\
    && update-alternatives --install /usr/bin/python3 python3 /usr/bin/python${PYTHON_VERSION} 1 \\
    && update-alternatives --set python3 /usr/bin/python${PYTHON_VERSION} \\
    && ln -sf /usr/bin/python${PYTHON_VERSION}-config /usr/bin/python3-config \\
    && rm -f /usr/lib/python${PYTHON_VERSION}/EXTERNALLY-MANAGED \\
    && curl -sS ${GET_PIP_URL} | python${PYTHON_VERSION} \\
    && python3 --version && python3 -m pip --version
"""
INSTALL_CUDA_JIT = """\
RUN CUDA_VERSION_DASH=$(echo $CUDA_VERSION | cut -d. -f1,2 | tr '.' '-') && \\
    apt-get update -y && \\
    apt-get install -y --no-install-recommends --allow-change-held-packages \\
        cuda-nvcc-${CUDA_VERSION_DASH} \\
        cuda-cudart-${CUDA_VERSION_DASH} \\
        cuda-nvrtc-${CUDA_VERSION_DASH} \\
        cuda-nvrtc-dev-${CUDA_VERSION_DASH} \\
        cuda-cuobjdump-${CUDA_VERSION_DASH} \\
        libcurand-dev-${CUDA_VERSION_DASH} \\
        libcublas-dev-${CUDA_VERSION_DASH} \\
        libnuma-dev \\
        numactl && \\
    rm -rf /var/lib/apt/lists/*
"""
CUDA_ENV = (
    "ENV CUDA_HOME=/usr/local/cuda",
    'ENV PATH="${CUDA_HOME}/bin:${PATH}"',
    'ENV LD_LIBRARY_PATH="${CUDA_HOME}/lib64:${LD_LIBRARY_PATH}"',
)
COPY_SNAPSHOT_INSTALLER = "COPY tools/install_snapshot_runtime.sh /usr/local/bin/install_snapshot_runtime.sh"
INSTALL_SNAPSHOT_RUNTIME = """\
RUN if [ "${TARGETPLATFORM}" = "linux/amd64" ] \\
        && [ "${CUDA_VERSION%%.*}" -ge 13 ]; then \\
        MAX_JOBS="${max_jobs}" /usr/local/bin/install_snapshot_runtime.sh; \\
    else \\
        echo "Initialized snapshots are not installed for ${TARGETPLATFORM} with CUDA ${CUDA_VERSION}"; \\
    fi
"""
CRIU_ENV = "ENV CRIU_CUDA_PLUGIN_DIR=/usr/local/lib/criu"
INSTALL_UV = "RUN python3 -m pip install uv"
UV_ENV = (
    "ENV UV_HTTP_TIMEOUT=500",
    'ENV UV_INDEX_STRATEGY="unsafe-best-match"',
    "ENV UV_LINK_MODE=copy",
    "ENV UV_PYTHON_INSTALL_DIR=/opt/uv/python",
    "ENV UV_CACHE_DIR=/opt/uv/cache",
    "ENV UV_COMPILE_BYTECODE=1",
)
UV_DIRS = """\
RUN mkdir -p "${UV_PYTHON_INSTALL_DIR}" "${UV_CACHE_DIR}" \\
    && chgrp -R 0 /opt/uv \\
    && chmod -R g+rwX,a+rX /opt/uv
"""
NCCL_OVERRIDE = """\
RUN CUDA_MAJOR=$(echo $CUDA_VERSION | cut -d. -f1) && \\
    if [ -n "$NCCL_VERSION" ]; then \\
        echo "nvidia-nccl-cu${CUDA_MAJOR}==${NCCL_VERSION}" \\
            > /etc/uv-overrides.txt; \\
    else \\
        touch /etc/uv-overrides.txt; \\
    fi
"""
UV_OVERRIDE = "ENV UV_OVERRIDE=/etc/uv-overrides.txt"
ADD_USER = """\
RUN useradd --uid 2000 --gid 0 --create-home --home-dir /home/vllm \\
        --shell /bin/bash vllm \\
    && mkdir -p /home/vllm/.cache /home/vllm/.config \\
    && chown -R 2000:0 /home/vllm \\
    && chmod -R g+rwX /home/vllm \\
    && chgrp 0 /etc/passwd /etc/group \\
    && chmod g=u /etc/passwd /etc/group
"""
COPY_NONROOT_ENTRYPOINT = """\
COPY docker/entrypoints/vllm-nonroot-entrypoint.sh \\
    /usr/local/bin/vllm-nonroot-entrypoint.sh
"""
CHMOD_NONROOT_ENTRYPOINT = "RUN chmod 0755 /usr/local/bin/vllm-nonroot-entrypoint.sh"
COPY_REQUIREMENTS = (
    "COPY requirements/common.txt /tmp/common.txt",
    "COPY requirements/cuda.txt /tmp/requirements-cuda.txt",
)
INSTALL_REQUIREMENTS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=bind,source=requirements,target=/tmp/vllm-requirements,ro \\
    if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ] && \\
        [ ! -f /tmp/vllm-requirements/rubin-prerelease.txt ]; then \\
        echo "INSTALL_RUBIN_PRERELEASE=true requires requirements/rubin-prerelease.txt" >&2; \\
        exit 1; \\
    fi && \\
    if [ "$(echo $CUDA_VERSION | cut -d. -f1)" = "12" ]; then \\
        sed -i 's/^nvidia-cutlass-dsl\\[cu13\\]/nvidia-cutlass-dsl/' /tmp/requirements-cuda.txt; \\
        sed -i 's/^humming-kernels\\[cu13\\]/humming-kernels[cu12]/' /tmp/requirements-cuda.txt; \\
    fi && \\
    if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
        uv pip install --system \\
            --prerelease=allow --index-strategy unsafe-first-match \\
            -r /tmp/vllm-requirements/rubin-prerelease.txt \\
        && sed -Ei '/^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*==/Id' \\
            /tmp/requirements-cuda.txt \\
        && uv pip install --system -r /tmp/requirements-cuda.txt \\
        && uv pip install --system \\
            --prerelease=allow --index-strategy unsafe-first-match \\
            -r /tmp/vllm-requirements/rubin-prerelease.txt; \\
    else \\
        uv pip install --system \\
            -r /tmp/requirements-cuda.txt \\
            --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    fi && \\
    rm /tmp/requirements-cuda.txt /tmp/common.txt
"""
FLASHINFER_KERNELS = """\
RUN --mount=type=cache,target=/opt/pip/cache \\
    PIP_CACHE_DIR=/opt/pip/cache flashinfer download-kernels
"""
COPY_GDRCOPY_INSTALLER = "COPY tools/install_gdrcopy.sh /tmp/install_gdrcopy.sh"
INSTALL_GDRCOPY = """\
RUN set -eux; \\
    case "${TARGETPLATFORM}" in \\
      linux/arm64) UUARCH="aarch64" ;; \\
      linux/amd64) UUARCH="x64" ;; \\
      *) echo "Unsupported TARGETPLATFORM: ${TARGETPLATFORM}" >&2; exit 1 ;; \\
    esac; \\
    /tmp/install_gdrcopy.sh "${GDRCOPY_OS_VERSION}" "${GDRCOPY_CUDA_VERSION}" "${UUARCH}" && \\
    rm /tmp/install_gdrcopy.sh
"""
INSTALL_EXTRAS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    uv pip install --system accelerate 'modelscope<1.38' \\
        "timm${TIMM_VERSION}" "runai-model-streamer[s3,gcs,azure]${RUNAI_MODEL_STREAMER_VERSION}" \\
        "gguf${GGUF_VERSION}"
"""


@stage(
    "vllm-runtime-base",
    from_="${FINAL_BASE_IMAGE}",
    reads=READS,
    args=(
        "INSTALL_RUBIN_PRERELEASE",
        "TARGETPLATFORM",
        "max_jobs=2",
        "CUDA_VERSION",
        "PYTHON_VERSION",
        "NCCL_VERSION",
        "DEADSNAKES_MIRROR_URL",
        "DEADSNAKES_GPGKEY_URL",
        "GET_PIP_URL",
        "PYTORCH_CUDA_INDEX_BASE_URL",
        "GDRCOPY_CUDA_VERSION=12.8",
        "GDRCOPY_OS_VERSION=Ubuntu24_04",
        "TIMM_VERSION=>=1.0.17",
        "RUNAI_MODEL_STREAMER_VERSION=>=0.15.7",
        "GGUF_VERSION=>=0.19.0",
        "cuda_jit_packages_command",
    ),
)
async def runtime_base(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM FINAL_BASE_IMAGE AS vllm-runtime-base: Python, uv, the CUDA JIT tools and every runtime dependency, no vLLM."""
    upstream = as_written("vllm-runtime-base", args, ctx, portable=("cuda_jit_packages_command",))
    return (
        dag.container()
        .from_(args.final_base())
        .with_(reproduces(FRONTEND, upstream))
        .with_(reproduces(WORKDIR, upstream))
        .with_(reproduces(PYTHON_VERSION_STR, upstream))
        .with_(reproduces(INSTALL_PYTHON, upstream))
        .with_(reproduces(INSTALL_CUDA_JIT, upstream))
        .with_(reproduces(CUDA_ENV, upstream))
        .with_(reproduces(COPY_SNAPSHOT_INSTALLER, upstream))
        .with_(reproduces(INSTALL_SNAPSHOT_RUNTIME, upstream))
        .with_(reproduces(CRIU_ENV, upstream))
        .with_(reproduces(INSTALL_UV, upstream))
        .with_(reproduces(UV_ENV, upstream))
        .with_(reproduces(UV_DIRS, upstream))
        .with_(reproduces(NCCL_OVERRIDE, upstream))
        .with_(reproduces(UV_OVERRIDE, upstream))
        .with_(reproduces(ADD_USER, upstream))
        .with_(reproduces(COPY_NONROOT_ENTRYPOINT, upstream))
        .with_(reproduces(CHMOD_NONROOT_ENTRYPOINT, upstream))
        .with_(reproduces(COMPAT, upstream))
        .with_(reproduces(COPY_REQUIREMENTS, upstream))
        .with_(deviates(INSTALL_REQUIREMENTS, PRECISE_BIND, upstream))
        .with_(reproduces(FLASHINFER_KERNELS, upstream))
        .with_(reproduces(COPY_GDRCOPY_INSTALLER, upstream))
        .with_(reproduces(INSTALL_GDRCOPY, upstream))
        .with_(reproduces(INSTALL_EXTRAS, upstream))
    )


# Copies the runtime's Python alone (interpreter, linked libraries, standard library) into a folder.
COPY_PYTHON_ALONE = program("copy_python_alone.sh")


@stage("runtime-python", from_=None, parents=("vllm-runtime-base",))
async def runtime_python(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """The runtime's own Python alone (interpreter, linked libraries, standard library), tens of MB:
    it compiles vLLM's bytecode, as upstream's uv install does, without pulling the runtime."""
    alone = ctx.parents["vllm-runtime-base"].with_exec(
        ["sh", "-c", COPY_PYTHON_ALONE, "sh", RUNTIME_PYTHON_ROOT, RUNTIME_PYTHON]
    )
    return scratch_with("/", alone.directory(RUNTIME_PYTHON_ROOT))


WHEEL_COPIES = (
    "COPY --from=base /workspace/torch_lib_versions.txt torch_lib_versions.txt",
    "COPY --from=build /workspace/dist/wheel.sha256 /tmp/vllm-wheel.sha256",
)
INSTALL_WHEEL = """\
RUN --mount=type=bind,from=build,src=/workspace/dist,target=/vllm-workspace/dist \\
    --mount=type=cache,target=/opt/uv/cache \\
    if [ "${PYTORCH_NIGHTLY}" = "1" ]; then \\
        echo "Installing torch nightly..." \\
        && uv pip install --system $(cat torch_lib_versions.txt | xargs) --pre \\
        --index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.') \\
        && echo "Installing vLLM..." \\
        && uv pip install --system dist/*.whl --verbose \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    else \\
        echo "Installing vLLM..." \\
        && uv pip install --system dist/*.whl --verbose \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    fi
"""
VLLM_RS_LINK = """\
RUN ln -s "$(python3 -c 'import sysconfig; print(sysconfig.get_path("platlib"))')/vllm/vllm-rs" /usr/local/bin/vllm-rs \\
    && vllm-rs --version
"""
UV_PIP_LIST = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
. /etc/environment && \\
uv pip list
"""
EP_WHEELS = (
    "COPY --from=build /tmp/ep_kernels_workspace/dist/wheels.sha256 /tmp/ep-kernels-wheels.sha256",
    """\
RUN --mount=type=bind,from=build,src=/tmp/ep_kernels_workspace/dist,target=/vllm-workspace/ep_kernels/dist \\
    --mount=type=cache,target=/opt/uv/cache \\
    uv pip install --system ep_kernels/dist/*.whl --verbose \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.')
""",
)
COPY_EXTRAS = (
    "COPY examples examples",
    "COPY benchmarks benchmarks",
    "COPY ./vllm/collect_env.py .",
)
EXTRAS_READS = ("examples/", "benchmarks/", "vllm/collect_env.py")
NOT_RUN = "only prints the installed packages; not run, as it would pull every layer below"


@stage(
    "vllm-base",
    from_="vllm-runtime-base",
    parents=("vllm-runtime-base", "extension", "rust-installed", "runtime-python"),
    reads=(*PACKAGE_INPUTS, *EXTRAS_READS),
    also_reads=("PYTHON_VERSION", "git_version"),
    args=(
        "PIP_INDEX_URL",
        "UV_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "PYTORCH_CUDA_INDEX_BASE_URL",
        "PIP_KEYRING_PROVIDER",
        "UV_KEYRING_PROVIDER",
        "PYTORCH_NIGHTLY",
    ),
    not_read=("vllm-runtime-base", "extension", "rust-installed"),
)
async def vllm_base(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-runtime-base AS vllm-base: the runtime image with vLLM installed."""
    upstream = as_written("vllm-base", args, ctx)
    return (
        ctx.parents["vllm-runtime-base"]
        .with_(
            deviates(
                (*WHEEL_COPIES, INSTALL_WHEEL, VLLM_RS_LINK, *EP_WHEELS), FLOOR, await with_vllm_installed(args, ctx)
            )
        )
        .with_(deviates(UV_PIP_LIST, NOT_RUN))
        .with_(reproduces(LIBRARY_PATHS, upstream))
        .with_(reproduces(COPY_EXTRAS, upstream))
    )


async def with_vllm_installed(args: BuildArgs, ctx: StageContext) -> Step:
    """vLLM as vllm-base installs it, by file layers: the extension, EP kernels, vllm/ files and vllm-rs,
    and the vllm-rs link on PATH. vllm-openai-base, which upstream builds on vllm-base, adds the same."""
    installed = await vllm_installed(args, ctx)

    def step(ctr: dagger.Container) -> dagger.Container:
        return ctr.with_(installed).with_symlink(f"{args.site_packages()}/vllm/vllm-rs", "/usr/local/bin/vllm-rs")

    return step
