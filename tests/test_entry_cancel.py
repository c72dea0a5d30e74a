"""Cancel is an interrupt: SIGINT and SIGTERM at any moment end in one line and 130 or 143, no
`dagger session` outlives the client, and the cache holds only whole entries, sealed by their record
(or by the next build that uses them); an engine that does not answer is found before any session."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator

import pytest

from conftest import DAGGER, EXAMPLE, REGISTRY, REPO, assert_valid_entry, build, cli_env, entry_tags_of, example_flags
from local_registry import RegistryAPI
from stagecache.keys import cache_tag
from stagecache.registry import ImageRef, RegistryClient
from stagecache.why import inputs_tag

CLI = [sys.executable, "-m", "vllm_ci"]  # what ci/buildkite-step runs


def console_script() -> list[str]:
    """The `vllm-ci` console script as pip generates it from pyproject's [project.scripts]."""
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["vllm-ci"]
    module, _, func = target.partition(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def errors(stderr: str) -> list[str]:
    """The `vllm-ci: error:` lines of an output."""
    return [line for line in stderr.splitlines() if line.startswith("vllm-ci: error:")]


def sessions_of(pid: int) -> dict[int, str]:
    """The `dagger session` processes whose parent is `pid`: pid -> start time (to tell a reused pid)."""
    found = {}
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text().rpartition(")")[2].split()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == pid and b"session" in argv[1:3]:
            found[int(proc.name)] = stat[19]
    return found


def alive(pid: int, started: str) -> bool:
    """Whether the process that had this pid and start time still runs (a zombie does not)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return stat[19] == started and stat[0] != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", ["python -m vllm_ci", "console script"])
@pytest.mark.parametrize("after", [0.1, 0.2, 0.3])
def test_a_signal_during_start_up_ends_in_one_line_with_its_exit_code_and_no_traceback(
    command: str, signum: int, after: float
) -> None:
    argv = CLI if command == "python -m vllm_ci" else console_script()
    with subprocess.Popen(
        [*argv, "--help"], env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as client:
        time.sleep(after)  # the client imports Dagger's SDK for about 0.6-1 s (before it, ~50 ms of Python's own)
        client.send_signal(signum)
        out, err = client.communicate(timeout=60)
    assert client.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], err
    word = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[signum]
    assert err.splitlines() == [f"vllm-ci: error: {word}"]  # one line: no traceback, nothing else
    assert "usage" not in out  # it was stopped during start-up, not after the help


def test_a_signal_whose_exception_python_drops_during_the_import_still_ends_the_command_as_an_interrupt() -> None:
    # The handler's exception, raised in a weakref callback (as in the import system's), is dropped by Python and
    # the import goes on: no traceback is printed, and the signal's record still ends the command.
    probe = (
        "import sys, weakref; from vllm_ci import entry; entry.install(); held = {1}; "
        "ref = weakref.ref(held, lambda _: entry._on_signal(15, None)); del held; sys.exit(entry.main())"
    )
    done = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.splitlines()) == (143, ["vllm-ci: error: terminated"])
    assert "usage" not in done.stdout


@pytest.mark.timeout(120)  # a hang guard, not a speed claim
def test_an_engine_address_where_nothing_answers_over_tcp_fails_in_one_line_with_exit_1_naming_it() -> None:
    address = "tcp://127.0.0.1:1"
    done = subprocess.run(
        [*CLI, *example_flags(), "plan", "--source", str(EXAMPLE)],
        env={**cli_env(), "_EXPERIMENTAL_DAGGER_RUNNER_HOST": address},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == errors(done.stderr)
    [line] = errors(done.stderr)
    assert line.startswith(f"vllm-ci: error: engine: the Dagger engine at {address} does not answer (")
    assert "ci/engine start" in line


def test_sigterm_during_a_build_ends_in_one_line_with_143_stops_its_session_and_leaves_whole_sealed_entries(
    engine: None,
) -> None:
    cache = f"{REGISTRY}/test/cancel-{uuid.uuid4().hex[:12]}"
    command = [*CLI, *example_flags(), "build", "--source", str(EXAMPLE), "--target", "base", "--cache-to", cache]
    with subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as client:
        assert client.stderr is not None
        seen = []
        for line in client.stderr:
            seen.append(line)
            if line.startswith("stage base: building"):  # building or exporting: a session is working
                break
        sessions = sessions_of(client.pid)
        client.send_signal(signal.SIGTERM)  # what a Buildkite cancel or `timeout` sends
        rest = client.communicate(timeout=300)[1]
    assert sessions, "".join(seen)  # the client had started its session
    assert client.returncode == 143, "".join(seen) + rest
    assert errors("".join(seen) + rest) == ["vllm-ci: error: terminated"]
    assert "Traceback" not in rest
    assert [pid for pid, started in sessions.items() if alive(pid, started)] == []
    # The next build uses what the cancelled one left (hit, and sealed at its use) or rebuilds it.
    again = subprocess.run(
        [*command, "--cache-from", cache], env=cli_env(), capture_output=True, text=True, timeout=1800
    )
    assert again.returncode == 0, again.stderr[-3000:]
    ref = ImageRef.parse(cache)
    registry = RegistryAPI(ref.registry)
    assert entry_tags_of(registry, ref.repository)
    for tag in entry_tags_of(registry, ref.repository):
        assert_valid_entry(registry, ref.repository, tag)  # whole, and its record names it


@pytest.mark.anyio
async def test_an_entry_found_without_its_record_is_used_and_sealed_by_the_next_build_that_writes_there(
    client: None, cache_repo: str
) -> None:
    first = await build(EXAMPLE, "base", cache_to=cache_repo)
    ref, tag = ImageRef.parse(cache_repo), cache_tag("base", first.record("base").key)
    registry = RegistryAPI(ref.registry)
    record = registry.digest(ref.repository, inputs_tag(tag))
    assert record is not None
    async with RegistryClient(ref.registry) as client_:  # an export interrupted between manifest and record
        await client_.delete_manifest(ref.repository, record)
    assert registry.digest(ref.repository, inputs_tag(tag)) is None
    reader = await build(EXAMPLE, "base", cache_from=[cache_repo])  # used, but it may not write there
    assert reader.record("base").outcome == "hit"
    assert registry.digest(ref.repository, inputs_tag(tag)) is None
    writer = await build(EXAMPLE, "base", cache_from=[cache_repo], cache_to=cache_repo)
    assert writer.record("base").outcome == "hit"
    assert writer.record("base").ref == first.record("base").ref  # the same image, not a rebuild
    assert_valid_entry(registry, ref.repository, tag)  # sealed: its record names the image used


@contextlib.contextmanager
def stalling_engine() -> Iterator[str]:
    """A tcp:// engine address whose listener answers a gRPC client's first frame (so the client's start-up
    check passes) and then never again: a session connecting to it waits."""
    held: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        done = threading.Event()

        def serve() -> None:
            while not done.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                held.append(conn)
                conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
        finally:
            done.set()
            thread.join()
            for conn in held:
                conn.close()


def plan_against(address: str) -> subprocess.Popen[str]:
    """The client command planning the example against an engine address, its output piped."""
    env = {**cli_env(), "_EXPERIMENTAL_DAGGER_RUNNER_HOST": address}
    command = [*CLI, *example_flags(), "plan", "--source", str(EXAMPLE)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_while_the_session_waits_on_an_engine_that_never_speaks_stops_that_session() -> None:
    with stalling_engine() as address:
        with plan_against(address) as client:
            while not (sessions := sessions_of(client.pid)) and client.poll() is None:
                time.sleep(0.1)
            time.sleep(1)  # the session is connecting (it ignores SIGTERM while it does)
            client.send_signal(signal.SIGTERM)
            err = client.communicate(timeout=120)[1]
    assert sessions, err
    assert client.returncode == 143, err
    assert err.splitlines() == ["vllm-ci: error: terminated"]
    assert [pid for pid, started in sessions.items() if alive(pid, started)] == []


@pytest.mark.timeout(120)  # a hang guard, not a speed claim
def test_an_engine_address_that_accepts_and_never_answers_fails_in_one_line_before_any_session() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        with plan_against(address) as client:
            err = client.communicate(timeout=110)[1]
    assert client.returncode == 1, err
    assert err.splitlines() == [
        f"vllm-ci: error: engine: the Dagger engine at {address} does not answer (no answer "
        "within 5 s); start it (this machine's: ci/up or ci/engine start), or point "
        "_EXPERIMENTAL_DAGGER_RUNNER_HOST at one that runs"
    ]  # check_engine's: no session


@pytest.mark.timeout(300)  # a hang guard, not a speed claim
@pytest.mark.parametrize(
    ("work", "line"),
    [
        ("a build of a missing base image", "vllm-ci: error: build: "),  # the work's error, not the session's exit
        ("a plan that succeeds", "vllm-ci: error: engine: the Dagger session failed: "),
    ],
)
def test_a_session_that_exits_non_zero_as_it_closes_leaves_the_works_own_line_or_an_engine_line(
    tmp_path: pathlib.Path, work: str, line: str
) -> None:
    # The real `dagger session`, which then exits 1: what CI once saw after a failed build, reported as
    # "bug: unexpected SessionError" over the build's own error.
    failing_cli = tmp_path / "dagger"
    failing_cli.write_text(f'#!/bin/sh\n"{DAGGER}" "$@"\nexit 1\n')
    failing_cli.chmod(0o755)
    cache = f"{REGISTRY}/session-exit-{uuid.uuid4().hex[:10]}"
    if work == "a plan that succeeds":
        call = [*example_flags(), "plan", "--source", str(EXAMPLE), "--cache-from", cache]
    else:
        absent = f"--build-arg=BUILD_BASE_IMAGE={REGISTRY}/library/absent:none"
        call = [*example_flags(), absent, "build", "--source", str(EXAMPLE), "--cache-to", cache]
    done = subprocess.run(
        [*CLI, *call],
        env={**cli_env(), "_EXPERIMENTAL_DAGGER_CLI_BIN": str(failing_cli)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    [error] = errors(done.stderr)
    assert error.startswith(line), error
