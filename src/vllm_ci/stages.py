"""vLLM's docker/Dockerfile, stage by stage: one async function each, chained as the Dockerfile chains them.

Heavy layers come first and are keyed by what they read; everything that changes with the
Python sources is added last, by file operations onto imported images (no RUN after it), so a
Python-only change moves only thin layers (see graph.py for the keys)."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import reproduces, stage
from vllm_ci.steps import (run, scratch_with, with_apt_packages, with_compiler_cache, with_env, with_files,
                           with_pip_install)

WORKSPACE = "/workspace"
RUNTIME_WORKSPACE = "/vllm-workspace"
DIST = f"{WORKSPACE}/dist"
EXTENSION_ROOT = "/extension-root"

# What csrc-build reads: the compile depends on these and on nothing else of the checkout.
CSRC_INPUTS = (
    "pyproject.toml", "setup.py", "CMakeLists.txt", "cmake/", "csrc/",
    "vllm/envs.py", "vllm/__init__.py", "requirements/build/cuda.txt",
)
# uv's settings, as every build stage upstream repeats them.
UV_BUILD_ENV = ("ENV UV_HTTP_TIMEOUT=500", 'ENV UV_INDEX_STRATEGY="unsafe-best-match"', "ENV UV_LINK_MODE=copy")
# upstream's base sets these before installing uv (UV_LINK_MODE comes after `uv venv`).
UV_BASE_ENV = (
    "ENV UV_HTTP_TIMEOUT=500", 'ENV UV_INDEX_STRATEGY="unsafe-best-match"', "ENV UV_PYTHON_INSTALL_DIR=/opt/uv/python",
    "ENV UV_CACHE_DIR=/opt/uv/cache", "ENV UV_INSTALL_DIR=/opt/uv/bin",
)
UV_RUNTIME_ENV = (
    *UV_BUILD_ENV, "ENV UV_PYTHON_INSTALL_DIR=/opt/uv/python", "ENV UV_CACHE_DIR=/opt/uv/cache", "ENV UV_COMPILE_BYTECODE=1",
)
CUDA_RUNTIME_ENV = ("ENV CUDA_HOME=/usr/local/cuda", 'ENV PATH="${CUDA_HOME}/bin:${PATH}"',
                    'ENV LD_LIBRARY_PATH="${CUDA_HOME}/lib64:${LD_LIBRARY_PATH}"')
# After vLLM's wheel is installed (PyTorch's NVSHMEM), then in front of it the driver's path;
# vllm-base and test set both.
LIBRARY_PATHS = ("ENV LD_LIBRARY_PATH=/usr/local/cuda/lib64:$LD_LIBRARY_PATH",
                 "ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64:${LD_LIBRARY_PATH}")
CUDA_COMPATIBILITY = "ENV VLLM_ENABLE_CUDA_COMPATIBILITY=0"
TEST_ENV = ("ENV HF_XET_HIGH_PERFORMANCE 1", "ENV HF_HUB_DOWNLOAD_TIMEOUT 60", "ENV VLLM_GPU_SYNC_CHECK=error")
# What the Python package layer reads.
PACKAGE_INPUTS = ("vllm/",)
BASE_INPUTS = ("requirements/common.txt", "requirements/cuda.txt")
TEST_DEPS_INPUTS = ("requirements/", "tests/vllm_test_utils/")
# The wheel build reads the whole package (upstream: COPY . .) less what is not part of it.
WHEEL_INPUTS = ("pyproject.toml", "setup.py", "CMakeLists.txt", "cmake/", "requirements/", "vllm/", "MANIFEST.in")
EVERYTHING = ("**",)  # the whole checkout
# The build's secrets, by name, as StageContext.secrets holds them.
AWS_KEY_ID = "aws_access_key_id"
AWS_SECRET = "aws_secret_access_key"
# Wheels are zips with timestamps: pin them so the same inputs give the same bytes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can hold
# Excluded from the package layer: what a wheel would not ship.
PACKAGE_EXCLUDE = ["**/__pycache__", "**/*.pyc", "**/*.so"]


@stage("base", from_="${BUILD_BASE_IMAGE}", reads=BASE_INPUTS,
       args=("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "torch_cuda_arch_list"))
async def base(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM BUILD_BASE_IMAGE AS base: a venv with the torch-level dependencies the build needs."""
    source = ctx.source
    return (
        dag.container()
        .from_(args.build_base_image)
        .with_(reproduces(UV_BASE_ENV, with_env(args, UV_BASE_ENV)))
        .with_env_variable("PATH", "/opt/venv/bin:${PATH}", expand=True)
        .with_(reproduces('ENV VIRTUAL_ENV="/opt/venv"', with_env(args, ['ENV VIRTUAL_ENV="/opt/venv"'])))
        .with_exec(["python3", "-m", "venv", "/opt/venv"])
        .with_(reproduces("ENV UV_LINK_MODE=copy", with_env(args, ["ENV UV_LINK_MODE=copy"])))
        .with_(reproduces("RUN gcc --version", run("gcc --version")))
        .with_(reproduces(CUDA_COMPATIBILITY, with_env(args, [CUDA_COMPATIBILITY])))
        .with_(reproduces("WORKDIR /workspace", lambda ctr: ctr.with_workdir(WORKSPACE)))
        .with_(reproduces(("COPY requirements/common.txt requirements/common.txt",
                           "COPY requirements/cuda.txt requirements/cuda.txt"),
                          with_files(source, BASE_INPUTS)))
        .with_(with_pip_install(args, ["requirements/cuda.txt"]))
        .with_(reproduces("ENV TORCH_CUDA_ARCH_LIST=${torch_cuda_arch_list}",
                          with_env(args, ["ENV TORCH_CUDA_ARCH_LIST=${torch_cuda_arch_list}"])))
    )


# Installs a wheel into a folder laid out as the runtime image's system Python expects (its
# site-packages, /usr/local/bin, its interpreter in the scripts' shebang), so the runtime image
# gets vLLM's extension by a file copy, with no RUN on it. A Python program: the `installer`
# library has no command line for a custom scheme. argv: wheel, destdir, site-packages, interpreter.
INSTALL_INTO_RUNTIME_LAYOUT = """
import sys
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
wheel, destdir, site, python = sys.argv[1:5]
scheme = {"purelib": site, "platlib": site, "headers": "/usr/local/include", "scripts": "/usr/local/bin",
          "data": "/usr/local"}
destination = SchemeDictionaryDestination(scheme, interpreter=python, script_kind="posix", destdir=destdir)
with WheelFile.open(wheel) as source:
    install(source, destination, additional_metadata={"INSTALLER": b"pip\\n"})
"""
INSTALLER_VERSION = "0.7.0"


@stage("csrc-build", from_="base", parents=("base",), reads=CSRC_INPUTS, args=(
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "max_jobs", "nvcc_threads", "USE_SCCACHE", "SCCACHE_ENDPOINT", "vllm_target_device",
    "SCCACHE_DOWNLOAD_URL", "SCCACHE_BUCKET_NAME", "SCCACHE_REGION_NAME", "SCCACHE_S3_NO_CREDENTIALS",
))
async def csrc_build(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM base AS csrc-build: compile the C/CUDA extension from only the files it needs; keep only dist/."""
    base_image, source = ctx.parents["base"], ctx.source
    built = (
        base_image.with_(reproduces("COPY requirements/build/cuda.txt requirements/build/cuda.txt",
                                    with_files(source, ["requirements/build/cuda.txt"])))
        .with_(reproduces(UV_BUILD_ENV, with_env(args, UV_BUILD_ENV)))
        .with_(with_pip_install(args, ["requirements/build/cuda.txt"]))
        .with_(reproduces("WORKDIR /workspace", lambda ctr: ctr.with_workdir(WORKSPACE)))
        .with_(reproduces(("COPY pyproject.toml setup.py CMakeLists.txt ./", "COPY cmake cmake/", "COPY csrc csrc/",
                           "COPY vllm/envs.py vllm/envs.py", "COPY vllm/__init__.py vllm/__init__.py"),
                          with_files(source, list(CSRC_INPUTS))))
        .with_(reproduces(("ENV MAX_JOBS=${max_jobs}", "ENV NVCC_THREADS=$nvcc_threads"),
                          with_env(args, ["ENV MAX_JOBS=${max_jobs}", "ENV NVCC_THREADS=$nvcc_threads"])))
        .with_(reproduces('ENV SETUPTOOLS_SCM_PRETEND_VERSION="0.0.0+csrc.build"',
                          with_env(args, ['ENV SETUPTOOLS_SCM_PRETEND_VERSION="0.0.0+csrc.build"'])))
        .with_(reproduces("ENV VLLM_TARGET_DEVICE=${vllm_target_device}",
                          with_env(args, ["ENV VLLM_TARGET_DEVICE=${vllm_target_device}"])))
        .with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .with_(reproduces("ENV CCACHE_DIR=/root/.cache/ccache",
                          with_compiler_cache(args, ctx.secrets.get(AWS_KEY_ID), ctx.secrets.get(AWS_SECRET))))
        .with_exec(["python3", "setup.py", "bdist_wheel", f"--dist-dir={DIST}"])
        .with_exec(["python3", "-m", "pip", "install", "--disable-pip-version-check", *args.pip_index_flags(),
                    f"installer=={INSTALLER_VERSION}"])
        .with_exec(
            # The wheel's file name is only known inside the container: one shell line.
            ["sh", "-c", 'python3 -c "$0" "$(ls $1/*.whl)" "$2" "$3" "$4"', INSTALL_INTO_RUNTIME_LAYOUT,
             DIST, EXTENSION_ROOT, args.site_packages(), f"/usr/bin/python{args.python_version}"]
        )
    )
    return scratch_with(DIST, built.directory(DIST)).with_directory(EXTENSION_ROOT, built.directory(EXTENSION_ROOT))


@stage("build", from_="base", parents=("base", "csrc-build"), reads=WHEEL_INPUTS,
       args=("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "vllm_target_device"))
async def build(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM base AS build: repackage the wheel from csrc-build's compiled extension plus the Python sources."""
    base_image, csrc, source = ctx.parents["base"], ctx.parents["csrc-build"], ctx.source
    built = (
        base_image.with_(reproduces("COPY requirements/build/cuda.txt requirements/build/cuda.txt",
                                    with_files(source, ["requirements/build/cuda.txt"])))
        .with_(reproduces(UV_BUILD_ENV, with_env(args, UV_BUILD_ENV)))
        .with_(with_pip_install(args, ["requirements/build/cuda.txt"]))
        .with_(reproduces("WORKDIR /workspace", lambda ctr: ctr.with_workdir(WORKSPACE)))
        .with_(reproduces("COPY --from=csrc-build /workspace/dist /precompiled-wheels",
                          lambda ctr: ctr.with_directory("/precompiled-wheels", csrc.directory(DIST))))
        .with_directory(WORKSPACE, source)
        .with_(reproduces("ENV VLLM_TARGET_DEVICE=${vllm_target_device}",
                          with_env(args, ["ENV VLLM_TARGET_DEVICE=${vllm_target_device}"])))
        .with_(reproduces("ENV VLLM_SKIP_PRECOMPILED_VERSION_SUFFIX=1",
                          with_env(args, ["ENV VLLM_SKIP_PRECOMPILED_VERSION_SUFFIX=1"])))
        .with_env_variable("VLLM_USE_PRECOMPILED", "1")
        .with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .with_exec(
            # The wheel's file name is only known inside the container: one shell line, as the Dockerfile's RUN.
            ["sh", "-c", "VLLM_PRECOMPILED_WHEEL_LOCATION=$(ls /precompiled-wheels/*.whl) "
             f"python3 setup.py bdist_wheel --dist-dir={DIST}"]
        )
    )
    return scratch_with(DIST, built.directory(DIST))


@stage("vllm-runtime-base", from_="${FINAL_BASE_IMAGE}", reads=BASE_INPUTS,
       args=("PYTHON_VERSION", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"))
async def runtime_base(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM FINAL_BASE_IMAGE AS vllm-runtime-base: Python and every runtime dependency, no vLLM."""
    source = ctx.source
    return (
        dag.container()
        .from_(args.final_base())
        .with_(reproduces("ENV DEBIAN_FRONTEND=noninteractive", with_env(args, ["ENV DEBIAN_FRONTEND=noninteractive"])))
        .with_(reproduces("WORKDIR /vllm-workspace", lambda ctr: ctr.with_workdir(RUNTIME_WORKSPACE)))
        .with_(with_apt_packages([f"python{args.python_version}", "python3-pip", "ca-certificates"]))
        .with_(reproduces(CUDA_RUNTIME_ENV, with_env(args, CUDA_RUNTIME_ENV)))
        .with_(reproduces("ENV CRIU_CUDA_PLUGIN_DIR=/usr/local/lib/criu",
                          with_env(args, ["ENV CRIU_CUDA_PLUGIN_DIR=/usr/local/lib/criu"])))
        .with_(reproduces(UV_RUNTIME_ENV, with_env(args, UV_RUNTIME_ENV)))
        .with_(reproduces(CUDA_COMPATIBILITY, with_env(args, [CUDA_COMPATIBILITY])))
        .with_(with_files(source, BASE_INPUTS, "/tmp"))
        .with_(with_pip_install(args, ["/tmp/requirements/cuda.txt"], system=True))
    )


@stage("test-deps", from_="vllm-runtime-base", parents=("vllm-runtime-base",), reads=TEST_DEPS_INPUTS,
       args=("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"))
async def test_deps(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-runtime-base AS test-deps: the test requirements and the test utilities package."""
    runtime, source = ctx.parents["vllm-runtime-base"], ctx.source
    return (
        runtime.with_(reproduces(UV_BUILD_ENV, with_env(args, UV_BUILD_ENV)))
        .with_(with_files(source, TEST_DEPS_INPUTS, "/tmp"))
        .with_(with_pip_install(args, ["/tmp/requirements/test/cuda.txt"], system=True))
        .with_exec(["python3", "-m", "pip", "install", "--no-deps", "/tmp/tests/vllm_test_utils"])
        .with_exec(["rm", "-rf", "/tmp/requirements", "/tmp/tests"])
    )


@stage("extension", from_=None, parents=("csrc-build",))
async def extension(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """The compiled extension, its metadata and console scripts as installed, alone in one layer (no RUN)."""
    return scratch_with("/", ctx.parents["csrc-build"].directory(EXTENSION_ROOT))


def with_vllm(args: BuildArgs, image: dagger.Container, ext: dagger.Container, source: dagger.Directory) -> dagger.Container:
    """Add vLLM to an image by file operations only: extension layer, then the Python package files."""
    return image.with_directory("/", ext.rootfs()).with_directory(
        f"{args.site_packages()}/vllm", source.directory("vllm"), exclude=PACKAGE_EXCLUDE
    )


@stage("vllm-base", from_="vllm-runtime-base", parents=("vllm-runtime-base", "extension"), reads=PACKAGE_INPUTS,
       args=("PYTHON_VERSION",), thin_over="vllm-runtime-base")
async def vllm_base(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM vllm-runtime-base AS vllm-base: the runtime image with vLLM installed."""
    runtime, ext, source = ctx.parents["vllm-runtime-base"], ctx.parents["extension"], ctx.source
    return (
        with_vllm(args, runtime, ext, source)
        .with_(reproduces(LIBRARY_PATHS, with_env(args, LIBRARY_PATHS)))
    )


@stage("test", from_="test-deps", parents=("test-deps", "extension"), reads=EVERYTHING, args=("PYTHON_VERSION",),
       thin_over="test-deps")
async def test(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM test-deps AS test: vLLM installed, then the source tree as the last, thin layer."""
    deps, ext, source = ctx.parents["test-deps"], ctx.parents["extension"], ctx.source
    return (
        with_vllm(args, deps, ext, source)
        .with_(reproduces(LIBRARY_PATHS, with_env(args, LIBRARY_PATHS)))
        .with_directory(RUNTIME_WORKSPACE, source)
        .with_workdir(RUNTIME_WORKSPACE)
        .with_(reproduces(TEST_ENV, with_env(args, TEST_ENV)))
    )


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
