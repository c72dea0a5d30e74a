"""EXTENSIONS BUILD IMAGE: `FROM base AS extensions-build`: the expert-parallel kernel wheels (DeepEP
and NVSHMEM), Triton from source and NIXL, each only when its ARG asks for it. Every instruction runs
as the file writes it; the result keeps only the three dist/ folders its children take."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation

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
NIXL_BUILD = Deviation(
    "RUN",
    "kv_connectors.txt",
    "binds only requirements/kv_connectors.txt, the one file of requirements/ the step reads",
)


@stage("extensions-build", from_="base", parents=("base",), reads=READS, deviations=(NIXL_BUILD,))
async def extensions_build(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base AS extensions-build: the EP kernel wheels, Triton and NIXL; keep only their dist/ folders."""
    built = build.upstream("extensions-build", ctx).walk(ctx.parents["base"])
    return (
        dag.container()
        .with_directory(EP_DIST, built.directory(EP_DIST))
        .with_directory(TRITON_DIST, built.directory(TRITON_DIST))
        .with_directory(NIXL_DIST, built.directory(NIXL_DIST))
    )
