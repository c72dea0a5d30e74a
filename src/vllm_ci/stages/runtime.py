"""vLLM installation IMAGE: `FROM ${FINAL_BASE_IMAGE} AS vllm-runtime-base`, then
`FROM vllm-runtime-base AS vllm-base` (vLLM installed by file operations onto it)."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.stages.common import RUNTIME_WORKSPACE, with_vllm
from vllm_ci.steps import with_apt_packages, with_env, with_files, with_pip_install

UV_BUILD_ENV = ("ENV UV_HTTP_TIMEOUT=500", 'ENV UV_INDEX_STRATEGY="unsafe-best-match"', "ENV UV_LINK_MODE=copy")
UV_RUNTIME_ENV = (
    *UV_BUILD_ENV, "ENV UV_PYTHON_INSTALL_DIR=/opt/uv/python", "ENV UV_CACHE_DIR=/opt/uv/cache", "ENV UV_COMPILE_BYTECODE=1",
)
CUDA_RUNTIME_ENV = ("ENV CUDA_HOME=/usr/local/cuda", 'ENV PATH="${CUDA_HOME}/bin:${PATH}"',
                    'ENV LD_LIBRARY_PATH="${CUDA_HOME}/lib64:${LD_LIBRARY_PATH}"')
# After vLLM's wheel is installed (PyTorch's NVSHMEM), then in front of it the driver's path;
# vllm-base and test set both.
LIBRARY_PATHS = ("ENV LD_LIBRARY_PATH=/usr/local/cuda/lib64:$LD_LIBRARY_PATH",
                 "ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64:${LD_LIBRARY_PATH}")
CUDA_COMPATIBILITY = "ENV VLLM_ENABLE_CUDA_COMPATIBILITY=0"
# What the Python package layer reads.
PACKAGE_INPUTS = ("vllm/",)
BASE_INPUTS = ("requirements/common.txt", "requirements/cuda.txt")


@stage("vllm-runtime-base", from_="${FINAL_BASE_IMAGE}", reads=BASE_INPUTS,
       args=("PYTHON_VERSION", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "CUDA_VERSION", "PYTORCH_CUDA_INDEX_BASE_URL"))
async def runtime_base(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM FINAL_BASE_IMAGE AS vllm-runtime-base: Python and every runtime dependency, no vLLM."""
    source = ctx.source
    return (
        dag.container()
        .from_(args.final_base())
        .with_(reproduces("ENV DEBIAN_FRONTEND=noninteractive", with_env(args, ["ENV DEBIAN_FRONTEND=noninteractive"])))
        .with_(reproduces("WORKDIR /vllm-workspace", lambda ctr: ctr.with_workdir(RUNTIME_WORKSPACE)))
        .with_(with_apt_packages([f"python{args.python_version}", "python3-pip", "ca-certificates"]))
        .with_(reproduces(CUDA_RUNTIME_ENV, with_env(args, CUDA_RUNTIME_ENV)))
        .with_(reproduces("ENV CRIU_CUDA_PLUGIN_DIR=/usr/local/lib/criu",
                          with_env(args, ["ENV CRIU_CUDA_PLUGIN_DIR=/usr/local/lib/criu"])))
        .with_(reproduces(UV_RUNTIME_ENV, with_env(args, UV_RUNTIME_ENV)))
        .with_(reproduces(CUDA_COMPATIBILITY, with_env(args, [CUDA_COMPATIBILITY])))
        .with_(with_files(source, BASE_INPUTS, "/tmp"))
        .with_(with_pip_install(args, ["/tmp/requirements/cuda.txt"], system=True))
    )


@stage("vllm-base", from_="vllm-runtime-base", parents=("vllm-runtime-base", "extension"), reads=PACKAGE_INPUTS,
       args=("PYTHON_VERSION",), thin_over="vllm-runtime-base")
async def vllm_base(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-runtime-base AS vllm-base: the runtime image with vLLM installed."""
    runtime, ext, source = ctx.parents["vllm-runtime-base"], ctx.parents["extension"], ctx.source
    return (
        with_vllm(args, runtime, ext, source)
        .with_(reproduces(LIBRARY_PATHS, with_env(args, LIBRARY_PATHS)))
    )

