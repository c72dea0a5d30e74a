"""The client command: sub-commands and flags derived from the module's @function signatures.

Same names (kebab-case), arguments, types, defaults and docs as `dagger call`; a function added to
the module appears here with no other change. Bad input is refused with one line before any
container work. The options are read from the module in options.py; the engine is found and
watched in engine.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import signal
import sys
import traceback
import typing
from collections.abc import Sequence
from typing import Any

import anyio
import dagger
from dagger import dag

from stagecache.errors import StageError, exec_summary
from stagecache.hostsource import on_host
from stagecache.redact import without_userinfo
from stagecache.report import one_line
from vllm_ci.args import kebab
from vllm_ci.checks import check_arguments, empty_secret
from vllm_ci.engine import SESSION_STOP_SECONDS, check_engine, end_sessions, stop_sessions, the_news, watch_engine
from vllm_ci.entry import ERROR_FILE_VAR, install, interruption, print_error, stopping_with
from vllm_ci.errors import UsageError
from vllm_ci.main import VllmCi
from vllm_ci.options import Option, build_parser, constructor_options, module_functions
from vllm_ci.version import git_versions


def check_inputs(opts: list[Option], values: dict[str, Any]) -> None:
    """Refuse paths that do not exist, secret references that do not resolve and what the module's
    functions refuse (vllm_ci.checks), before any work."""
    for opt in opts:
        value = values.get(opt.python_name)
        if value is None or not isinstance(value, str):
            continue
        if opt.kind is dagger.Directory and not pathlib.Path(value).is_dir():
            raise UsageError(f"{opt.flag}: no such directory: {value}")
        if opt.kind is dagger.File and not pathlib.Path(value).is_file():
            raise UsageError(f"{opt.flag}: no such file: {value}")
        if opt.kind is dagger.Secret:
            read_secret(opt.flag, value)
    check_arguments({opt.python_name: values.get(opt.python_name) for opt in opts})


def check_output(output: str | None, function: str) -> None:
    """Refuse an --output the function's result cannot be written to, before any work: its folder
    must exist, and only a Directory result goes to a folder (the others are a file or text)."""
    if not output:
        return
    path = pathlib.Path(output)
    if not path.parent.is_dir():
        raise UsageError(f"-o: no such folder: {path.parent}")
    returns = typing.get_type_hints(module_functions()[function]).get("return")
    if returns is dagger.Directory and path.exists() and not path.is_dir():
        raise UsageError(f"-o: {output} is a file; {function} returns a folder")
    if returns is not dagger.Directory and path.is_dir():
        kinds: dict[Any, str] = {dagger.File: "a file", dagger.Container: "an image tarball"}
        what = kinds.get(returns, "text")
        raise UsageError(f"-o: {output} is a folder; {function} returns {what}")


def derive_git_version(args: argparse.Namespace) -> None:
    """The version setuptools-scm derives from --source's .git, when the call gives none: the upload
    leaves .git out, so the host derives it for the stages that bind .git (vllm_ci.version)."""
    source = getattr(args, "source", None)
    if isinstance(source, str) and not args.git_version and not args.git_version_clean:
        args.git_version, args.git_version_clean = git_versions(pathlib.Path(source))


def read_secret(flag: str, reference: str) -> str:
    """The value behind env:NAME or file:PATH; the value itself is never printed."""
    scheme, _, name = reference.partition(":")
    if scheme == "env" and name:
        if name not in os.environ:
            raise UsageError(f"{flag}: environment variable {name} is not set")
        if not os.environ[name]:
            raise empty_secret(flag, name)
        return os.environ[name]
    if scheme == "file" and name:
        path = pathlib.Path(name)
        if not path.is_file():
            raise UsageError(f"{flag}: no such file: {name}")
        try:
            value = path.read_text().rstrip("\n")
        except UnicodeDecodeError:
            raise UsageError(f"{flag}: {name} is not text (UTF-8)") from None
        if not value:
            raise empty_secret(flag, name)
        return value
    # Never echo the reference: a user may have typed the secret itself.
    raise UsageError(f"{flag}: a secret is given as env:NAME or file:PATH")


def to_dagger(opt: Option, value: Any) -> Any:
    """A command-line value as the module function takes it."""
    if value is None or not isinstance(value, str):
        return value
    if opt.kind is dagger.Directory:
        folder = str(pathlib.Path(value).resolve())
        # The cache plans the folder here (its listing, and hashes with git's stat rule) and uploads the files a
        # stage that builds needs, instead of the whole folder first (hostsource).
        return on_host(dag.host().directory(folder, exclude=opt.ignore or []), folder, opt.ignore or [])
    if opt.kind is dagger.File:
        return dag.host().file(str(pathlib.Path(value).resolve()))
    if opt.kind is dagger.Secret:
        return dag.set_secret(kebab(opt.python_name), read_secret(opt.flag, value))
    if opt.kind is dagger.Service:
        # A tunnel into the module's container; this client runs on the host and needs none.
        return None
    return value


async def emit(result: Any, output: str | None) -> None:
    """Print a result, or write it to --output."""
    if isinstance(result, str):
        emit_text(result, output)
    elif isinstance(result, (dagger.File, dagger.Directory)):
        if output:
            await result.export(output)
        else:
            print(f"{type(result).__name__} evaluated ({await result.digest()}); use --output PATH to export it")
    elif isinstance(result, dagger.Container):
        if output:
            await result.export(output)
        else:
            await result.sync()
            print("Container evaluated; use --output PATH to export it as a tarball")
    else:
        print(result)


async def run(args: argparse.Namespace, opts: list[Option], obj: VllmCi) -> None:
    """Connect (to the engine check_engine found), call the function with the parsed arguments, print its result."""
    # The session's progress must go somewhere that is drained: an undrained pipe fills up and
    # blocks the session from exiting.
    died: list[StageError] = []  # set by the watchdog when the engine stops answering
    cancel = anyio.CancelScope()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        """On SIGINT or SIGTERM (called from the signal handler): stop our session, cancel the work. A
        session still connecting ignores SIGTERM and holds the SDK's start-up thread: killed after a grace."""
        stop_sessions(signal.SIGTERM)
        loop.call_soon_threadsafe(cancel.cancel)
        loop.call_soon_threadsafe(loop.call_later, SESSION_STOP_SECONDS, stop_sessions, signal.SIGKILL)

    try:
        log = open(os.devnull, "w") if not args.verbose else contextlib.nullcontext(sys.stderr)
        with stopping_with(stop), cancel, log as log_output:
            async with dagger.connection(dagger.Config(log_output=log_output)):
                async with anyio.create_task_group() as group:
                    group.start_soon(watch_engine, group.cancel_scope, died)
                    await call(args, opts, obj)
                    group.cancel_scope.cancel()
    except BaseException as err:
        if died:  # whatever the dead session raised on its way out, the engine's death is the news
            raise died[0] from None
        if (news := the_news(err)) is not err:
            raise news from None
        raise
    if died:
        raise died[0]


async def call(args: argparse.Namespace, opts: list[Option], obj: VllmCi) -> None:
    """Call the module function on a connected client and emit its result."""
    kwargs = {opt.python_name: to_dagger(opt, getattr(args, opt.python_name)) for opt in opts}
    result = await getattr(obj, args.function.replace("-", "_"))(**kwargs)
    await emit(result, args.output)


async def run_unwrapped(args: argparse.Namespace, opts: list[Option], obj: VllmCi) -> None:
    """run(), with an error raised inside concurrent tasks surfaced as itself, not as a group."""
    try:
        await run(args, opts, obj)
    except BaseExceptionGroup as group:
        while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
            group = group.exceptions[0]
        raise group from None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, check, run; every failure is one line on stderr and a documented exit code. A signal is
    an interrupt (vllm_ci.entry): whatever the work raised on its way out, the line is the signal's."""
    install()
    argv = list(sys.argv[1:] if argv is None else argv)
    output = None
    try:
        parser, per_function = build_parser()
        args = parser.parse_args(argv)
        output = args.output
        if not args.function:
            parser.print_help()
            return 2
        check_inputs(per_function[args.function], vars(args))
        check_output(output, args.function)
        derive_git_version(args)
        # Constructed here, before the engine is contacted: the constructor refuses bad ARG values.
        obj = VllmCi(**{opt.python_name: getattr(args, opt.python_name) for opt in constructor_options()})
        check_engine()
        anyio.run(run_unwrapped, args, per_function[args.function], obj)
    except StageError as err:
        if err.output:  # a report shown before the line; its summary is the message's last line
            emit_text(err.output, output)
            return fail(str(err).splitlines()[-1], err.exit_code, err.phase)
        return fail(str(err), err.exit_code, err.phase)
    except dagger.ExecError as err:
        return fail(exec_summary(err), 1, "build")
    except dagger.QueryError as err:
        return fail(str(err).splitlines()[0], 1, "engine")
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as err:  # anything else is a bug of ours: one line, the traceback only on -v
        if ("-v" in argv or "--verbose" in argv) and not interruption():
            traceback.print_exc()
        first = (str(err).splitlines() or [""])[0]
        return fail(f"unexpected {type(err).__name__}: {first} (run with -v for the traceback)", 3, "bug")
    finally:
        if interruption():
            end_sessions()
    return fail("interrupted", 130) if interruption() else 0


def fail(message: str, code: int, phase: str = "interrupted") -> int:
    """The one error line (URL credentials blanked, characters that would break the line escaped), and the
    exit code to return; after a signal, the signal's (vllm_ci.entry). When ERROR_FILE_VAR names a file, the
    same as JSON there with the phase the error itself names (StageError.phase), for a caller to read."""
    if stopped := interruption():
        message, code, phase = *stopped, "interrupted"
    line = one_line(without_userinfo(message))
    print_error(line)
    if path := os.environ.get(ERROR_FILE_VAR):
        pathlib.Path(path).write_text(json.dumps({"phase": phase, "exit_code": code, "message": line}))
    return code


def emit_text(text: str, output: str | None) -> None:
    """Text to --output, or to stdout."""
    if output:
        pathlib.Path(output).write_text(text)
    else:
        print(text)
