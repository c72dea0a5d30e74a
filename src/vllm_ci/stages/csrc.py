"""CSRC BUILD IMAGE: `FROM base AS csrc-build`, then `FROM scratch AS kernel-symbol-map`.

csrc-build compiles the C/CUDA extension from only the files it copies in; every instruction runs
as the file writes it. Its result keeps only dist/ (the wheel and, on nightly, the kernel symbol
map): that is all its children take from it. `extension` is this project's: the wheel unpacked
as the runtime image's system Python lays it out, so images get vLLM's extension by a file copy."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation
from vllm_ci.stages.common import DIST, SOURCE_DATE_EPOCH
from vllm_ci.steps import Step, scratch_with

READS = (
    "requirements/build/cuda.txt",
    "tools/use_existing_torch.py",
    "pyproject.toml",
    "setup.py",
    "CMakeLists.txt",
    "tools/build_rust.py",
    "cmake/",
    "csrc/",
    "vllm/envs.py",
    "vllm/__init__.py",
    "tools/setup_deepgemm_pythons.sh",
    "tools/build_deepgemm_C.py",
    "tools/ci/kernel_symbol_map.py",
)

FIXED_EPOCH = (
    "runs as written with SOURCE_DATE_EPOCH=315532800 set (upstream sets none), so the wheel's zip "
    "timestamps, and with them its bytes, depend on its inputs only"
)
COMPILE_WITH_SCCACHE = Deviation("RUN", "id=aws-credentials", FIXED_EPOCH)
COMPILE = Deviation("RUN", "target=/root/.cache/ccache", FIXED_EPOCH)


def with_fixed_epoch(ctr: dagger.Container, step: Step) -> dagger.Container:
    """The compile as written, with wheels' zip timestamps pinned (the variable stays for the RUNs after it)."""
    return step(ctr.with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH))


@stage(
    "csrc-build",
    from_="base",
    parents=("base",),
    reads=READS,
    deviations=(COMPILE_WITH_SCCACHE, COMPILE),
)
async def csrc_build(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM base AS csrc-build: compile the C/CUDA extension from only the files it needs; keep only dist/."""
    built = build.upstream("csrc-build", ctx).walk(ctx.parents["base"], {COMPILE_WITH_SCCACHE: with_fixed_epoch})
    return scratch_with(DIST, built.directory(DIST))


@stage("kernel-symbol-map", from_="scratch", parents=("csrc-build",))
async def kernel_symbol_map(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM scratch AS kernel-symbol-map: the nightly's kernel symbol map alone (VLLM_KERNEL_SYMBOL_MAP=1)."""
    return build.upstream("kernel-symbol-map", ctx).walk(dag.container())
