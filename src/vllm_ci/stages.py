"""vLLM's docker/Dockerfile, stage by stage: one async function each, chained as the Dockerfile chains them.

Heavy layers come first and are keyed by what they read; everything that changes with the
Python sources is added last, by file operations onto imported images (no RUN after it), so a
Python-only change moves only thin layers (see graph.py for the keys)."""

from __future__ import annotations

import dagger
from dagger import dag

from vllm_ci.args import BuildArgs
from vllm_ci.steps import scratch_with, with_apt_packages, with_compiler_cache, with_files, with_pip_install

WORKSPACE = "/workspace"
RUNTIME_WORKSPACE = "/vllm-workspace"
DIST = f"{WORKSPACE}/dist"
EXTENSION_ROOT = "/extension-root"

# What csrc-build reads: the compile depends on these and on nothing else of the checkout.
CSRC_INPUTS = (
    "pyproject.toml", "setup.py", "CMakeLists.txt", "cmake/", "csrc/",
    "vllm/envs.py", "vllm/__init__.py", "requirements/build/",
)
# What the Python package layer reads.
PACKAGE_INPUTS = ("vllm/",)
# Wheels are zips with timestamps: pin them so the same inputs give the same bytes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can hold
# Excluded from the package layer: what a wheel would not ship.
PACKAGE_EXCLUDE = ["**/__pycache__", "**/*.pyc", "**/*.so"]


async def base(args: BuildArgs, source: dagger.Directory) -> dagger.Container:
    """FROM BUILD_BASE_IMAGE AS base: a venv with the torch-level dependencies the build needs."""
    return (
        dag.container()
        .from_(args.build_base_image)
        .with_workdir(WORKSPACE)
        .with_exec(["python3", "-m", "venv", "/opt/venv"])
        .with_env_variable("VIRTUAL_ENV", "/opt/venv")
        .with_env_variable("PATH", "/opt/venv/bin:${PATH}", expand=True)
        .with_env_variable("TORCH_CUDA_ARCH_LIST", args.torch_cuda_arch_list)
        .with_(with_files(source, ["requirements/common.txt", "requirements/cuda.txt"]))
        .with_(with_pip_install(args, ["requirements/cuda.txt"]))
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


async def csrc_build(
    args: BuildArgs,
    base_image: dagger.Container,
    source: dagger.Directory,
    aws_access_key_id: dagger.Secret | None = None,
    aws_secret_access_key: dagger.Secret | None = None,
) -> dagger.Container:
    """FROM base AS csrc-build: compile the C/CUDA extension from only the files it needs; keep only dist/."""
    built = (
        base_image.with_(with_files(source, ["requirements/build/"]))
        .with_(with_pip_install(args, ["requirements/build/cuda.txt"]))
        .with_(with_files(source, list(CSRC_INPUTS)))
        .with_env_variable("MAX_JOBS", str(args.max_jobs))
        .with_env_variable("NVCC_THREADS", str(args.nvcc_threads))
        .with_env_variable("VLLM_TARGET_DEVICE", args.vllm_target_device)
        .with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .with_(with_compiler_cache(args, aws_access_key_id, aws_secret_access_key))
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


async def build(args: BuildArgs, base_image: dagger.Container, csrc: dagger.Container, source: dagger.Directory) -> dagger.Container:
    """FROM base AS build: repackage the wheel from csrc-build's compiled extension plus the Python sources."""
    built = (
        base_image.with_(with_files(source, ["requirements/build/"]))
        .with_(with_pip_install(args, ["requirements/build/cuda.txt"]))
        .with_directory("/precompiled-wheels", csrc.directory(DIST))
        .with_directory(WORKSPACE, source)
        .with_env_variable("VLLM_TARGET_DEVICE", args.vllm_target_device)
        .with_env_variable("VLLM_USE_PRECOMPILED", "1")
        .with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .with_exec(
            # The wheel's file name is only known inside the container: one shell line, as the Dockerfile's RUN.
            ["sh", "-c", "VLLM_PRECOMPILED_WHEEL_LOCATION=$(ls /precompiled-wheels/*.whl) "
             f"python3 setup.py bdist_wheel --dist-dir={DIST}"]
        )
    )
    return scratch_with(DIST, built.directory(DIST))


async def runtime_base(args: BuildArgs, source: dagger.Directory) -> dagger.Container:
    """FROM FINAL_BASE_IMAGE AS vllm-runtime-base: Python and every runtime dependency, no vLLM."""
    return (
        dag.container()
        .from_(args.final_base())
        .with_workdir(RUNTIME_WORKSPACE)
        .with_(with_apt_packages([f"python{args.python_version}", "python3-pip", "ca-certificates"]))
        .with_(with_files(source, ["requirements/common.txt", "requirements/cuda.txt"], "/tmp"))
        .with_(with_pip_install(args, ["/tmp/requirements/cuda.txt"], system=True))
    )


async def test_deps(args: BuildArgs, runtime: dagger.Container, source: dagger.Directory) -> dagger.Container:
    """FROM vllm-runtime-base AS test-deps: the test requirements and the test utilities package."""
    return (
        runtime.with_(with_files(source, ["requirements/", "tests/vllm_test_utils/"], "/tmp"))
        .with_(with_pip_install(args, ["/tmp/requirements/test/cuda.txt"], system=True))
        .with_exec(["python3", "-m", "pip", "install", "--no-deps", "/tmp/tests/vllm_test_utils"])
        .with_exec(["rm", "-rf", "/tmp/requirements", "/tmp/tests"])
    )


async def extension(args: BuildArgs, csrc: dagger.Container) -> dagger.Container:
    """The compiled extension, its metadata and console scripts as installed, alone in one layer (no RUN)."""
    return scratch_with("/", csrc.directory(EXTENSION_ROOT))


def with_vllm(args: BuildArgs, image: dagger.Container, ext: dagger.Container, source: dagger.Directory) -> dagger.Container:
    """Add vLLM to an image by file operations only: extension layer, then the Python package files."""
    return image.with_directory("/", ext.rootfs()).with_directory(
        f"{args.site_packages()}/vllm", source.directory("vllm"), exclude=PACKAGE_EXCLUDE
    )


async def vllm_base(args: BuildArgs, runtime: dagger.Container, ext: dagger.Container, source: dagger.Directory) -> dagger.Container:
    """FROM vllm-runtime-base AS vllm-base: the runtime image with vLLM installed."""
    return with_vllm(args, runtime, ext, source)


async def test(args: BuildArgs, deps: dagger.Container, ext: dagger.Container, source: dagger.Directory) -> dagger.Container:
    """FROM test-deps AS test: vLLM installed, then the source tree as the last, thin layer."""
    return (
        with_vllm(args, deps, ext, source)
        .with_directory(RUNTIME_WORKSPACE, source)
        .with_workdir(RUNTIME_WORKSPACE)
        .with_env_variable("VLLM_GPU_SYNC_CHECK", "error")
    )


async def openai_deps(args: BuildArgs, runtime: dagger.Container) -> dagger.Container:
    """vllm-openai-base's installs, done on the runtime base so a new vLLM does not redo them."""
    extras = args.openai_extras.split()
    if not extras:
        return runtime
    return runtime.with_env_variable("PIP_BREAK_SYSTEM_PACKAGES", "1").with_exec(
        ["python3", "-m", "pip", "install", "--disable-pip-version-check", *args.pip_index_flags(), *extras]
    )


async def openai(args: BuildArgs, deps: dagger.Container, ext: dagger.Container, source: dagger.Directory) -> dagger.Container:
    """FROM vllm-openai-base AS vllm-openai: the server image, `vllm serve` as its entrypoint."""
    return (
        with_vllm(args, deps, ext, source)
        .with_env_variable("VLLM_USAGE_SOURCE", "production-docker-image")
        .with_entrypoint(["vllm", "serve"])
    )
