"""The engine the client command talks to: where it is, whether it answers (before a call and while
it runs), and the `dagger session` processes this client started, stopped by their pids."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import time
import urllib.parse
from typing import Final

import anyio
import dagger

from stagecache.errors import StageError
from stagecache.report import Progress

DEFAULT_ENGINE_SOCK = "/run/dagger/engine.sock"
ENGINE_ANSWER_SECONDS = 5
SESSION_STOP_SECONDS = 3  # after a signal, how long our session has to exit before it is killed


def use_local_engine() -> None:
    """Point the SDK at the engine and CLI on this machine when nothing else is configured."""
    if "_EXPERIMENTAL_DAGGER_RUNNER_HOST" not in os.environ and pathlib.Path(DEFAULT_ENGINE_SOCK).is_socket():
        os.environ["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] = f"unix://{DEFAULT_ENGINE_SOCK}"
    if "_EXPERIMENTAL_DAGGER_CLI_BIN" not in os.environ and (found := shutil.which("dagger")):
        os.environ["_EXPERIMENTAL_DAGGER_CLI_BIN"] = found
    os.environ.setdefault("DAGGER_NO_UPDATE_CHECK", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


async def watch_engine(call: anyio.CancelScope, died: list[StageError]) -> None:
    """Stop the call with one line when the engine stops answering: a dead engine leaves its session
    waiting for minutes otherwise. Probed every second; two misses in a row are a death. The
    session process this client started is stopped too (by its pid), as it would wait 300 s."""
    misses = 0
    while misses < 2:
        await anyio.sleep(1)
        misses = misses + 1 if await anyio.to_thread.run_sync(engine_problem) else 0
    doing = f"building stage {', '.join(Progress.running)}" if Progress.running else "the call"
    died.append(
        StageError(
            f"the Dagger engine stopped answering while {doing}; start it again with ci/engine start "
            "(the cache holds nothing half-written: a registry shows a tag only once its manifest is whole)",
            phase="engine",
        )
    )
    stop_sessions(signal.SIGKILL)
    call.cancel()


def the_news(err: BaseException) -> BaseException:
    """The error to report for one raised out of a session: when the work fails, the SDK closes the
    session and, if `dagger session` then exits non-zero, raises its SessionError over the work's error
    (kept as its context). The work's error is the news; the session's exit is only its echo. A session
    that failed on its own (to start, or as it closed after the work was done) is an engine failure."""
    cause: BaseException | None = err
    while isinstance(cause, dagger.ProvisionError):
        cause = cause.__context__
    if cause is not None:
        return cause
    first = (str(err).splitlines() or [""])[0]
    return StageError(f"the Dagger session failed: {first}", phase="engine")


def stop_sessions(signum: int) -> list[int]:
    """Send a signal to the `dagger session` processes this client started; their pids."""
    pids = session_processes()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    return pids


def session_processes() -> list[int]:
    """The pids of the `dagger session` processes this client started (its children)."""
    found = []
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if ppid == os.getpid() and b"session" in argv[1:3]:
                found.append(int(proc.name))
    return found


def end_sessions(grace: float = SESSION_STOP_SECONDS) -> None:
    """After an interrupt: wait a little for the sessions we stopped to exit, then kill what is left
    (by pid), so that no `dagger session` outlives the client."""
    deadline = time.monotonic() + grace
    while session_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_sessions(signal.SIGKILL)


def engine_problem(handshake: bool = False) -> str | None:
    """Why the configured engine does not answer, found within ENGINE_ANSWER_SECONDS; None when it does.
    unix:// and tcp:// are probed by a connect, and with `handshake` (before a session starts) by the first
    frame of the engine's gRPC server too: a listener that accepts and never answers would keep the session
    waiting for minutes. The other transports (ssh://, kube-pod://, docker-container://, image+…://,
    dagger-cloud://) go through a helper program or a container runtime we cannot probe without doing what
    the session does: they are left to the session."""
    address = urllib.parse.urlsplit(os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", ""))
    try:
        if address.scheme == "unix":
            probe = socket.socket(socket.AF_UNIX)
            probe.settimeout(ENGINE_ANSWER_SECONDS)
            probe.connect(address.path)
        elif address.scheme == "tcp":
            if not address.hostname or address.port is None:
                return "the address names no host and port"
            probe = socket.create_connection((address.hostname, address.port), timeout=ENGINE_ANSWER_SECONDS)
        else:
            return None
        with probe:
            return http2_problem(probe) if handshake else None
    except TimeoutError:
        return f"no answer within {ENGINE_ANSWER_SECONDS} s"
    except (OSError, ValueError) as err:  # ValueError: a port out of range
        return str(getattr(err, "strerror", None) or err)


# The client preface of HTTP/2 (RFC 9113, 3.4) and an empty SETTINGS frame: what a gRPC client sends first.
HTTP2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_FRAME: Final = 0x04  # a server's first frame must be SETTINGS (RFC 9113, 3.4)


def http2_problem(probe: socket.socket) -> str | None:
    """Why a connected engine does not answer as a gRPC server (its first frame within the probe's timeout),
    None when it does: the engine answers in milliseconds."""
    probe.sendall(HTTP2_PREFACE)
    header = b""
    while len(header) < 9:
        chunk = probe.recv(9 - len(header))
        if not chunk:
            return "it closed the connection without a gRPC handshake"
        header += chunk
    return None if header[3] == SETTINGS_FRAME else "it answered, but not as a gRPC server"


def check_engine() -> None:
    """Fail within seconds, in one line, when no engine answers at the configured address."""
    use_local_engine()
    host = os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "")
    if not host:
        raise StageError(
            f"no Dagger engine: {DEFAULT_ENGINE_SOCK} is not a socket; start one with ci/up "
            "(or set _EXPERIMENTAL_DAGGER_RUNNER_HOST)",
            phase="engine",
        )
    if problem := engine_problem(handshake=True):
        raise StageError(
            f"the Dagger engine at {host} does not answer ({problem}); start it (this machine's: "
            "ci/up or ci/engine start), or point _EXPERIMENTAL_DAGGER_RUNNER_HOST at one that runs",
            phase="engine",
        )
