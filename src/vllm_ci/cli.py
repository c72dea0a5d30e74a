"""The client command: sub-commands and flags derived from the module's @function signatures.

Same names (kebab-case), arguments, types, defaults and docs as `dagger call`; a function added to
the module appears here with no other change. Bad input is refused with one line before any
container work."""

from __future__ import annotations

import argparse
import asyncio
import builtins
import contextlib
import dataclasses
import inspect
import os
import pathlib
import shutil
import signal
import socket
import sys
import time
import traceback
import types
import typing
import urllib.parse
from collections.abc import Sequence
from typing import Any, Final, NoReturn

import anyio
import dagger
from dagger import dag

from stagecache.errors import StageError, exec_summary
from stagecache.redact import without_userinfo
from stagecache.report import Progress, one_line
from vllm_ci.args import flag_of, kebab
from vllm_ci.checks import check_arguments, empty_secret
from vllm_ci.entry import PROG, install, interruption, print_error, stopping_with
from vllm_ci.errors import UsageError
from vllm_ci.main import VllmCi
from vllm_ci.version import git_versions

DEFAULT_ENGINE_SOCK = "/run/dagger/engine.sock"
ENGINE_ANSWER_SECONDS = 5
SESSION_STOP_SECONDS = 3  # after a signal, how long our session has to exit before it is killed


_M = typing.TypeVar("_M")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The type behind Optional[...], and whether None was allowed."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


@dataclasses.dataclass(frozen=True)
class Option:
    """One argument of a function or the constructor, as the command line sees it."""

    python_name: str
    kind: Any
    doc: str
    default: Any
    required: bool
    ignore: list[str] | None

    @property
    def flag(self) -> str:
        """The --flag spelling."""
        return flag_of(self.python_name)


def _last_meta(hint: Any, kind: type[_M]) -> _M | None:
    """The last metadata of a kind in an Annotated type hint, None when there is none."""
    if typing.get_origin(hint) is not typing.Annotated:
        return None
    return next((meta for meta in reversed(typing.get_args(hint)) if isinstance(meta, kind)), None)


def get_doc(hint: Any) -> str | None:
    """An option's help, read as the SDK reads it for `dagger call` (dagger.mod's private get_doc):
    the last dagger.Doc of an Annotated hint, else the docstring of a class or function of our own
    (not a builtin's, nor a dataclass's generated signature)."""
    if doc := _last_meta(hint, dagger.Doc):
        return doc.documentation
    if inspect.getmodule(hint) == builtins or (not inspect.isclass(hint) and not inspect.isroutine(hint)):
        return None
    try:
        text = hint.__doc__
    except AttributeError:
        return None
    if not isinstance(text, str):
        return None
    if (
        text
        and inspect.isclass(hint)
        and dataclasses.is_dataclass(hint)
        and text.startswith(f"{hint.__name__}(")
        and text.endswith(")")
    ):
        return None
    return inspect.cleandoc(text)


def get_ignore(hint: Any) -> list[str] | None:
    """The patterns of the last dagger.Ignore of an Annotated hint, as the SDK reads them."""
    meta = _last_meta(hint, dagger.Ignore)
    return meta.patterns if meta else None


def options_of(func: Any, hints_of: Any = None) -> list[Option]:
    """The options of a callable, from its signature and Annotated docs."""
    hints = typing.get_type_hints(hints_of or func, include_extras=True)
    opts = []
    for param in inspect.signature(func).parameters.values():
        if param.name == "self":
            continue
        annotated = hints[param.name]
        kind, _ = _unwrap(
            typing.get_args(annotated)[0] if typing.get_origin(annotated) is typing.Annotated else annotated
        )
        required = param.default is inspect.Parameter.empty
        opts.append(
            Option(
                param.name,
                kind,
                get_doc(annotated) or "",
                None if required else param.default,
                required,
                get_ignore(annotated),
            )
        )
    return opts


def module_functions() -> dict[str, Any]:
    """The module's @function methods by command name, in the order `dagger functions` lists them."""
    # @object_type sets __dagger_object_type__ at run time; the SDK declares it nowhere.
    functions = VllmCi.__dagger_object_type__.functions  # type: ignore[attr-defined]
    return {kebab(fn.original_name): getattr(VllmCi, fn.original_name) for fn in functions.values()}


def constructor_options() -> list[Option]:
    """The module object's constructor arguments (the Dockerfile's ARGs)."""
    hints = typing.get_type_hints(VllmCi, include_extras=True)
    opts = []
    for field in dataclasses.fields(VllmCi):
        kind, _ = _unwrap(typing.get_args(hints[field.name])[0])
        opts.append(Option(field.name, kind, get_doc(hints[field.name]) or "", field.default, False, None))
    return opts


def _add(parser: argparse.ArgumentParser, opt: Option) -> None:
    """Add one option to a parser, typed as the module declares it."""
    kind = opt.kind
    shown = "" if opt.default in (None, "", ()) else f" (default: {opt.default})"
    help_text = opt.doc + shown
    if kind is bool:
        parser.add_argument(
            opt.flag,
            dest=opt.python_name,
            type=_parse_bool,
            nargs="?",
            const=True,
            default=opt.default,
            help=help_text,
            metavar="BOOL",
        )
    elif typing.get_origin(kind) is list:
        parser.add_argument(
            opt.flag,
            dest=opt.python_name,
            type=_parse_list,
            default=opt.default,
            required=opt.required,
            help=help_text + " (comma-separated)",
            metavar="A,B",
        )
    else:
        metavar = {
            dagger.Directory: "DIR",
            dagger.File: "FILE",
            dagger.Secret: "env:NAME|file:PATH",
            dagger.Service: "tcp://HOST:PORT",
        }.get(kind, kind.__name__.upper())
        parser.add_argument(
            opt.flag,
            dest=opt.python_name,
            type=kind if kind in (int, float) else str,
            default=opt.default,
            required=opt.required,
            help=help_text,
            metavar=metavar,
        )


def _parse_bool(text: str) -> bool:
    """true/false, as `dagger call` takes them."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _parse_list(text: str) -> list[str]:
    """A comma-separated list."""
    return [item for item in text.split(",") if item]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list[Option]]]:
    """The whole command line: constructor flags, then one sub-command per module function."""
    parser = _Parser(prog=PROG, description=VllmCi.__doc__)
    for opt in constructor_options():
        _add(parser, opt)
    parser.add_argument(
        "-o", "--output", help="Write the result to this host path (a file, or a folder for a directory)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Show the engine's progress on stderr")
    subs = parser.add_subparsers(dest="function", metavar="FUNCTION", parser_class=_Parser)
    per_function = {}
    for name, method in module_functions().items():
        doc = (inspect.getdoc(method) or "").splitlines()[0]
        sub = subs.add_parser(name, help=doc, description=doc)
        per_function[name] = options_of(method)
        for opt in per_function[name]:
            _add(sub, opt)
    return parser, per_function


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
        return dag.host().directory(str(pathlib.Path(value).resolve()), exclude=opt.ignore or [])
    if opt.kind is dagger.File:
        return dag.host().file(str(pathlib.Path(value).resolve()))
    if opt.kind is dagger.Secret:
        return dag.set_secret(kebab(opt.python_name), read_secret(opt.flag, value))
    if opt.kind is dagger.Service:
        # A tunnel into the module's container; this client runs on the host and needs none.
        return None
    return value


def use_local_engine() -> None:
    """Point the SDK at the engine and CLI on this machine when nothing else is configured."""
    if "_EXPERIMENTAL_DAGGER_RUNNER_HOST" not in os.environ and pathlib.Path(DEFAULT_ENGINE_SOCK).is_socket():
        os.environ["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] = f"unix://{DEFAULT_ENGINE_SOCK}"
    if "_EXPERIMENTAL_DAGGER_CLI_BIN" not in os.environ and (found := shutil.which("dagger")):
        os.environ["_EXPERIMENTAL_DAGGER_CLI_BIN"] = found
    os.environ.setdefault("DAGGER_NO_UPDATE_CHECK", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


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
    except BaseException:
        if died:  # whatever the dead session raised on its way out, the engine's death is the news
            raise died[0] from None
        raise
    if died:
        raise died[0]


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
            return fail(str(err).splitlines()[-1], err.exit_code)
        return fail(str(err), err.exit_code)
    except dagger.ExecError as err:
        return fail(exec_summary(err), 1)
    except dagger.QueryError as err:
        return fail(str(err).splitlines()[0], 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as err:  # anything else is a bug of ours: one line, the traceback only on -v
        if ("-v" in argv or "--verbose" in argv) and not interruption():
            traceback.print_exc()
        first = (str(err).splitlines() or [""])[0]
        return fail(f"unexpected {type(err).__name__}: {first} (run with -v for the traceback)", 3)
    finally:
        if interruption():
            end_sessions()
    return fail("interrupted", 130) if interruption() else 0


def end_sessions(grace: float = SESSION_STOP_SECONDS) -> None:
    """After an interrupt: wait a little for the sessions we stopped to exit, then kill what is left
    (by pid), so that no `dagger session` outlives the client."""
    deadline = time.monotonic() + grace
    while session_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_sessions(signal.SIGKILL)


def fail(message: str, code: int) -> int:
    """The one error line (URL credentials blanked, characters that would break the line escaped), and the
    exit code to return; after a signal, the signal's (vllm_ci.entry)."""
    message, code = interruption() or (message, code)
    print_error(one_line(without_userinfo(message)))
    return code


def emit_text(text: str, output: str | None) -> None:
    """Text to --output, or to stdout."""
    if output:
        pathlib.Path(output).write_text(text)
    else:
        print(text)


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
