"""What the stage sections share: paths of the images, the build's secrets by name, the deviation
every image with vLLM in it makes (its install is vllm_ci.fastpath.install's), and the .git handling."""

from __future__ import annotations

import dataclasses

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.deviations import Deviation, Handler, skipped
from vllm_ci.instructions import AsWritten
from vllm_ci.steps import Step

WORKSPACE = "/workspace"
RUNTIME_WORKSPACE = "/vllm-workspace"
DIST = f"{WORKSPACE}/dist"
EXTENSION_ROOT = "/extension-root"
EVERYTHING = ("**",)  # COPY . . / ADD . : the whole checkout (less what the upload leaves out)
# The build's secrets, by the id upstream's RUN mounts them with (--mount=type=secret,id=...).
AWS_CREDENTIALS = "aws-credentials"
# Wheels are zips with timestamps: pin them so the same inputs give the same bytes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can hold


# The deviation every image with vLLM in it makes, in one sentence.
FLOOR = (
    "vLLM is added by file layers (csrc-build's extension and the EP kernel wheels as installed, the vllm/ "
    "files with their bytecode, compiled by the runtime's own Python in runtime-python, and rust-build's vllm-rs, "
    "linked on PATH in vllm-base), not by installing build's wheel with a RUN that would pull every layer below. "
    "Not done: with PYTORCH_NIGHTLY=1 upstream's RUN first swaps torch for the nightly named in base's "
    "torch_lib_versions.txt; these layers keep vllm-runtime-base's torch"
)
# The instructions that install build's wheels, as vllm-base and test write them (vllm-openai-base gets
# them from vllm-base): each image with vLLM in it adds it by the FLOOR's file layers instead.
INSTALLS_VLLM = (
    Deviation("COPY", "torch_lib_versions.txt", FLOOR),
    Deviation("COPY", "dist/wheel.sha256", FLOOR),
    Deviation("RUN", "--system dist/*.whl", FLOOR),
    Deviation("COPY", "dist/wheels.sha256", FLOOR),
    Deviation("RUN", "--system ep_kernels/dist/*.whl", FLOOR),
)


def installing_vllm(installed: Step, deviations: tuple[Deviation, ...] = INSTALLS_VLLM) -> dict[Deviation, Handler]:
    """Handlers that add vLLM's file layers where the first of these instructions stands; the rest are
    done by them."""
    first, *rest = deviations
    return {first: lambda ctr, _: installed(ctr), **dict.fromkeys(rest, skipped)}


PRETEND_VERSION = "SETUPTOOLS_SCM_PRETEND_VERSION"  # setuptools-scm takes this instead of asking git
RUST_ARTIFACTS = "/workspace/vllm"  # where rust-build leaves vllm-rs and the PyO3 modules


def keeping(paths: list[str], built: dagger.Container) -> dagger.Container:
    """An image holding only these paths of a built stage (files or folders), as children see them."""
    patterns = [q for p in paths for q in (p.strip("/"), p.strip("/") + "/**")]
    return dag.container().with_rootfs(dag.directory().with_directory("/", built.rootfs(), include=patterns))


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


def with_host_version(upstream: AsWritten, ctx: StageContext, deviation: Deviation, version: str) -> Handler:
    """The handler of a RUN that binds .git: its step as written over an empty .git (without_git), given the
    version the host derived (with_git_version); the step is made when the walk reaches it, in its scope."""
    return lambda ctr, _: with_git_version(version, upstream.step_in(without_git(ctx), deviation))(ctr)
