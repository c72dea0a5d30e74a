"""Upstream's instructions run as written: a Dockerfile instruction's own text, read by BuildKit's
parser (`dockerfile` on PyPI), applied to a Dagger container with BuildKit's meaning.

A stage function marks such a step `reproduces(TEXT, upstream)` (declare.py): the text conformance
compares with the real file is the text that runs, so the two cannot drift apart. What each
instruction becomes:
- RUN: `/bin/sh -c` with the script as written; the stage's ARGs are in its environment unless an
  ENV of the same name is (BuildKit: ENV wins); `--mount=type=cache` is a cache volume (`locked`
  one private copy per concurrent RUN, see SHARING),
  `type=bind` a mounted folder (of the stage's filtered source, or of a parent with `from=`), and
  `type=secret` a mounted secret file when the build has it. Mounts are gone after the RUN. With the
  build's private-index netrc (INDEX_NETRC), every RUN has it mounted and NETRC naming it.
- COPY: from the stage's filtered source (a path the stage declares as a folder, "x/", is a folder;
  "." is all of it) or, with `--from=STAGE`, from that parent's result (an entry copied under its own
  name is taken as it is, file or folder; otherwise a name with no extension is a folder).
- ENV, WORKDIR, USER, LABEL, ENTRYPOINT, CMD, EXPOSE: the same change to the image's config.
- ARG: nothing here; the stage declares the ARGs it reads (its key), and RUN sees them.
An ARG is scoped as BuildKit scopes it (scoped_value): a stage's own default, else the global one,
else unset; an empty default (`ARG X=`) is set and empty.
"""

from __future__ import annotations

import dataclasses
import platform
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final

import dagger
import dockerfile
from dagger import dag

from stagecache import StageContext
from vllm_ci.args import AUTOMATIC_ARGS, GLOBAL_DEFAULTS, PROJECT_ARGS, BuildArgs, arg_defaults
from vllm_ci.declare import DECLARED, StageDeclaration
from vllm_ci.errors import UsageError
from vllm_ci.steps import Step, unquote

# `sharing=locked` is run as PRIVATE: the engine (v0.18.19) never releases a LOCKED volume whose exec's
# client went away mid-RUN (a cancelled job), and every later RUN mounting it waits forever (seen on this
# machine: a client killed during `sleep`, then the same volume's next exec hung past 120 s; PRIVATE did
# not). PRIVATE keeps what `locked` is for, one writer at a time per copy: a second concurrent RUN gets
# its own copy instead of waiting.
SHARING: Final = {
    "shared": dagger.CacheSharingMode.SHARED,
    "locked": dagger.CacheSharingMode.PRIVATE,
    "private": dagger.CacheSharingMode.PRIVATE,
}
# A RUN's script starts by setting the stage's ARGs from a variable that holds their exports, set for
# that one command: not in its arguments, which the image config's history records (created_by) and a
# failed RUN's error line shows, and gone from the config after it.
ARGS_VARIABLE: Final = "VLLM_CI_RUN_ARGS"
ARG_LOADER: Final = f'eval "${ARGS_VARIABLE}" && unset {ARGS_VARIABLE}\n'
# The build's private-index credentials, a netrc file (secret id, and where every RUN run as written
# finds it, named by NETRC, which pip and uv read); a secret mount, gone after the RUN.
INDEX_NETRC: Final = "index-netrc"
NETRC_PATH: Final = f"/run/secrets/{INDEX_NETRC}"
ARCHES: Final = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def target_arch() -> str:
    """TARGETARCH as BuildKit fills it for a build on this machine's platform."""
    machine = platform.machine().lower()
    return ARCHES.get(machine, machine)


def automatic_value(name: str) -> str:
    """The value BuildKit gives one of its automatic platform ARGs."""
    arch = target_arch()
    return {
        "TARGETPLATFORM": f"linux/{arch}",
        "TARGETARCH": arch,
        "TARGETOS": "linux",
        "BUILDPLATFORM": f"linux/{arch}",
        "BUILDARCH": arch,
        "BUILDOS": "linux",
    }.get(name, "")


def mount_options(flag: str) -> dict[str, str]:
    """A `--mount=k=v,k2=v2,flag` option as a dict (a bare word is a true flag)."""
    options: dict[str, str] = {}
    for item in flag.removeprefix("--mount=").split(","):
        key, has_value, value = item.partition("=")
        options[key] = value if has_value else "true"
    return options


def refuse_flags(command: Any, known: Sequence[str]) -> None:
    """Refuse an instruction flag this runner does not apply (`--chmod`, `--network`, ...), naming its
    line: dropping it would build something else than the file says."""
    unknown = [flag for flag in command.flags if not flag.startswith(tuple(known))]
    if unknown:
        raise UsageError(f"line {command.start_line}: {command.cmd} {' '.join(unknown)} cannot be run as written")


@dataclasses.dataclass(frozen=True)
class AsWritten:
    """Runs upstream's instructions for one stage, in that stage's ARG scope.

    replace: upstream text -> this build's text, for the few commands upstream hard-codes with no
    ARG (the portability arguments, whose default is upstream's exact text)."""

    args: BuildArgs
    ctx: StageContext
    scope: Sequence[str]  # the ARGs the stage declares, by name: what its RUNs see
    folders: Sequence[str] = ()  # the source paths the stage reads that are folders ("cmake/")
    replace: Mapping[str, str] = dataclasses.field(default_factory=dict)
    values: Mapping[str, str | None] = dataclasses.field(default_factory=dict)  # ARG -> its value here; None: unset
    # ENV values this runner has set so far, for the instructions after them (BuildKit: ENV wins over ARG).
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    def step(self, instructions: str | Sequence[str]) -> Step:
        """The container change the instruction(s) make, in order."""
        texts = [instructions] if isinstance(instructions, str) else list(instructions)
        steps = [self._one(command) for text in texts for command in dockerfile.parse_string(text)]

        def apply(ctr: dagger.Container) -> dagger.Container:
            for one in steps:
                ctr = one(ctr)
            return ctr

        return apply

    def expand(self, text: str) -> str:
        """A word of an instruction (a mount option, a COPY path) with the stage's ARGs expanded,
        BuildKit's automatic platform ARGs included."""
        for name in AUTOMATIC_ARGS & set(self.scope):
            text = text.replace("${" + name + "}", automatic_value(name)).replace("$" + name, automatic_value(name))
        for name, value in self.env.items():
            text = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b", lambda _: value, text)
        # The ARGs' text, whatever the field's type (max_jobs is an int): expand() substitutes text.
        scoped: dict[str, Any] = {
            name.lower(): value or "" for name, value in self.values.items() if name not in AUTOMATIC_ARGS
        }
        return dataclasses.replace(self.args, **scoped).expand(text)

    def arg_environment(self) -> dict[str, str]:
        """The stage's ARGs as a RUN sees them: set ones, even empty (`ARG X=`), never unset ones."""
        return {name: value for name, value in self.values.items() if value is not None}

    def _one(self, command: Any) -> Step:
        """One parsed instruction as a container change."""
        handler = getattr(self, f"_{command.cmd.lower()}", None)
        if handler is None:
            raise UsageError(f"line {command.start_line}: {command.cmd} cannot be run as written")
        return handler(command)

    def _arg(self, command: Any) -> Step:
        """ARG: the stage's declaration carries it; nothing changes in the image."""
        return lambda ctr: ctr

    def _run(self, command: Any) -> Step:
        """RUN: the script as written, its mounts, the stage's ARGs in its environment."""
        if command.json:
            raise UsageError(f"line {command.start_line}: RUN in exec form is not run as written")
        refuse_flags(command, ("--mount=",))
        script = command.value[0]
        for upstream_text, ours in self.replace.items():
            if upstream_text in script:
                script = script.replace(upstream_text, ours)
            elif " ".join(upstream_text.split()) in " ".join(script.split()):  # upstream spreads it over lines
                script = " ".join(script.split()).replace(" ".join(upstream_text.split()), ours)
        # ENV wins over an ARG of the same name: set an ARG only where the image has no such variable.
        preamble = "".join(
            f'[ -n "${{{name}+set}}" ] || export {name}={shlex.quote(value)}\n'
            for name, value in self.arg_environment().items()
        )
        mounts = [mount_options(self.expand(flag)) for flag in command.flags if flag.startswith("--mount=")]
        if INDEX_NETRC in self.ctx.secrets:  # private-index credentials: pip and uv read the file NETRC names
            mounts.append({"type": "secret", "id": INDEX_NETRC, "target": NETRC_PATH})
            preamble += f"export NETRC={NETRC_PATH}\n"

        def step(ctr: dagger.Container) -> dagger.Container:
            mounted = []
            for options in mounts:
                ctr, target = self._mount(ctr, options)
                if target:
                    mounted.append(target)
            ctr = (
                ctr.with_env_variable(ARGS_VARIABLE, preamble)
                .with_exec(["/bin/sh", "-c", ARG_LOADER + script])
                .without_env_variable(ARGS_VARIABLE)
            )
            for target in mounted:
                ctr = ctr.without_mount(target)
            return ctr

        return step

    def _mount(self, ctr: dagger.Container, options: Mapping[str, str]) -> tuple[dagger.Container, str]:
        """One RUN mount; returns the container and the path mounted (empty: nothing mounted)."""
        kind = options.get("type", "bind")
        if kind == "cache":
            target = options["target"]
            volume = dag.cache_volume("vllm-ci-" + options.get("id", target).strip("/").replace("/", "-"))
            return ctr.with_mounted_cache(target, volume, sharing=SHARING[options.get("sharing", "shared")]), target
        if kind == "secret":
            secret_id = options["id"]
            target = options.get("target", f"/run/secrets/{secret_id}")
            secret = self.ctx.secrets.get(secret_id)
            if secret is None:
                if options.get("required", "false") == "true":
                    raise UsageError(f"secret {secret_id!r} is required by a RUN and was not given")
                return ctr, ""
            return ctr.with_mounted_secret(target, secret), target
        if kind == "bind":
            source = options.get("source", options.get("src", "."))
            origin = (
                self.ctx.parents[options["from"]].directory(source)
                if "from" in options
                else self.ctx.source.directory(source)
            )
            return ctr.with_mounted_directory(options["target"], origin), options["target"]
        raise UsageError(f"--mount type={kind} cannot be run as written")

    def _copy(self, command: Any) -> Step:
        """COPY (or ADD of local files): each source to the destination, as BuildKit places them."""
        refuse_flags(command, ("--from=", "--link"))  # --link: the same files, only layered apart
        flags = dict(flag.removeprefix("--").partition("=")[::2] for flag in command.flags)
        *sources, dest = [self.expand(value) for value in command.value]
        into_folder = dest.endswith("/") or dest in (".", "..") or len(sources) > 1
        parent = self.ctx.parents[flags["from"]] if "from" in flags else None

        def step(ctr: dagger.Container) -> dagger.Container:
            for source in sources:
                ctr = self._copy_one(ctr, parent, source, dest, into_folder)
            return ctr

        return step

    _add = _copy

    def _copy_one(
        self, ctr: dagger.Container, parent: dagger.Container | None, source: str, dest: str, into_folder: bool
    ) -> dagger.Container:
        """One COPY source: a folder's contents into dest, a glob's matches into dest, a file to dest."""

        def origin(path: str) -> dagger.Directory:
            return parent.directory(path) if parent is not None else self.ctx.source.directory(path)

        if source.rstrip("/") in (".", ""):  # the whole context
            return ctr.with_directory(dest, origin("/" if parent is not None else "."))
        name = posixpath.basename(source.rstrip("/"))
        folder = posixpath.dirname(source.rstrip("/")) or "."
        if any(c in name for c in "*?["):
            return ctr.with_directory(dest, origin(folder), include=[name])
        if parent is not None and posixpath.basename(dest.rstrip("/")) == name:
            # Same name at the destination: the entry itself, file or folder, without asking which.
            return ctr.with_directory(
                posixpath.dirname(dest.rstrip("/")) or ".", origin(folder), include=[name, f"{name}/**"]
            )
        is_folder = ("." not in name) if parent is not None else (source.rstrip("/") + "/") in self.folders
        if is_folder:
            return ctr.with_directory(dest, origin(source))
        file = parent.file(source) if parent is not None else self.ctx.source.file(source)
        target = posixpath.join(dest, name) if into_folder else dest
        if posixpath.isabs(target):
            # A system folder (/tmp, /usr/local/bin) keeps its own mode and owner only this way.
            return ctr.with_file(target, file)
        # Into WORKDIR: one lazy file layer. The engine's with_file mounts the image to add one file
        # (up to 4 s a file on the runtime image); this layer's folders are the 0755 root ones COPY makes.
        folder_in, target_name = posixpath.split(target)
        if target_name == name:
            return ctr.with_directory(folder_in or ".", origin(folder), include=[name])
        return ctr.with_directory(folder_in or ".", dag.directory().with_file(target_name, file))

    def _env(self, command: Any) -> Step:
        """ENV: each pair, ARGs expanded now and other variables from the image's environment."""
        values = command.value
        pairs = [(name, unquote(self.expand(value))) for name, value in zip(values[::2], values[1::2])]
        self.env.update((name, value) for name, value in pairs if "$" not in value)

        def step(ctr: dagger.Container) -> dagger.Container:
            for name, value in pairs:
                ctr = ctr.with_env_variable(name, value, expand="$" in value)
            return ctr

        return step

    def _workdir(self, command: Any) -> Step:
        """WORKDIR."""
        path = self.expand(command.value[0])
        return lambda ctr: ctr.with_workdir(path, expand="$" in path)

    def _user(self, command: Any) -> Step:
        """USER."""
        user = self.expand(command.value[0])
        return lambda ctr: ctr.with_user(user)

    def _label(self, command: Any) -> Step:
        """LABEL: each pair."""
        values = command.value
        pairs = [(unquote(name), unquote(self.expand(value))) for name, value in zip(values[::2], values[1::2])]

        def step(ctr: dagger.Container) -> dagger.Container:
            for name, value in pairs:
                ctr = ctr.with_label(name, value)
            return ctr

        return step

    def _entrypoint(self, command: Any) -> Step:
        """ENTRYPOINT (exec form as is; shell form through /bin/sh -c)."""
        entry = list(command.value) if command.json else ["/bin/sh", "-c", command.value[0]]
        return lambda ctr: ctr.with_entrypoint(entry)

    def _cmd(self, command: Any) -> Step:
        """CMD (exec form as is; shell form through /bin/sh -c)."""
        default = list(command.value) if command.json else ["/bin/sh", "-c", command.value[0]]
        return lambda ctr: ctr.with_default_args(default)

    def _expose(self, command: Any) -> Step:
        """EXPOSE: each port (tcp unless it says udp)."""
        ports = [value.partition("/") for value in command.value]

        def step(ctr: dagger.Container) -> dagger.Container:
            for port, _, protocol in ports:
                udp = protocol.lower() == "udp"
                ctr = ctr.with_exposed_port(
                    int(port), protocol=dagger.NetworkProtocol.UDP if udp else dagger.NetworkProtocol.TCP
                )
            return ctr

        return step


def as_written(stage_name: str, args: BuildArgs, ctx: StageContext, portable: Sequence[str] = ()) -> AsWritten:
    """The runner of upstream's text for a declared stage: its ARGs (less this project's own) and
    the folders among its reads. portable: this project's arguments for commands upstream hard-codes
    with no ARG; each one's default is upstream's text, replaced by the build's value where it differs."""
    decl = DECLARED[stage_name]
    scope = tuple(n for n in decl.arg_names() if n not in PROJECT_ARGS and n not in decl.also_reads)
    defaults = arg_defaults()
    changed = {defaults[name]: getattr(args, name) for name in portable if getattr(args, name) != defaults[name]}
    return AsWritten(
        args,
        ctx,
        scope,
        tuple(p for p in decl.reads if p.endswith("/")),
        changed,
        {name: scoped_value(decl, name, args) for name in scope},
    )


def scoped_value(decl: StageDeclaration, name: str, args: BuildArgs) -> str | None:
    """An ARG as BuildKit scopes it in one stage: the build's value when it passes one (differs from
    the typed default), else the stage's own default, else the global default, else unset (None).
    csrc-build declares `ARG max_jobs=2`: 2; extensions-build a bare `ARG max_jobs`: unset."""
    if name in AUTOMATIC_ARGS:
        return automatic_value(name)
    if args.passed(name.lower()):  # exactly as given, never expanded again (BuildKit's --build-arg)
        return str(getattr(args, name.lower()))
    own = decl.stage_default(name)
    if own is not None:
        return args.expand(own)
    return args.value_of(name.lower()) if name in GLOBAL_DEFAULTS else None
