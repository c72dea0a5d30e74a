"""vLLM installation IMAGE: `FROM ${FINAL_BASE_IMAGE} AS vllm-runtime-base` (every instruction as the file
writes it), then `FROM vllm-runtime-base AS vllm-base` (vLLM installed by file operations onto it).

Upstream's runtime base installs CUDA JIT packages from NVIDIA's apt repository, which it names with no
ARG; that command is a portability argument whose default is upstream's text. Everything else that
points outside this machine has an ARG of upstream's own (DEADSNAKES_MIRROR_URL, GET_PIP_URL,
PYTORCH_CUDA_INDEX_BASE_URL), which the bundled example overrides."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation, Handler, skipped
from vllm_ci.fastpath.install import METADATA_INPUTS, vllm_installed
from vllm_ci.stages.common import FLOOR, INSTALLS_VLLM, installing_vllm

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
REQUIREMENTS = Deviation(
    "RUN",
    "target=/tmp/vllm-requirements",
    "binds only the files of requirements/ the step reads, so an unrelated requirement never moves the runtime",
)
CUDA_JIT = Deviation("RUN", "cuda-nvcc-", portable="cuda_jit_packages_command", whole=True)


@stage("vllm-runtime-base", from_="${FINAL_BASE_IMAGE}", reads=READS, deviations=(REQUIREMENTS, CUDA_JIT))
async def runtime_base(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM FINAL_BASE_IMAGE AS vllm-runtime-base: Python, uv, the CUDA JIT tools and every runtime dependency, no vLLM."""
    start = dag.container().from_(build.from_image("vllm-runtime-base"))
    return build.upstream("vllm-runtime-base", ctx).walk(start)


VLLM_RS_LINK = Deviation("RUN", "/usr/local/bin/vllm-rs", FLOOR)
UV_PIP_LIST = Deviation(
    "RUN", "uv pip list", "only prints the installed packages; not run, as it would pull every layer below"
)
VLLM_BASE_DEVIATIONS = (*INSTALLS_VLLM, VLLM_RS_LINK, UV_PIP_LIST)
EXTRAS_READS = ("examples/", "benchmarks/", "vllm/collect_env.py")


@stage(
    "vllm-base",
    from_="vllm-runtime-base",
    parents=("vllm-runtime-base", "extension", "package", "rust-installed", "runtime-python"),
    reads=(*PACKAGE_INPUTS, *EXTRAS_READS),
    deviations=VLLM_BASE_DEVIATIONS,
    also_reads=("PYTHON_VERSION", "git_version"),
    not_read=("vllm-runtime-base", "extension", "package", "rust-installed"),
)
async def vllm_base(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM vllm-runtime-base AS vllm-base: the runtime image with vLLM installed."""
    return build.upstream("vllm-base", ctx).walk(ctx.parents["vllm-runtime-base"], await vllm_base_handlers(build, ctx))


async def vllm_base_handlers(build: Build, ctx: StageContext) -> dict[Deviation, Handler]:
    """vLLM as vllm-base installs it, by file layers where its first install instruction stands: the
    extension, EP kernels, vllm/ files and vllm-rs, and the vllm-rs link on PATH. vllm-openai-base, which
    upstream builds on vllm-base, walks vllm-base's instructions with the same handlers."""
    installed = await vllm_installed(build, ctx)

    def step(ctr: dagger.Container) -> dagger.Container:
        return ctr.with_(installed).with_symlink(f"{build.site_packages()}/vllm/vllm-rs", "/usr/local/bin/vllm-rs")

    return {**installing_vllm(step), VLLM_RS_LINK: skipped, UV_PIP_LIST: skipped}
