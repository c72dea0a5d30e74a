"""The client command's entry point (`vllm-ci`, `python -m vllm_ci`), light on purpose: it owns SIGINT
and SIGTERM before anything heavy is imported (the client imports Dagger's SDK, about 1 s), so a
cancel at any moment ends in one line and its exit code, never a traceback or a silent death.

A signal is an interrupt: SIGINT ends in `interrupted`, exit 130; SIGTERM (a Buildkite cancel, `timeout`,
`kill`) in `terminated`, exit 143 (128 + the signal's number, as a shell reports it). While the client's
event loop runs, the first signal calls the hook the client registered (it stops its session and
cancels its work, so the line comes once the work is unwound); otherwise, and on a second signal, it
raises `Interrupted` (a KeyboardInterrupt) where the program is. Only the first ~50 ms of the
interpreter's own start-up, before this module runs, keep Python's defaults."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Final

PROG: Final = "vllm-ci"
# Names a file the command's one error line is also written to, as JSON with the phase its error names
# (StageError.phase: usage, plan, look-up, engine, build, export, push, …): the Buildkite step reads it.
ERROR_FILE_VAR: Final = "VLLM_CI_ERROR_FILE"
SDK_CHECKS_VAR: Final = "PYTHONOPTIMIZE"  # beartype reads it at each decoration (sdk_unchecked)
WORDS: Final[dict[int, str]] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

received: list[int] = []  # the signals received, in order
_hook: list[Callable[[], None]] = []  # what stops the running work; empty outside the client's event loop


class Interrupted(KeyboardInterrupt):
    """A signal that ends the command where the program is."""

    def __init__(self, signum: int) -> None:
        """Keep the signal's number."""
        super().__init__(WORDS.get(signum, f"signal {signum}"))
        self.signum = signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Record the signal; the first one asks the running work to stop, else it stops the program here."""
    received.append(signum)
    if len(received) == 1 and _hook:
        _hook[-1]()
        return
    raise Interrupted(signum)


def _unraisable(info: Any) -> None:
    """An interrupt raised where Python cannot raise it (a weakref callback of the import system, a finalizer)
    is dropped without a traceback: the command ends on its record (`received`). Anything else as Python does."""
    if not isinstance(info.exc_value, Interrupted):
        sys.__unraisablehook__(info)


def install() -> None:
    """Take SIGINT and SIGTERM (idempotent; asyncio's runner leaves a handler of ours in place). A signal
    the command was started with ignored (`nohup`, a shell's background job) stays ignored."""
    sys.unraisablehook = _unraisable
    for signum in WORDS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _on_signal)


@contextlib.contextmanager
def stopping_with(stop: Callable[[], None]) -> Iterator[None]:
    """While the block runs, the first signal calls `stop` (from the signal handler: it must only
    schedule work, e.g. with loop.call_soon_threadsafe), instead of raising where the program is."""
    _hook.append(stop)
    try:
        yield
    finally:
        _hook.remove(stop)


def interruption() -> tuple[str, int] | None:
    """The first signal received as its word and exit code; None when none was."""
    if not received:
        return None
    return WORDS.get(received[0], f"signal {received[0]}"), 128 + received[0]


def print_error(message: str) -> None:
    """The command's one error line, as every failure ends (here before the client is imported, and cli.fail)."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def fail_interrupted() -> int:
    """The one line of an interrupted command, and its exit code."""
    word, code = interruption() or ("interrupted", 128 + signal.SIGINT)
    print_error(word)
    return code


@contextlib.contextmanager
def sdk_unchecked() -> Iterator[None]:
    """Within the block, an import of Dagger's SDK skips its run-time type checks. The SDK wraps each of its
    ~640 methods with beartype as it is imported, 0.4 s of every command; our calls into it are checked
    before they run (mypy). beartype's documented switch is PYTHONOPTIMIZE, read as it wraps: it is set for
    the block only, so Python itself (asserts) and the processes the client starts are as they were."""
    before = os.environ.get(SDK_CHECKS_VAR)
    os.environ[SDK_CHECKS_VAR] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[SDK_CHECKS_VAR]
        else:
            os.environ[SDK_CHECKS_VAR] = before


@contextlib.contextmanager
def client_import() -> Iterator[None]:
    """Within the block, the client is imported as the command imports it: the SDK without its run-time type
    checks (sdk_unchecked), and what the import made frozen out of the garbage collector's sight after it. That
    (the SDK's methods, their types, the schema's classes) lives as long as the command: no collection walks it
    again, the one at exit included, 0.17 s of every command."""
    with sdk_unchecked():
        yield
    gc.freeze()


def main() -> int:
    """Take the signals, then import and run the client; a signal during the import is one line too."""
    install()
    try:
        with client_import():
            from vllm_ci.cli import main as client_main
    except KeyboardInterrupt:
        return fail_interrupted()
    if received:  # raised where Python drops it (a weakref callback of the import system): an interrupt still
        return fail_interrupted()
    return client_main()
