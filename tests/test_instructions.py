"""Upstream's instruction text run as written (instructions.AsWritten), on the real engine, and the
pure parts (mount options, ARG expansion) as plain unit tests."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import uuid

import anyio
import pytest
from dagger import dag

from cache_mount_holder import run_with_cache_mount
from conftest import EMPTY_CONTEXT, REGISTRY, REPO, cli_env, example_build, walk_of
from stagecache import StageContext
from vllm_ci.declare import DECLARED
from vllm_ci.deviations import Deviation, skipped
from vllm_ci.errors import UsageError
from vllm_ci.instructions import mount_options
from vllm_ci.upstream_file import UpstreamFile

RUNTIME = f"{REGISTRY}/library/vllm-ci-runtime:bookworm"


def test_a_mount_flag_is_read_into_its_options_with_bare_words_as_true() -> None:
    assert mount_options("--mount=type=bind,source=requirements,target=/tmp/vllm-requirements,ro") == {
        "type": "bind",
        "source": "requirements",
        "target": "/tmp/vllm-requirements",
        "ro": "true",
    }


@pytest.mark.anyio
async def test_a_run_sees_the_stage_args_unless_an_env_of_that_name_is_set_and_leaves_no_mount_behind(
    client: None,
) -> None:
    parent = dag.container().with_new_file("/out/made-by-parent.txt", "parent\n").with_new_file("/out/lib_a.so", "a")
    source = dag.directory().with_new_file("tools/x.py", "print('x')\n").with_new_file("cmake/utils.cmake", "# c\n")
    ctx = StageContext(source=source, parents={"parent": parent})
    # PYTHON_VERSION passed; CUDA_VERSION's ENV wins over its ARG; PIP_INDEX_URL declared, no default: unset;
    # LATE is declared below the RUN, so the RUN does not see it.
    upstream = walk_of(
        "ARG PYTHON_VERSION CUDA_VERSION=13.0.3 PIP_INDEX_URL\n"
        "ENV CUDA_VERSION=from-env\n"
        "WORKDIR /workspace\n"
        "COPY tools/x.py cmake tools/\n"
        "COPY --from=parent /out/made-by-parent.txt /out/lib_*.so ./from-parent/\n"
        'RUN --mount=type=cache,target=/opt/uv/cache echo "$PYTHON_VERSION $CUDA_VERSION ${PIP_INDEX_URL-unset}'
        ' ${LATE-unset}" > seen.txt && touch /opt/uv/cache/left-by-run\n'
        "ARG LATE=late",
        ctx,
        passed={"PYTHON_VERSION": "3.11"},
        folders=("cmake/",),
    )
    image = upstream.walk(dag.container().from_(RUNTIME))
    assert await image.file("/workspace/seen.txt").contents() == "3.11 from-env unset unset\n"
    assert sorted(await image.directory("/workspace/tools").entries()) == ["utils.cmake", "x.py"]
    assert sorted(await image.directory("/workspace/from-parent").entries()) == ["lib_a.so", "made-by-parent.txt"]
    assert not await image.exists("/opt/uv/cache/left-by-run")  # the cache volume is not part of the image


@pytest.mark.anyio
async def test_a_portability_argument_replaces_only_the_commands_holding_its_anchor(client: None) -> None:
    ctx = StageContext(source=dag.directory(), parents={})
    mirror = Deviation("RUN", "dnf install", portable="packages_command")
    text = "RUN dnf install -y \\\n    ccache \\\n    && echo kept > /kept"
    image = walk_of(text, ctx, deviations=(mirror,), portable={"packages_command": "echo mirror > /replaced"}).walk(
        dag.container().from_(RUNTIME)
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
    upstream = walk_of(
        "WORKDIR /workspace\n"
        "COPY tools/x.py tools/x.py\n"  # into WORKDIR, same name: a file layer of its own
        "COPY requirements/a.txt renamed.txt\n"  # into WORKDIR, another name
        "COPY requirements/a.txt /tmp/a.txt\n"  # a system folder, sticky and world-writable
        "RUN stat -c '%a %U %n' /workspace /workspace/tools /workspace/tools/x.py /workspace/renamed.txt /tmp /tmp/a.txt > /modes",
        StageContext(source=source, parents={}),
    )
    image = upstream.walk(dag.container().from_(RUNTIME))
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
        env={**cli_env(), "PYTHONPATH": os.pathsep.join(sys.path)},  # conftest's path
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "started\n"
        await anyio.sleep(10)  # the RUN is running (the base image is local and cached)
    finally:
        holder.send_signal(signal.SIGINT)  # a cancelled job: the client goes away mid-RUN
        holder.wait(30)
    upstream = walk_of(run_with_cache_mount(volume, "locked", "0"), StageContext(source=dag.directory(), parents={}))
    after = upstream.walk(dag.container().from_(RUNTIME))
    with anyio.fail_after(180):  # a hang guard, not a speed claim: the RUN takes a second
        await after.sync()


@pytest.mark.anyio
async def test_each_stages_runs_see_exactly_the_arg_values_its_key_holds_byte_for_byte(client: None) -> None:
    odd = "${CUDA_VERSION} $(touch /tmp/ran) 'q' \"d\" `x` ;|&"  # passed values are never expanded or run
    builds = {
        "defaults": example_build(),
        "passed": example_build(build_arg=["max_jobs=2", f"TIMM_VERSION={odd}", f"PIP_INDEX_URL={odd}"]),
    }
    dump_env = UpstreamFile.parse("FROM scratch\nRUN env -0 > /seen\n", "probe").stages[0].instructions[0]
    base = dag.container().from_(RUNTIME)
    seen: dict[tuple[str, str], dict[str, str]] = {}  # what a RUN after the stage's ARG lines saw of them

    async def run(build: str, name: str) -> None:
        upstream = builds[build].upstream(name, StageContext(source=dag.directory(), parents={}), register=False)
        for instruction in upstream.stage.instructions:
            if instruction.kind == "ARG":
                upstream.step_of(instruction)
        ran = base.with_(upstream.step_of(dump_env))
        variables = dict(entry.partition("=")[::2] for entry in (await ran.file("/seen").contents()).split("\0"))
        seen[build, name] = {arg: variables[arg] for arg in upstream.values if arg in variables}
        assert not await ran.exists("/tmp/ran")

    async with anyio.create_task_group() as group:
        for build in builds:
            for name, decl in DECLARED.items():
                if decl.upstream:
                    group.start_soon(run, build, name)
    for (build, name), values in seen.items():
        key = builds[build].key_values(DECLARED[name])
        assert values == {arg: key[arg] for arg in values}, (build, name)
        assert set(values) == {arg for arg in key if arg in values}
    assert "max_jobs" not in seen["defaults", "extensions-build"]  # a bare `ARG max_jobs`: unset, in key and RUN
    assert seen["defaults", "csrc-build"]["max_jobs"] == "2"  # `ARG max_jobs=2`
    assert seen["passed", "extensions-build"]["max_jobs"] == "2"  # passed (even as csrc-build's default): every stage
    assert seen["passed", "vllm-runtime-base"]["TIMM_VERSION"] == odd


@pytest.mark.anyio
async def test_a_url_rewrite_replaces_a_url_a_run_hard_codes_and_nothing_else(client: None) -> None:
    # vLLM 0.34.0's RUNs name the public index themselves; a mirror rewrites it (--url-rewrite OLD=NEW).
    ctx = StageContext(source=dag.directory(), parents={})
    upstream = walk_of("RUN echo --extra-index-url https://index.invalid/simple kept > /urls", ctx)
    rewritten = dataclasses.replace(upstream, rewrites={"https://index.invalid/simple": "file:///mirror/simple"})
    image = rewritten.walk(dag.container().from_(RUNTIME))
    assert await image.file("/urls").contents() == "--extra-index-url file:///mirror/simple kept\n"


def test_a_handler_for_a_deviation_the_stage_does_not_declare_is_refused() -> None:
    upstream = walk_of("RUN echo a", EMPTY_CONTEXT)
    with pytest.raises(UsageError, match="handlers for undeclared deviations"):
        upstream.walk(dag.container(), {Deviation("RUN", "echo a"): skipped})


def test_a_deviation_must_name_exactly_one_instruction() -> None:
    twice = Deviation("RUN", "echo")
    with pytest.raises(UsageError, match=r"deviation RUN …echo… must name one instruction, names 2, 3$"):
        walk_of("RUN echo a\nRUN echo b", EMPTY_CONTEXT, deviations=(twice,)).walk(dag.container(), {twice: skipped})


def test_an_instruction_the_runner_cannot_run_as_written_is_refused_with_its_line() -> None:
    with pytest.raises(UsageError, match=r"^Dockerfile:3: RUN --network=none cannot be run as written$"):
        walk_of("RUN echo a\nRUN --network=none echo b", EMPTY_CONTEXT).walk(dag.container())
