"""DEV IMAGE: `FROM base AS dev`: the build base plus the development requirements (lint and tests),
for working on vLLM inside the image. Every instruction runs as the file writes it; the one dnf
command, which upstream gives no ARG, can be replaced by a portability argument (empty: upstream's)."""

from __future__ import annotations

import dagger

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation

READS = (
    "requirements/common.txt",
    "requirements/lint.txt",
    "requirements/test/cuda.in",
    "requirements/test/cuda.txt",
    "requirements/dev.txt",
    "pyproject.toml",
    "tools/use_existing_torch.py",
)

NUMA = Deviation("RUN", "dnf install", portable="dev_packages_command", whole=True)


@stage("dev", from_="base", parents=("base",), reads=READS, deviations=(NUMA,))
async def dev(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base AS dev: the build base with lint and test requirements installed."""
    return build.upstream("dev", ctx).walk(ctx.parents["base"])
