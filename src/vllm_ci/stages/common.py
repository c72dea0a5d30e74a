"""What the stage sections share: paths of the images, the build's secrets by name, and the fast
path that installs vLLM by file operations (no RUN after it)."""

from __future__ import annotations

import dataclasses

import dagger

from stagecache import StageContext

from vllm_ci.args import BuildArgs
from vllm_ci.steps import Step

WORKSPACE = "/workspace"
RUNTIME_WORKSPACE = "/vllm-workspace"
DIST = f"{WORKSPACE}/dist"
EXTENSION_ROOT = "/extension-root"
# Instructions upstream writes alike in several stages (the same text, so one constant).
UV_BUILD_ENV = ("ENV UV_HTTP_TIMEOUT=500", 'ENV UV_INDEX_STRATEGY="unsafe-best-match"', "ENV UV_LINK_MODE=copy")
WORKDIR = "WORKDIR /workspace"
COMPAT = "ENV VLLM_ENABLE_CUDA_COMPATIBILITY=0"
ARCH_ENV = "ENV TORCH_CUDA_ARCH_LIST=${torch_cuda_arch_list}"
EVERYTHING = ("**",)  # COPY . . / ADD . : the whole checkout (less what the upload leaves out)
# The build's secrets, by the id upstream's RUN mounts them with (--mount=type=secret,id=...).
AWS_CREDENTIALS = "aws-credentials"
# Wheels are zips with timestamps: pin them so the same inputs give the same bytes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can hold
# Excluded from the package layer: what a wheel would not ship.
PACKAGE_EXCLUDE = ["**/__pycache__", "**/*.pyc", "**/*.so"]


# The deviation every image with vLLM in it makes, in one sentence.
FLOOR = ("vLLM is added by file layers (csrc-build's extension and the EP kernel wheels as installed, the vllm/ "
         "files and rust-build's vllm-rs, linked on PATH in vllm-base), not by installing build's wheel with a RUN "
         "that would pull every layer below")
PRETEND_VERSION = "SETUPTOOLS_SCM_PRETEND_VERSION"  # setuptools-scm takes this instead of asking git
RUST_ARTIFACTS = "/workspace/vllm"  # where rust-build leaves vllm-rs and the PyO3 modules


def without_git(ctx: StageContext) -> StageContext:
    """The stage's context with an empty .git in its source: what RUNs that bind .git get, since the
    uploaded source leaves .git out (and a key never reads it)."""
    return dataclasses.replace(ctx, source=ctx.source.with_new_directory(".git"))


def with_git_version(version: str, step: Step) -> Step:
    """A RUN that binds .git, given the version setuptools-scm would derive there (the host derived it,
    vllm_ci.version): SETUPTOOLS_SCM_PRETEND_VERSION for that RUN only; no version: the RUN as it is."""
    if not version:
        return step
    return lambda ctr: step(ctr.with_env_variable(PRETEND_VERSION, version)).without_env_variable(PRETEND_VERSION)


def with_vllm(args: BuildArgs, image: dagger.Container, ext: dagger.Container, source: dagger.Directory,
              rust: dagger.Container) -> dagger.Container:
    """Add vLLM to an image by file operations only: the extension layer, the Python package files,
    then rust-build's artifacts (vllm-rs) where the wheel puts them."""
    site_vllm = f"{args.site_packages()}/vllm"
    return (
        image.with_directory("/", ext.rootfs())
        .with_directory(site_vllm, source.directory("vllm"), exclude=PACKAGE_EXCLUDE)
        .with_directory(site_vllm, rust.directory(RUST_ARTIFACTS))
    )
