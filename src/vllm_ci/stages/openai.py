"""OpenAI API SERVER IMAGE: `FROM vllm-base AS vllm-openai-base`, then `vllm-sagemaker`, `vllm-openai`
and `vllm-openai-nonroot` on top of it.

vllm-openai-base's RUNs (KV connectors, Rubin, Triton and NIXL from extensions-build) run as written,
but on vllm-runtime-base in `openai-deps`, before vLLM is added: a new vLLM then never redoes them,
and the images above get vLLM, the ENV and LABELs, and their entrypoints as thin layers with no RUN."""

from __future__ import annotations

import dagger

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation, skipped
from vllm_ci.stages.runtime import EXTRAS_READS, PACKAGE_INPUTS, vllm_base_handlers

BEFORE_VLLM = (
    "run as written on vllm-runtime-base in openai-deps, before vLLM is added, so a new vLLM never redoes them"
)
# vllm-openai-base's first instruction after its dependencies: everything above it is openai-deps'.
AFTER_DEPS = Deviation("ENV", "VLLM_USAGE_SOURCE", BEFORE_VLLM, above=True)
BY_FILE_MODE = "the script is added with mode 0755 in one file layer instead of a chmod RUN that would pull the image"
SAGEMAKER_SCRIPT = "examples/deployment/sagemaker-entrypoint.sh"
COPY_SCRIPT = Deviation("COPY", "sagemaker-entrypoint.sh", BY_FILE_MODE)
CHMOD_SCRIPT = Deviation("RUN", "chmod +x", BY_FILE_MODE)


@stage(
    "vllm-openai-base",
    from_="vllm-base",
    parents=("openai-deps", "extension", "package", "rust-installed", "runtime-python"),
    reads=(*PACKAGE_INPUTS, *EXTRAS_READS),
    deviations=(AFTER_DEPS,),
    also_reads=("PYTHON_VERSION", "git_version"),
    not_read=("openai-deps", "extension", "package", "rust-installed"),
    runs_from=(("vllm-base", None),),
)
async def openai_base(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM vllm-base AS vllm-openai-base: the server's dependencies, vLLM, and the build's ENV and LABELs."""
    # What vllm-base adds onto the runtime (vLLM by file layers, its ENV and COPYs), added onto openai-deps.
    with_vllm = build.upstream("vllm-base", ctx, register=False).walk(
        ctx.parents["openai-deps"], await vllm_base_handlers(build, ctx)
    )
    return build.upstream("vllm-openai-base", ctx).walk(with_vllm, {AFTER_DEPS: skipped})


@stage(
    "vllm-sagemaker",
    from_="vllm-openai-base",
    parents=("vllm-openai-base",),
    reads=(SAGEMAKER_SCRIPT,),
    deviations=(COPY_SCRIPT, CHMOD_SCRIPT),
    not_read=("vllm-openai-base",),
)
async def sagemaker(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM vllm-openai-base AS vllm-sagemaker: the server behind SageMaker's entrypoint script."""
    script = ctx.source.file(SAGEMAKER_SCRIPT)
    handlers = {
        COPY_SCRIPT: lambda ctr, _: ctr.with_file("sagemaker-entrypoint.sh", script, permissions=0o755),
        CHMOD_SCRIPT: skipped,
    }
    return build.upstream("vllm-sagemaker", ctx).walk(ctx.parents["vllm-openai-base"], handlers)


@stage("vllm-openai", from_="vllm-openai-base", parents=("vllm-openai-base",), not_read=("vllm-openai-base",))
async def openai(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM vllm-openai-base AS vllm-openai: the server image, `vllm serve` as its entrypoint."""
    return build.upstream("vllm-openai", ctx).walk(ctx.parents["vllm-openai-base"])


@stage("vllm-openai-nonroot", from_="vllm-openai", parents=("vllm-openai",), not_read=("vllm-openai",))
async def openai_nonroot(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM vllm-openai AS vllm-openai-nonroot: the server image run as the `vllm` user (opt-in)."""
    return build.upstream("vllm-openai-nonroot", ctx).walk(ctx.parents["vllm-openai"])
