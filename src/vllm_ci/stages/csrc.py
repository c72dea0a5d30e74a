"""CSRC BUILD IMAGE: `FROM base AS csrc-build`, then `FROM scratch AS kernel-symbol-map`.

csrc-build compiles the C/CUDA extension from only the files it copies in; every instruction runs
as upstream writes it. Its result keeps only dist/ (the wheel and, on nightly, the kernel symbol
map): that is all its children take from it. `extension` is this project's: the wheel unpacked
as the runtime image's system Python lays it out, so images get vLLM's extension by a file copy."""

from __future__ import annotations

import json

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import deviates, reproduces, stage
from vllm_ci.fastpath import program
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import DIST, EXTENSION_ROOT, RECORD_LABEL, SOURCE_DATE_EPOCH, UV_BUILD_ENV, WORKDIR
from vllm_ci.stages.extensions import EP_DIST
from vllm_ci.steps import scratch_with, unquote

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

COPY_BUILD_REQUIREMENTS = (
    "COPY requirements/build/cuda.txt requirements/build/cuda.txt",
    "COPY tools/use_existing_torch.py tools/use_existing_torch.py",
    "COPY --from=base /workspace/torch_lib_versions.txt torch_lib_versions.txt",
)
INSTALL_BUILD_REQUIREMENTS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    if [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
        echo "Installing build requirements with Rubin prerelease PyTorch..." \\
        && python3 tools/use_existing_torch.py --prefix \\
        && uv pip install --python /opt/venv/bin/python3 -r requirements/build/cuda.txt; \\
    elif [ "${PYTORCH_NIGHTLY}" = "1" ]; then \\
        echo "Installing build requirements without torch..." \\
        && python3 tools/use_existing_torch.py --prefix \\
        && uv pip install --python /opt/venv/bin/python3 -r requirements/build/cuda.txt \\
        && echo "Installing torch nightly..." \\
        && uv pip install --python /opt/venv/bin/python3 $(cat torch_lib_versions.txt | grep -i "^torch=" | xargs) --pre \\
        --index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    else \\
        echo "Installing build requirements..." \\
        && uv pip install --python /opt/venv/bin/python3 -r requirements/build/cuda.txt \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    fi
"""
COPY_CSRC_INPUTS = (
    "COPY pyproject.toml setup.py CMakeLists.txt ./",
    "COPY tools/build_rust.py tools/build_rust.py",
    "COPY cmake cmake/",
    "COPY csrc csrc/",
    "COPY vllm/envs.py vllm/envs.py",
    "COPY vllm/__init__.py vllm/__init__.py",
)
MAX_JOBS = "ENV MAX_JOBS=${max_jobs}"
NVCC_THREADS = "ENV NVCC_THREADS=$nvcc_threads"
PRETEND_VERSION = 'ENV SETUPTOOLS_SCM_PRETEND_VERSION="0.0.0+csrc.build"'
CSRC_VERSION = unquote(PRETEND_VERSION.partition("=")[2])  # what setuptools-scm gives csrc-build's setup.py
USE_EXISTING_TORCH = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    if [ "${PYTORCH_NIGHTLY}" = "1" ] || \\
        [ "${INSTALL_RUBIN_PRERELEASE}" = "true" ]; then \\
        python3 tools/use_existing_torch.py --prefix; \\
    fi
"""
COPY_DEEPGEMM_TOOLS = "COPY tools/setup_deepgemm_pythons.sh tools/build_deepgemm_C.py tools/"
DEEPGEMM_PREFIX = "ENV DEEPGEMM_VENV_PREFIX=/opt/dgenv"
SETUP_DEEPGEMM_PYTHONS = """\
RUN --mount=type=cache,target=/root/.cache/uv \\
    tools/setup_deepgemm_pythons.sh > /tmp/dg_pythons.txt
"""
FIXED_EPOCH = (
    "runs as written with SOURCE_DATE_EPOCH=315532800 set (upstream sets none), so the wheel's zip "
    "timestamps, and with them its bytes, depend on its inputs only"
)
COMPILE_WITH_SCCACHE = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    --mount=type=secret,id=aws-credentials,target=/root/.aws/credentials,required=false \\
    if [ "$USE_SCCACHE" = "1" ]; then \\
        if [ -n "${SCCACHE_ENDPOINT}" ]; then export SCCACHE_ENDPOINT="${SCCACHE_ENDPOINT}"; fi \\
        && export CMAKE_BUILD_TYPE=Release \\
        && export VLLM_USE_PRECOMPILED="${VLLM_USE_PRECOMPILED}" \\
        && export VLLM_PRECOMPILED_WHEEL_COMMIT="${VLLM_MERGE_BASE_COMMIT}" \\
        && export VLLM_MAIN_CUDA_VERSION="${VLLM_MAIN_CUDA_VERSION}" \\
        && export VLLM_DOCKER_BUILD_CONTEXT=1 \\
        && export DEEPGEMM_PYTHON_INTERPRETERS=$(cat /tmp/dg_pythons.txt) \\
        && sccache --show-stats \\
        && python3 setup.py bdist_wheel --dist-dir=dist --py-limited-api=cp38 \\
        && sccache --show-stats; \\
    fi
"""
TARGET_DEVICE = "ENV VLLM_TARGET_DEVICE=${vllm_target_device}"
CCACHE_DIR = "ENV CCACHE_DIR=/root/.cache/ccache"
COMPILE = """\
RUN --mount=type=cache,target=/root/.cache/ccache \\
    --mount=type=cache,target=/opt/uv/cache \\
    if [ "$USE_SCCACHE" != "1" ]; then \\
        rm -rf .deps && \\
        mkdir -p .deps && \\
        export VLLM_USE_PRECOMPILED="${VLLM_USE_PRECOMPILED}" && \\
        export VLLM_PRECOMPILED_WHEEL_COMMIT="${VLLM_MERGE_BASE_COMMIT}" && \\
        export VLLM_DOCKER_BUILD_CONTEXT=1 && \\
        export DEEPGEMM_PYTHON_INTERPRETERS=$(cat /tmp/dg_pythons.txt) && \\
        python3 setup.py bdist_wheel --dist-dir=dist --py-limited-api=cp38; \\
    fi
"""
COPY_SYMBOL_MAP_TOOL = "COPY tools/ci/kernel_symbol_map.py tools/ci/kernel_symbol_map.py"
KERNEL_SYMBOL_MAP = """\
RUN if [ "${VLLM_KERNEL_SYMBOL_MAP}" = "1" ]; then \\
        mkdir -p dist && python3 tools/ci/kernel_symbol_map.py \\
            --build-root build --source-root . --commit "${buildkite_commit}" \\
            --out dist/kernel_symbol_map.json.gz; \\
    else echo "Skipping kernel symbol map (VLLM_KERNEL_SYMBOL_MAP != 1)"; fi
"""
SYMBOL_MAP = "COPY --from=csrc-build /workspace/dist/kernel_symbol_map.json.gz /kernel_symbol_map.json.gz"


@stage(
    "csrc-build",
    from_="base",
    parents=("base",),
    reads=READS,
    args=(
        "INSTALL_RUBIN_PRERELEASE",
        "PIP_INDEX_URL",
        "UV_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "PYTORCH_CUDA_INDEX_BASE_URL",
        "PYTORCH_NIGHTLY",
        "max_jobs=2",
        "nvcc_threads=8",
        "USE_SCCACHE",
        "SCCACHE_ENDPOINT",
        "VLLM_USE_PRECOMPILED=",
        "VLLM_MERGE_BASE_COMMIT=",
        "VLLM_MAIN_CUDA_VERSION=",
        "vllm_target_device=cuda",
        "VLLM_KERNEL_SYMBOL_MAP=",
        "buildkite_commit=",
    ),
)
async def csrc_build(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM base AS csrc-build: compile the C/CUDA extension from only the files it needs; keep only dist/."""
    upstream = as_written("csrc-build", args, ctx)
    built = (
        ctx.parents["base"]
        .with_(reproduces(COPY_BUILD_REQUIREMENTS, upstream))
        .with_(reproduces(UV_BUILD_ENV, upstream))
        .with_(reproduces(INSTALL_BUILD_REQUIREMENTS, upstream))
        .with_(reproduces(WORKDIR, upstream))
        .with_(reproduces(COPY_CSRC_INPUTS, upstream))
        .with_(reproduces(MAX_JOBS, upstream))
        .with_(reproduces(NVCC_THREADS, upstream))
        .with_(reproduces(PRETEND_VERSION, upstream))
        .with_(reproduces(USE_EXISTING_TORCH, upstream))
        .with_(reproduces(COPY_DEEPGEMM_TOOLS, upstream))
        .with_(reproduces(DEEPGEMM_PREFIX, upstream))
        .with_(reproduces(SETUP_DEEPGEMM_PYTHONS, upstream))
        # Wheels are zips with timestamps: the same inputs give the same bytes (FIXED_EPOCH; no layer).
        .with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .with_(deviates(COMPILE_WITH_SCCACHE, FIXED_EPOCH, upstream))
        .with_(reproduces(TARGET_DEVICE, upstream))
        .with_(reproduces(CCACHE_DIR, upstream))
        .with_(deviates(COMPILE, FIXED_EPOCH, upstream))
        .with_(reproduces(COPY_SYMBOL_MAP_TOOL, upstream))
        .with_(reproduces(KERNEL_SYMBOL_MAP, upstream))
    )
    return scratch_with(DIST, built.directory(DIST))


@stage("kernel-symbol-map", from_="scratch", parents=("csrc-build",))
async def kernel_symbol_map(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM scratch AS kernel-symbol-map: the nightly's kernel symbol map alone (VLLM_KERNEL_SYMBOL_MAP=1)."""
    return dag.container().with_(reproduces(SYMBOL_MAP, as_written("kernel-symbol-map", args, ctx)))


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
    args=("PYTHON_VERSION", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"),
)
async def extension(args: BuildArgs, ctx: StageContext) -> dagger.Container:
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
                *args.pip_index_flags(),
                f"installer=={INSTALLER_VERSION}",
            ]
        )
        .with_exec(
            [
                "python3",
                "-c",
                INSTALL_INTO_RUNTIME_LAYOUT,
                EXTENSION_ROOT,
                args.site_packages(),
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
    installed = f"{EXTENSION_ROOT}{args.site_packages()}"
    texts = json.loads(
        await unpacked.with_exec(
            ["python3", "-c", DIST_INFO_TEXTS, f"{installed}/{dist_info}", f"{installed}/vllm/_version.py"]
        ).stdout()
    )
    label = {"dist_info": dist_info, "pretend_version": CSRC_VERSION, **texts}
    layer = dag.directory().with_directory(
        ".", unpacked.directory(EXTENSION_ROOT), exclude=[f"{args.site_packages().lstrip('/')}/{dist_info}"]
    )
    return scratch_with("/", layer).with_label(RECORD_LABEL, json.dumps(label))
