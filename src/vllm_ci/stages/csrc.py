"""CSRC BUILD IMAGE: `FROM base AS csrc-build`, then `FROM scratch AS kernel-symbol-map`.

csrc-build compiles the C/CUDA extension from only the files it copies in; every instruction runs
as the file writes it. Its result keeps only dist/ (the wheel and, on nightly, the kernel symbol
map): that is all its children take from it. `extension` is this project's: the wheel unpacked
as the runtime image's system Python lays it out, so images get vLLM's extension by a file copy."""

from __future__ import annotations

import json

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation
from vllm_ci.fastpath import program
from vllm_ci.stages.common import DIST, EXTENSION_ROOT, PRETEND_VERSION, RECORD_LABEL, SOURCE_DATE_EPOCH
from vllm_ci.stages.extensions import EP_DIST
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


# Installs wheels into the runtime image's layout as upstream's uv install writes them (the program
# says what it writes); bench/equivalence.py compares the result with upstream's uv install.
INSTALL_INTO_RUNTIME_LAYOUT = program("install_into_runtime_layout.py")
INSTALLER_VERSION = "0.7.0"
# An installed dist-info folder's texts and a _version.py, as JSON.
DIST_INFO_TEXTS = program("dist_info_texts.py")
# Where upstream's RUNs bind the wheels they install (`dist/*.whl`, `ep_kernels/dist/*.whl` under
# WORKDIR /vllm-workspace): what direct_url.json names.
VLLM_WHEEL_SEEN_AT = "/vllm-workspace/dist"
EP_WHEELS_SEEN_AT = "/vllm-workspace/ep_kernels/dist"


@stage(
    "extension",
    from_=None,
    parents=("base", "csrc-build", "extensions-build"),
    also_reads=("PYTHON_VERSION", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"),
)
async def extension(build: Build, ctx: StageContext) -> dagger.Container:
    """The compiled extension and the EP kernel wheels, with metadata and console scripts, as installed,
    alone in one layer (no RUN); vLLM's dist-info in its config instead (written under build's version)."""
    unpacked = (
        ctx.parents["base"]
        .with_directory(DIST, ctx.parents["csrc-build"].directory(DIST))
        .with_directory(EP_DIST, ctx.parents["extensions-build"].directory(EP_DIST))
        .with_exec(
            [
                "python3",
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                *build.pip_index_flags(),
                f"installer=={INSTALLER_VERSION}",
            ]
        )
        .with_exec(
            [
                "python3",
                "-c",
                INSTALL_INTO_RUNTIME_LAYOUT,
                EXTENSION_ROOT,
                build.site_packages(),
                DIST,
                VLLM_WHEEL_SEEN_AT,
                "0",
                EP_DIST,
                EP_WHEELS_SEEN_AT,
                "1",
            ]
        )
    )
    # csrc-build's wheel's dist-info (its texts and RECORD rows) and _version.py, in the image config and
    # not in the layer: the fast path writes them under build's version (csrc-build's is the pretend one)
    # without pulling this layer (common.vllm_installed).
    wheel = (await ctx.parents["csrc-build"].directory(DIST).glob("*.whl"))[0]
    dist_info = "-".join(wheel.split("-")[:2]) + ".dist-info"  # a wheel's name starts with its dist-info's
    installed = f"{EXTENSION_ROOT}{build.site_packages()}"
    texts = json.loads(
        await unpacked.with_exec(
            ["python3", "-c", DIST_INFO_TEXTS, f"{installed}/{dist_info}", f"{installed}/vllm/_version.py"]
        ).stdout()
    )
    label = {"dist_info": dist_info, "pretend_version": build.env_value("csrc-build", PRETEND_VERSION), **texts}
    layer = dag.directory().with_directory(
        ".", unpacked.directory(EXTENSION_ROOT), exclude=[f"{build.site_packages().lstrip('/')}/{dist_info}"]
    )
    return scratch_with("/", layer).with_label(RECORD_LABEL, json.dumps(label))
