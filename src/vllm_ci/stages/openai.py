"""OpenAI server IMAGE: `FROM vllm-base AS vllm-openai-base` (its installs are done on the runtime
base here, `openai-deps`), then `FROM vllm-openai-base AS vllm-openai`."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.stages.common import with_vllm
from vllm_ci.stages.runtime import PACKAGE_INPUTS


@stage("openai-deps", from_=None, parents=("vllm-runtime-base",), args=("openai_extras", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"))
async def openai_deps(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """vllm-openai-base's installs, done on the runtime base so a new vLLM does not redo them."""
    runtime = ctx.parents["vllm-runtime-base"]
    extras = args.openai_extras.split()
    if not extras:
        return runtime
    return runtime.with_env_variable("PIP_BREAK_SYSTEM_PACKAGES", "1").with_exec(
        ["python3", "-m", "pip", "install", "--disable-pip-version-check", *args.pip_index_flags(), *extras]
    )


@stage("vllm-openai", from_="vllm-openai-base", parents=("openai-deps", "extension"), reads=PACKAGE_INPUTS,
       args=("PYTHON_VERSION",), thin_over="openai-deps")
async def openai(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-openai-base AS vllm-openai: the server image, `vllm serve` as its entrypoint."""
    deps, ext, source = ctx.parents["openai-deps"], ctx.parents["extension"], ctx.source
    return (
        with_vllm(args, deps, ext, source)
        .with_env_variable("VLLM_USAGE_SOURCE", "production-docker-image")
        .with_(reproduces('ENTRYPOINT ["vllm", "serve"]', lambda ctr: ctr.with_entrypoint(["vllm", "serve"])))
    )
