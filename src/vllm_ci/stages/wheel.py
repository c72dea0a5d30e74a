"""WHEEL BUILD IMAGE: `FROM base AS build`: vLLM's wheel, repackaged from csrc-build's compiled
extension plus the Python sources (upstream's release artifact; the test image does not use it)."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.stages.common import DIST, SOURCE_DATE_EPOCH, WORKSPACE
from vllm_ci.steps import scratch_with, with_env, with_files, with_pip_install

UV_BUILD_ENV = ("ENV UV_HTTP_TIMEOUT=500", 'ENV UV_INDEX_STRATEGY="unsafe-best-match"', "ENV UV_LINK_MODE=copy")
# The wheel build reads the whole package (upstream: COPY . .) less what is not part of it.
WHEEL_INPUTS = ("pyproject.toml", "setup.py", "CMakeLists.txt", "cmake/", "requirements/", "vllm/", "MANIFEST.in",
                "tools/build_rust.py")


@stage("build", from_="base", parents=("base", "csrc-build"), reads=WHEEL_INPUTS,
       args=("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "CUDA_VERSION", "PYTORCH_CUDA_INDEX_BASE_URL", "vllm_target_device=cuda"))
async def build(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM base AS build: repackage the wheel from csrc-build's compiled extension plus the Python sources."""
    base_image, csrc, source = ctx.parents["base"], ctx.parents["csrc-build"], ctx.source
    built = (
        base_image.with_(reproduces("COPY requirements/build/cuda.txt requirements/build/cuda.txt",
                                    with_files(source, ["requirements/build/cuda.txt"])))
        .with_(reproduces(UV_BUILD_ENV, with_env(args, UV_BUILD_ENV)))
        .with_(with_pip_install(args, ["requirements/build/cuda.txt"]))
        .with_(reproduces("WORKDIR /workspace", lambda ctr: ctr.with_workdir(WORKSPACE)))
        .with_(reproduces("COPY --from=csrc-build /workspace/dist /precompiled-wheels",
                          lambda ctr: ctr.with_directory("/precompiled-wheels", csrc.directory(DIST))))
        .with_directory(WORKSPACE, source)
        .with_(reproduces("ENV VLLM_TARGET_DEVICE=${vllm_target_device}",
                          with_env(args, ["ENV VLLM_TARGET_DEVICE=${vllm_target_device}"])))
        .with_(reproduces("ENV VLLM_SKIP_PRECOMPILED_VERSION_SUFFIX=1",
                          with_env(args, ["ENV VLLM_SKIP_PRECOMPILED_VERSION_SUFFIX=1"])))
        .with_env_variable("VLLM_USE_PRECOMPILED", "1")
        .with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .with_exec(
            # The wheel's file name is only known inside the container: one shell line, as the Dockerfile's RUN.
            ["sh", "-c", "VLLM_PRECOMPILED_WHEEL_LOCATION=$(ls /precompiled-wheels/*.whl) "
             f"python3 setup.py bdist_wheel --dist-dir={DIST}"]
        )
    )
    return scratch_with(DIST, built.directory(DIST))

