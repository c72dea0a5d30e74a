"""EXTENSIONS BUILD IMAGE: `FROM base AS extensions-build`: the expert-parallel kernel wheels (DeepEP
and NVSHMEM) and Triton from source, each only when its ARG asks for it. Every instruction runs as the
file writes it; the result keeps only what its children take (the paths the file copies or binds from
it, and the EP wheels this project's extension stage adds)."""

from __future__ import annotations

import dagger

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.stages.common import keeping

# What this project's own extension stage takes from this one (the file's children take what they name).
EP_DIST = "/tmp/ep_kernels_workspace/dist"
READS = (
    "tools/ep_kernels/install_python_libraries.sh",
    "tools/build_triton_from_source.sh",
)


@stage("extensions-build", from_="base", parents=("base",), reads=READS)
async def extensions_build(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base AS extensions-build: the EP kernel wheels and Triton; keep only what its children take."""
    built = build.upstream("extensions-build", ctx).walk(ctx.parents["base"])
    return keeping([*build.taken_from("extensions-build"), EP_DIST], built)
