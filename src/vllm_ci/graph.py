"""vLLM's stages as data for the stage cache: parents, the source files each reads, the arguments
that change its result. One declaration feeds both the source filter and the key."""

from __future__ import annotations

import dagger

from stagecache import Stage, StageContext
from vllm_ci import stages
from vllm_ci.args import BuildArgs

RECIPE = 3  # bump when a stage function changes what it produces (3: upstream ENV, WORKDIR and COPY steps)

# Include patterns over the source, per stage (a trailing "/" in stages.CSRC_INPUTS is a folder).
BASE_INPUTS = ("requirements/common.txt", "requirements/cuda.txt")
CSRC_INPUTS = tuple(p + "**" if p.endswith("/") else p for p in stages.CSRC_INPUTS)
TEST_DEPS_INPUTS = ("requirements/**", "tests/vllm_test_utils/**")
PACKAGE_INPUTS = ("vllm/**",)
WHEEL_INPUTS = ("pyproject.toml", "setup.py", "CMakeLists.txt", "cmake/**", "requirements/**", "vllm/**", "MANIFEST.in")
EVERYTHING = ("**",)

TARGETS = ("base", "csrc-build", "build", "vllm-runtime-base", "test-deps", "extension", "vllm-base", "test",
           "openai-deps", "vllm-openai")


def stage_graph(
    args: BuildArgs,
    aws_access_key_id: dagger.Secret | None = None,
    aws_secret_access_key: dagger.Secret | None = None,
) -> list[Stage]:
    """Every stage of the build, wired to its stage function."""
    python = {"python_version": args.python_version}
    pip = {"pip_index_url": args.pip_index_url, "pip_extra_index_url": args.pip_extra_index_url}
    compile_args = {
        "max_jobs": str(args.max_jobs),  # changes the parallelism, not the output, but vLLM keys on it too
        "nvcc_threads": str(args.nvcc_threads),
        "torch_cuda_arch_list": args.torch_cuda_arch_list,
        "vllm_target_device": args.vllm_target_device,
        "cuda_version": args.cuda_version,
    }
    # Left out on purpose: use_sccache and the SCCACHE_* settings change where compiler outputs
    # are cached, not what is compiled.

    async def base(ctx: StageContext) -> dagger.Container:
        return await stages.base(args, ctx.source)

    async def csrc_build(ctx: StageContext) -> dagger.Container:
        return await stages.csrc_build(args, ctx.parents["base"], ctx.source, aws_access_key_id, aws_secret_access_key)

    async def build(ctx: StageContext) -> dagger.Container:
        return await stages.build(args, ctx.parents["base"], ctx.parents["csrc-build"], ctx.source)

    async def runtime(ctx: StageContext) -> dagger.Container:
        return await stages.runtime_base(args, ctx.source)

    async def test_deps(ctx: StageContext) -> dagger.Container:
        return await stages.test_deps(args, ctx.parents["vllm-runtime-base"], ctx.source)

    async def extension(ctx: StageContext) -> dagger.Container:
        return await stages.extension(args, ctx.parents["csrc-build"])

    async def vllm_base(ctx: StageContext) -> dagger.Container:
        return await stages.vllm_base(args, ctx.parents["vllm-runtime-base"], ctx.parents["extension"], ctx.source)

    async def test(ctx: StageContext) -> dagger.Container:
        return await stages.test(args, ctx.parents["test-deps"], ctx.parents["extension"], ctx.source)

    async def openai_deps(ctx: StageContext) -> dagger.Container:
        return await stages.openai_deps(args, ctx.parents["vllm-runtime-base"])

    async def openai(ctx: StageContext) -> dagger.Container:
        return await stages.openai(args, ctx.parents["openai-deps"], ctx.parents["extension"], ctx.source)

    return [
        Stage("base", base, (), BASE_INPUTS, {"build_base_image": args.build_base_image,
                                              "torch_cuda_arch_list": args.torch_cuda_arch_list, **pip}, RECIPE),
        Stage("csrc-build", csrc_build, ("base",), CSRC_INPUTS, {**compile_args, **python, **pip}, RECIPE),
        Stage("build", build, ("base", "csrc-build"), WHEEL_INPUTS, {"vllm_target_device": args.vllm_target_device, **pip}, RECIPE),
        Stage("vllm-runtime-base", runtime, (), BASE_INPUTS, {"final_base_image": args.final_base(), **python, **pip}, RECIPE),
        Stage("test-deps", test_deps, ("vllm-runtime-base",), TEST_DEPS_INPUTS, pip, RECIPE),
        Stage("extension", extension, ("csrc-build",), (), {}, RECIPE),
        Stage("vllm-base", vllm_base, ("vllm-runtime-base", "extension"), PACKAGE_INPUTS, python, RECIPE),
        Stage("test", test, ("test-deps", "extension"), EVERYTHING, python, RECIPE),
        Stage("openai-deps", openai_deps, ("vllm-runtime-base",), (), {"openai_extras": args.openai_extras, **pip}, RECIPE),
        Stage("vllm-openai", openai, ("openai-deps", "extension"), PACKAGE_INPUTS, python, RECIPE),
    ]
