"""WHEEL BUILD IMAGE: `FROM base AS build`: vLLM's wheel, repackaged by upstream's own setup.py from
csrc-build's compiled extension, rust-build's frontend and the Python sources, with its checksum, the
EP kernel wheels and the size check. Every instruction runs as the file writes it. The result keeps
only what children take from it: dist/ and the EP kernel wheels."""

from __future__ import annotations

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation
from vllm_ci.stages.common import DIST, EVERYTHING, SOURCE_DATE_EPOCH, with_host_version, without_git
from vllm_ci.stages.extensions import EP_DIST
from vllm_ci.steps import Step

NO_GIT = (
    "binds an empty .git: the upload leaves .git out, so setuptools-scm gets the version the host derived "
    "from it (git_version, as SETUPTOOLS_SCM_PRETEND_VERSION for this RUN only); the key holds that version, "
    "never .git. Runs with SOURCE_DATE_EPOCH=315532800, so the wheel's zip timestamps are fixed"
)
NO_GIT_CHECK = (
    "binds an empty .git (the upload leaves .git out), so tools/check_repo.sh could only fail ('Repo is dirty'): "
    "it runs as written with GIT_REPO_CHECK=0, and any other value is refused before any container work"
)
WITHOUT_UNREAD = (
    "COPY . . copies the upload, which leaves out .git (the version comes from the host), .github and docs "
    "(no step of the stage reads them; args.SOURCE_IGNORE)"
)

COPY_ALL = Deviation("COPY", "COPY . .", WITHOUT_UNREAD)
CHECK_REPO = Deviation("RUN", "tools/check_repo.sh", NO_GIT_CHECK)
BUILD_WHEEL = Deviation("RUN", "setup.py bdist_wheel", NO_GIT)


@stage(
    "build",
    from_="base",
    parents=("base", "csrc-build", "rust-build", "extensions-build"),
    reads=EVERYTHING,
    deviations=(COPY_ALL, CHECK_REPO, BUILD_WHEEL),
    also_reads=("git_version",),
)
async def build(run: Build, ctx: StageContext) -> dagger.Container:
    """FROM base AS build: the vLLM wheel, repackaged around csrc-build's extension; keep dist/ and the EP wheels."""
    upstream = run.upstream("build", ctx)
    git_free = without_git(ctx)  # check_repo's RUN binds .git

    def check_repo(ctr: dagger.Container, _: Step) -> dagger.Container:
        return upstream.step_in(git_free, CHECK_REPO)(ctr)

    wheel = with_host_version(upstream, ctx, BUILD_WHEEL, run.value("git_version"))

    def build_wheel(ctr: dagger.Container, step: Step) -> dagger.Container:
        # Wheels are zips with timestamps: the same inputs give the same bytes (declared in NO_GIT; no layer).
        return wheel(ctr.with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH), step)

    built = upstream.walk(ctx.parents["base"], {CHECK_REPO: check_repo, BUILD_WHEEL: build_wheel})
    return dag.container().with_directory(DIST, built.directory(DIST)).with_directory(EP_DIST, built.directory(EP_DIST))
