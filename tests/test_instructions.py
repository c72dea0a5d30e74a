"""Upstream's instruction text run as written (instructions.AsWritten), on the real engine, and the
pure parts (mount options, ARG expansion) as plain unit tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence

import anyio
import pytest
from dagger import dag

from cache_mount_holder import run_with_cache_mount
from conftest import REGISTRY, REPO, cli_env
from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import DECLARED
from vllm_ci.instructions import AsWritten, mount_options, scoped_value

RUNTIME = f"{REGISTRY}/library/vllm-ci-runtime:bookworm"


def test_a_mount_flag_is_read_into_its_options_with_bare_words_as_true() -> None:
    assert mount_options("--mount=type=bind,source=requirements,target=/tmp/vllm-requirements,ro") == {
        "type": "bind",
        "source": "requirements",
        "target": "/tmp/vllm-requirements",
        "ro": "true",
    }


def test_an_arg_with_a_modifier_expands_as_buildkit_does_innermost_first() -> None:
    off, on = BuildArgs(), BuildArgs(use_sccache="1")
    assert off.expand("${USE_SCCACHE:+${SCCACHE_BUCKET_NAME}}") == ""
    assert on.expand("${USE_SCCACHE:+${SCCACHE_BUCKET_NAME}}") == "vllm-build-sccache"
    assert off.expand("${VLLM_MAIN_CUDA_VERSION:-${CUDA_VERSION}}") == "13.0.3"
    assert off.expand("${UV_INDEX_URL}|$PATH") == "|$PATH"  # UV_INDEX_URL defaults to the empty PIP_INDEX_URL


def test_an_arg_is_scoped_per_stage_as_buildkit_scopes_it() -> None:
    args = BuildArgs()
    assert scoped_value(DECLARED["csrc-build"], "max_jobs", args) == "2"  # ARG max_jobs=2
    assert scoped_value(DECLARED["extensions-build"], "max_jobs", args) is None  # bare ARG max_jobs, no global default
    assert scoped_value(DECLARED["extensions-build"], "max_jobs", BuildArgs(max_jobs=16)) == "16"  # passed: every stage
    assert scoped_value(DECLARED["csrc-build"], "UV_INDEX_URL", args) == ""  # global ARG UV_INDEX_URL=${PIP_INDEX_URL}
    assert scoped_value(DECLARED["csrc-build"], "PIP_INDEX_URL", args) is None  # global ARG PIP_INDEX_URL, no default


@pytest.mark.anyio
async def test_a_run_sees_the_stage_args_unless_an_env_of_that_name_is_set_and_leaves_no_mount_behind(
    client: None,
) -> None:
    parent = dag.container().with_new_file("/out/made-by-parent.txt", "parent\n").with_new_file("/out/lib_a.so", "a")
    source = dag.directory().with_new_file("tools/x.py", "print('x')\n").with_new_file("cmake/utils.cmake", "# c\n")
    ctx = StageContext(source=source, parents={"parent": parent})
    # As scoped_value gives them: PIP_INDEX_URL declared with no default anywhere is unset (None).
    upstream = AsWritten(
        BuildArgs(python_version="3.11"),
        ctx,
        ("PYTHON_VERSION", "CUDA_VERSION", "PIP_INDEX_URL"),
        folders=("cmake/",),
        values={"PYTHON_VERSION": "3.11", "CUDA_VERSION": "13.0.3", "PIP_INDEX_URL": None},
    )
    image = (
        dag.container()
        .from_(RUNTIME)
        .with_(
            upstream.step(
                (
                    "ENV CUDA_VERSION=from-env",
                    "WORKDIR /workspace",
                    "COPY tools/x.py cmake tools/",
                    "COPY --from=parent /out/made-by-parent.txt /out/lib_*.so ./from-parent/",
                    'RUN --mount=type=cache,target=/opt/uv/cache echo "$PYTHON_VERSION $CUDA_VERSION ${PIP_INDEX_URL-unset}" > seen.txt'
                    " && touch /opt/uv/cache/left-by-run",
                )
            )
        )
    )
    assert await image.file("/workspace/seen.txt").contents() == "3.11 from-env unset\n"
    assert sorted(await image.directory("/workspace/tools").entries()) == ["utils.cmake", "x.py"]
    assert sorted(await image.directory("/workspace/from-parent").entries()) == ["lib_a.so", "made-by-parent.txt"]
    assert not await image.exists("/opt/uv/cache/left-by-run")  # the cache volume is not part of the image


@pytest.mark.anyio
async def test_a_portability_argument_replaces_only_the_upstream_command_it_names(client: None) -> None:
    ctx = StageContext(source=dag.directory(), parents={})
    upstream = AsWritten(
        BuildArgs(), ctx, (), replace={"dnf install -y ccache && dnf clean all": "echo mirror > /replaced"}
    )
    image = (
        dag.container()
        .from_(RUNTIME)
        .with_(upstream.step("RUN dnf install -y \\\n    ccache \\\n    && dnf clean all && echo kept > /kept"))
    )
    assert (await image.file("/replaced").contents(), await image.file("/kept").contents()) == ("mirror\n", "kept\n")


@pytest.mark.anyio
async def test_a_file_copy_lands_where_buildkit_puts_it_and_leaves_the_folders_it_goes_into_as_they_were(
    client: None,
) -> None:
    source = (
        dag.directory()
        .with_new_file("tools/x.py", "print('x')\n", permissions=0o755)
        .with_new_file("requirements/a.txt", "a\n")
    )
    upstream = AsWritten(BuildArgs(), StageContext(source=source, parents={}), ())
    image = (
        dag.container()
        .from_(RUNTIME)
        .with_(
            upstream.step(
                (
                    "WORKDIR /workspace",
                    "COPY tools/x.py tools/x.py",  # into WORKDIR, same name: a file layer of its own
                    "COPY requirements/a.txt renamed.txt",  # into WORKDIR, another name
                    "COPY requirements/a.txt /tmp/a.txt",  # a system folder, sticky and world-writable
                    "RUN stat -c '%a %U %n' /workspace /workspace/tools /workspace/tools/x.py /workspace/renamed.txt /tmp /tmp/a.txt > /modes",
                )
            )
        )
    )
    assert (await image.file("/modes").contents()).splitlines() == [
        "755 root /workspace",
        "755 root /workspace/tools",
        "755 root /workspace/tools/x.py",
        "644 root /workspace/renamed.txt",
        "1777 root /tmp",
        "644 root /tmp/a.txt",
    ]
    assert await image.file("/workspace/renamed.txt").contents() == await image.file("/tmp/a.txt").contents() == "a\n"


@pytest.mark.anyio
async def test_a_locked_cache_mount_whose_client_was_killed_mid_run_is_free_for_the_next_run(client: None) -> None:
    # Engine v0.18.19 never releases a LOCKED volume whose client left mid-exec: the next RUN on it hung
    # for good (every later build on that agent). `sharing=locked` must not reach the engine as LOCKED.
    volume = f"locked-{uuid.uuid4().hex[:8]}"
    holder = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "cache_mount_holder.py"), volume, "locked", "300"],
        stdout=subprocess.PIPE,
        text=True,
        env={**cli_env(), "PYTHONPATH": f"{REPO / 'tests'}:{REPO / 'src'}"},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "started\n"
        await anyio.sleep(10)  # the RUN is running (the base image is local and cached)
    finally:
        holder.send_signal(signal.SIGINT)  # a cancelled job: the client goes away mid-RUN
        holder.wait(30)
    upstream = AsWritten(BuildArgs(), StageContext(source=dag.directory(), parents={}), ())
    after = dag.container().from_(RUNTIME).with_(upstream.step(run_with_cache_mount(volume, "locked", "0")))
    with anyio.fail_after(180):  # a hang guard, not a speed claim: the RUN takes a second
        await after.sync()


@pytest.mark.anyio
async def test_each_stages_runs_see_exactly_the_arg_values_its_key_holds_byte_for_byte(client: None) -> None:
    from vllm_ci.graph import key_args
    from vllm_ci.instructions import as_written

    odd = "${CUDA_VERSION} $(touch /tmp/ran) 'q' \"d\" `x` ;|&"  # passed values are never expanded or run
    builds = {"defaults": BuildArgs(), "passed": BuildArgs(max_jobs=4, timm_version=odd, pip_index_url=odd)}
    base = dag.container().from_(RUNTIME)
    seen: dict[tuple[str, str], dict[str, str]] = {}  # what each stage's RUN saw of its ARGs
    scopes: dict[tuple[str, str], Sequence[str]] = {}  # the ARGs each stage's runner puts in scope

    async def run(build: str, name: str) -> None:
        upstream = as_written(name, builds[build], StageContext(source=dag.directory(), parents={}))
        ran = base.with_(upstream.step("RUN env -0 > /seen"))
        dump = await ran.file("/seen").contents()
        variables = dict(entry.partition("=")[::2] for entry in dump.split("\0") if entry)
        seen[build, name] = {arg: variables[arg] for arg in upstream.scope if arg in variables}
        scopes[build, name] = upstream.scope
        assert not await ran.exists("/tmp/ran")

    async with anyio.create_task_group() as group:
        for build in builds:
            for name, decl in DECLARED.items():
                if decl.upstream:
                    group.start_soon(run, build, name)
    for (build, name), values in seen.items():
        key = key_args(DECLARED[name], builds[build])
        assert values == {arg: key[arg] for arg in scopes[build, name] if arg in key}, (build, name)
    assert "max_jobs" not in seen["defaults", "extensions-build"]  # a bare `ARG max_jobs`: unset, in key and RUN
    assert seen["defaults", "csrc-build"]["max_jobs"] == "2"  # `ARG max_jobs=2`
    assert seen["passed", "extensions-build"]["max_jobs"] == "4"
    assert seen["passed", "vllm-runtime-base"]["TIMM_VERSION"] == odd
