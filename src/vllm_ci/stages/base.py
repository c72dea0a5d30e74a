"""BASE BUILD IMAGE: `FROM ${BUILD_BASE_IMAGE} AS base` (docker/Dockerfile, the first section).

The build environment every build stage starts from: uv, a venv of PYTHON_VERSION from the
builder's own interpreter, and torch with the rest of requirements/cuda.txt from the CUDA index
derived from CUDA_VERSION. Every instruction runs as the file writes it; two commands upstream
hard-codes with no ARG (dnf, the uv installer) can be replaced by portability arguments (empty:
upstream's)."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation

# What base reads of the checkout: its COPYs, and of the requirements folder it binds, the one
# file its RUN opens there (rubin-prerelease.txt; cuda.txt's `-r common.txt` is copied).
READS = (
    "requirements/common.txt",
    "requirements/cuda.txt",
    "requirements/rubin-prerelease.txt",
    "tools/use_existing_torch.py",
    "pyproject.toml",
)
# What this project does differently in base (every other instruction runs as the file writes it).
TORCH_INSTALL = Deviation(
    "RUN",
    "target=/tmp/vllm-requirements",
    "binds only the files of requirements/ the step reads, so an unrelated requirement never moves base",
)
SYSTEM_PACKAGES = Deviation("RUN", "dnf install", portable="manylinux_packages_command", whole=True)
UV_INSTALLER = Deviation("RUN", "uv/install.sh", portable="uv_installer_command")


@stage(
    "base",
    from_="${BUILD_BASE_IMAGE}",
    reads=READS,
    deviations=(TORCH_INSTALL, SYSTEM_PACKAGES, UV_INSTALLER),
)
async def base(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM ${BUILD_BASE_IMAGE} AS base: uv, the venv, torch and the CUDA requirements."""
    return build.upstream("base", ctx).walk(dag.container().from_(build.from_image("base")))
