"""TEST IMAGE: `FROM vllm-runtime-base AS test-deps` (every instruction as the file writes it), then
`FROM test-deps AS test`: vLLM and the source tree added by file operations, the thin top layers.

What the test stage does differently, and why: it adds vLLM (csrc-build's extension and the vllm/
files) and the checkout by file layers onto the imported test-deps, with no RUN, so a Python-only
change pulls none of the layers below; the editable install of tests/vllm_test_utils, the one RUN
that does not depend on vLLM, is done in test-deps at the same path."""

from __future__ import annotations

import dagger

from stagecache import StageContext
from vllm_ci.build import Build
from vllm_ci.declare import stage
from vllm_ci.deviations import Deviation, Handler, skipped
from vllm_ci.fastpath.install import vllm_installed
from vllm_ci.stages.common import EVERYTHING, INSTALLS_VLLM, RUNTIME_WORKSPACE, installing_vllm

TEST_DEPS_READS = (
    "requirements/common.txt",
    "requirements/lint.txt",
    "requirements/test/cuda.in",
    "requirements/test/cuda.txt",
    "requirements/dev.txt",
    "pyproject.toml",
    "tools/use_existing_torch.py",
    "tests/vllm_test_utils/",
)
SOURCE_TREE_BY_FILES = (
    "the tree is added with vllm/ already at src/vllm: two file layers, no RUN, so a Python-only "
    "change pulls nothing below them"
)
IN_TEST_DEPS = "run as written at the end of test-deps, in the same folder (/vllm-workspace), so this stage stays thin"
SOURCE_TREE = Deviation("ADD", ". /vllm-workspace/", SOURCE_TREE_BY_FILES)
MAKE_SRC = Deviation("RUN", "mkdir src", SOURCE_TREE_BY_FILES)
MOVE_TO_SRC = Deviation("RUN", "mv vllm src/vllm", SOURCE_TREE_BY_FILES)
EDITABLE_TEST_UTILS = Deviation("RUN", "tests/vllm_test_utils", IN_TEST_DEPS)
# The lock check after vLLM is installed; vLLM's file layers install no dependency, so the packages it
# checks are test-deps': run there, as the editable install is.
KV_LOCK_VERIFY = Deviation("RUN", "kv_connector_lock.py verify", IN_TEST_DEPS)
COPY_V1 = Deviation("COPY", "vllm/v1", "vllm/v1 is already in site-packages: the file layers add all of vllm/ there")


@stage(
    "test-deps",
    from_="vllm-runtime-base",
    parents=("vllm-runtime-base", "base"),
    reads=TEST_DEPS_READS,
    runs_from=(("test", EDITABLE_TEST_UTILS), ("test", KV_LOCK_VERIFY)),
)
async def test_deps(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM vllm-runtime-base AS test-deps: git, the dev requirements (lint and tests) and the test utilities."""
    return (
        build.upstream("test-deps", ctx)
        .walk(ctx.parents["vllm-runtime-base"])
        # The test stage's editable install of the test utilities, where ADD . will put them.
        .with_directory(f"{RUNTIME_WORKSPACE}/tests/vllm_test_utils", ctx.source.directory("tests/vllm_test_utils"))
        .with_(build.step_elsewhere("test", EDITABLE_TEST_UTILS, ctx))
        .with_(build.step_elsewhere("test", KV_LOCK_VERIFY, ctx))
    )


@stage(
    "test",
    from_="test-deps",
    parents=("test-deps", "extension", "package", "rust-installed", "runtime-python", "source-tree"),
    reads=EVERYTHING,
    deviations=(*INSTALLS_VLLM, SOURCE_TREE, EDITABLE_TEST_UTILS, KV_LOCK_VERIFY, COPY_V1, MAKE_SRC, MOVE_TO_SRC),
    also_reads=("PYTHON_VERSION", "git_version"),
    not_read=("test-deps", "extension", "package", "rust-installed", "source-tree"),
)
async def test(build: Build, ctx: StageContext) -> dagger.Container:
    """FROM test-deps AS test: vLLM installed, then the source tree (source-tree's layers) last."""
    source_tree = ctx.parents["source-tree"].rootfs()
    handlers: dict[Deviation, Handler] = {
        **installing_vllm(await vllm_installed(build, ctx)),
        SOURCE_TREE: lambda ctr, _: ctr.with_directory("/", source_tree),
        **dict.fromkeys((EDITABLE_TEST_UTILS, KV_LOCK_VERIFY, COPY_V1, MAKE_SRC, MOVE_TO_SRC), skipped),
    }
    return build.upstream("test", ctx).walk(ctx.parents["test-deps"], handlers)
