"""A stage of the Dockerfile being built, walked in file order: each instruction is run as written,
with BuildKit's meaning, unless a deviation the stage function declares claims it.

What each instruction becomes:
- RUN: `/bin/sh -c` with the script as written; the ARGs the stage has declared above it are in its environment
  unless an ENV of the same name is (BuildKit: ENV wins); `--mount=type=cache` is a cache volume (`locked` one
  private copy per concurrent RUN, see SHARING), `type=bind` a mounted folder (of the stage's filtered source, or of
  a parent with `from=`), and `type=secret` a mounted secret file when the build has it. Mounts are gone after the
  RUN. With the build's private-index netrc (INDEX_NETRC), every RUN has it mounted and NETRC naming it.
- COPY: from the stage's filtered source (a path the stage declares as a folder, "x/", is a folder; "." is all of it)
  or, with `--from=STAGE`, from that parent's result (an entry copied under its own name is taken as it is, file or
  folder; otherwise a name with no extension is a folder).
- ENV, WORKDIR, USER, LABEL, ENTRYPOINT, CMD, EXPOSE: the same change to the image's config.
- ARG: in scope from its line on, valued as upstream_file scopes it.
A deviation (declared on the stage function with `@stage(deviations=...)`) names one instruction by its kind and a
short anchor of its text; the walk hands that instruction, as written, to the function's handler, or runs it as
written when the deviation only changes what is around it. The walk records what it ran; a stage whose instructions
were not all walked fails its build (a tail of config-only ones, Build.tails, is walked apart: Build.tail_step).
"""

from __future__ import annotations

import dataclasses
import platform
import posixpath
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import dagger
from dagger import dag

from stagecache import StageContext
from vllm_ci.deviations import Deviation, Handler, anchored, claimed
from vllm_ci.errors import UsageError
from vllm_ci.steps import Step, unquote
from vllm_ci.upstream_file import FileStage, Instruction, UpstreamFile, arg_value, expand

# `sharing=locked` is run as PRIVATE: the engine (v0.18.19) never releases a LOCKED volume whose exec's client went
# away mid-RUN (a cancelled job), and every later RUN mounting it waits forever (seen on this machine: a client killed
# during `sleep`, then the same volume's next exec hung past 120 s; PRIVATE did not). PRIVATE keeps what `locked` is
# for, one writer at a time per copy: a second concurrent RUN gets its own copy instead of waiting.
SHARING: Final = {
    "shared": dagger.CacheSharingMode.SHARED,
    "locked": dagger.CacheSharingMode.PRIVATE,
    "private": dagger.CacheSharingMode.PRIVATE,
}
# A RUN's script starts by setting the stage's ARGs from a variable holding their exports, set for that one command:
# not in its arguments, which the image history (created_by) and a failed RUN's error line show; gone after it.
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


def automatic_values() -> dict[str, str]:
    """BuildKit's automatic platform ARGs, as it fills them for a build on this machine's platform."""
    arch = target_arch()
    return {
        "TARGETPLATFORM": f"linux/{arch}",
        "TARGETARCH": arch,
        "TARGETOS": "linux",
        "TARGETVARIANT": "",
        "BUILDPLATFORM": f"linux/{arch}",
        "BUILDARCH": arch,
        "BUILDOS": "linux",
        "BUILDVARIANT": "",
    }


AUTOMATIC_VALUES: Final = automatic_values()


def mount_source(options: Mapping[str, str], default: str) -> str:
    """The path a RUN mount takes from its origin (`source=` or `src=`), else the default."""
    return options.get("source", options.get("src", default))


def mount_options(flag: str) -> dict[str, str]:
    """A `--mount=k=v,k2=v2,flag` option as a dict (a bare word is a true flag)."""
    options: dict[str, str] = {}
    for item in flag.removeprefix("--mount=").split(","):
        key, has_value, value = item.partition("=")
        options[key] = value if has_value else "true"
    return options


# The flags each instruction this runner applies takes (COPY --link: the same files, only layered apart).
FLAGS: Final = {"RUN": ("--mount=",), "COPY": ("--from=", "--link"), "ADD": ("--from=", "--link")}
RUNNABLE: Final = frozenset("ARG RUN COPY ADD ENV WORKDIR USER LABEL ENTRYPOINT CMD EXPOSE".split())


def unrunnable(instruction: Instruction) -> str:
    """Why the runner cannot run an instruction as written (a kind or flag it does not apply: dropping it
    would build something else than the file says); empty when it can."""
    if instruction.kind not in RUNNABLE:
        return f"{instruction.kind} cannot be run as written"
    if instruction.kind == "RUN" and instruction.json:
        return "RUN in exec form cannot be run as written"
    unknown = [f for f in instruction.flags if not f.startswith(FLAGS.get(instruction.kind, ("\0",)))]
    return f"{instruction.kind} {' '.join(unknown)} cannot be run as written" if unknown else ""


@dataclasses.dataclass(frozen=True)
class AsWritten:
    """Runs one stage's instructions of the Dockerfile, in file order, in that stage's ARG scope."""

    stage: FileStage
    file: UpstreamFile
    passed: Mapping[str, str]  # --build-arg values, exactly as given
    ctx: StageContext
    deviations: Sequence[Deviation] = ()
    portable: Mapping[str, str] = dataclasses.field(default_factory=dict)  # argument -> this build's value
    folders: Sequence[str] = ()  # the source paths the stage reads that are folders ("cmake/")
    # URL a RUN hard-codes -> this build's (--url-rewrite).
    rewrites: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The ARGs declared so far in the walk, with their values (None: unset): what the next RUN sees.
    values: dict[str, str | None] = dataclasses.field(default_factory=dict)
    # ENV values this runner has set so far, for the instructions after them (BuildKit: ENV wins over ARG).
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    walked: list[int] = dataclasses.field(default_factory=list)  # lines walked, in order
    until: int | None = None  # the line the stage's tail starts at (Build.tails): walked apart (Build.tail_step)

    def walk(self, start: dagger.Container, handlers: Mapping[Deviation, Handler] | None = None) -> dagger.Container:
        """Every instruction of the stage onto `start`, in file order: each as written, or through the
        handler of the deviation that claims it. A handler for a deviation the stage does not declare,
        or a deviation that claims no instruction or several, is refused."""
        handlers = handlers or {}
        undeclared = [d.label() for d in handlers if d not in self.deviations]
        if undeclared:
            raise UsageError(f"stage {self.stage.name}: handlers for undeclared deviations {undeclared}")
        claimed = {i.line: d for d in self.deviations for i in self.claimed_by(d)}
        ctr = start
        for instruction in self.body():
            deviation = claimed.get(instruction.line)
            handler = handlers.get(deviation) if deviation is not None else None
            if handler is None:
                ctr = self.step_of(instruction)(ctr)
            else:  # the instruction's own step is made only if the handler runs it, in the scope of its line
                ctr = handler(ctr, lambda c, i=instruction: self.step_of(i)(c))  # type: ignore[misc]
            self.walked.append(instruction.line)
        return ctr

    def walk_above(self, start: dagger.Container, deviation: Deviation) -> dagger.Container:
        """The instructions above the one a deviation anchors, each as written (the part of a stage that
        another stage does first); not recorded as the stage's walk."""
        line = self.anchored(deviation).line
        ctr = start
        for instruction in self.stage.instructions:
            if instruction.line < line:
                ctr = self.step_of(instruction)(ctr)
        return ctr

    def anchored(self, deviation: Deviation) -> Instruction:
        """The one instruction a deviation's anchor names in this stage."""
        return anchored(self.file.path, self.stage, deviation)

    def claimed_by(self, deviation: Deviation) -> list[Instruction]:
        """The instructions a deviation claims in this stage."""
        return claimed(self.file.path, self.stage, deviation)

    def step_in(self, ctx: StageContext, deviation: Deviation) -> Step:
        """The as-written step of the instruction a deviation claims, over another context (an empty .git
        bound): for a handler to call in the walk, so the step sees the walk's scope at its line."""
        return dataclasses.replace(self, ctx=ctx).step_of(self.anchored(deviation))

    def complete(self) -> bool:
        """Whether the walk ran every instruction of the stage but its tail (walked apart)."""
        return self.walked == [i.line for i in self.body()]

    def body(self) -> list[Instruction]:
        """The instructions its walk runs: the stage's, less its tail."""
        return [i for i in self.stage.instructions if self.until is None or i.line < self.until]

    def step_of(self, instruction: Instruction) -> Step:
        """The container change one instruction makes, as written (ARG: it enters the scope now)."""
        return self._one(instruction)

    def expand(self, text: str) -> str:
        """A word of an instruction (a mount option, a COPY path, an ENV value) with the ARGs in scope and
        the ENV values set so far expanded (ENV wins, as in BuildKit)."""
        return expand(text, {**self.values, **self.env})

    def arg_environment(self) -> dict[str, str]:
        """The ARGs in scope as a RUN sees them: set ones, even empty (`ARG X=`), never unset ones."""
        return {name: value for name, value in self.values.items() if value is not None}

    def _one(self, command: Instruction) -> Step:
        """One parsed instruction as a container change."""
        problem = unrunnable(command)
        if problem:
            raise UsageError(f"{self.file.path}:{command.line}: {problem}")
        handler: Callable[[Instruction], Step] = getattr(self, f"_{command.kind.lower()}")
        return handler(command)

    def _arg(self, command: Instruction) -> Step:
        """ARG: each name enters the scope here, valued as BuildKit values it; nothing changes in the image."""
        global_values = self.file.global_values(self.passed)
        for name, default in command.arg_items():
            self.values[name] = arg_value(name, default, self.passed, AUTOMATIC_VALUES, global_values, self.values)
        return lambda ctr: ctr

    def _run(self, command: Instruction) -> Step:
        """RUN: the script as written, its mounts, the stage's ARGs in its environment."""
        script = self.portable_script(command)
        for old, new in self.rewrites.items():
            script = script.replace(old, new)
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

    def is_source_folder(self, source: str) -> bool:
        """Whether a path of the stage's source is a folder: the client hashed files under it (or the
        stage declares it as one, "cmake/")."""
        path = source.strip("/").removeprefix("./")
        if (path + "/") in self.folders:
            return True
        return path not in self.ctx.files and any(name.startswith(path + "/") for name in self.ctx.files)

    def portable_script(self, command: Instruction) -> str:
        """A RUN's script, with a portability override applied where the build passes one: the commands
        (between `&&`) that hold the deviation's anchor, or the whole script, become the override's value."""
        script = command.value[0]
        for deviation in self.deviations:
            value = self.portable.get(deviation.portable, "") if deviation.portable else ""
            if not value or not deviation.claims(command):
                continue
            if deviation.whole:
                return value
            parts = [part.strip() for part in " ".join(script.split()).split("&&")]
            kept = [value if deviation.anchor in part else part for part in parts]
            script = " && ".join(dict.fromkeys(kept))  # the anchor's commands become one
        return script

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
            source = mount_source(options, ".")
            origin = (
                self.ctx.parents[options["from"]].directory(source)
                if "from" in options
                else self.ctx.source.directory(source)
            )
            return ctr.with_mounted_directory(options["target"], origin), options["target"]
        raise UsageError(f"--mount type={kind} cannot be run as written")

    def _copy(self, command: Instruction) -> Step:
        """COPY (or ADD of local files): each source to the destination, as BuildKit places them."""
        flags = command.options()
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
        is_folder = ("." not in name) if parent is not None else self.is_source_folder(source)
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

    def _env(self, command: Instruction) -> Step:
        """ENV: each pair, ARGs expanded now and other variables from the image's environment."""
        values = command.value
        pairs = [(name, unquote(self.expand(value))) for name, value in zip(values[::2], values[1::2])]
        self.env.update((name, value) for name, value in pairs if "$" not in value)

        def step(ctr: dagger.Container) -> dagger.Container:
            for name, value in pairs:
                ctr = ctr.with_env_variable(name, value, expand="$" in value)
            return ctr

        return step

    def _workdir(self, command: Instruction) -> Step:
        """WORKDIR."""
        path = self.expand(command.value[0])
        return lambda ctr: ctr.with_workdir(path, expand="$" in path)

    def _user(self, command: Instruction) -> Step:
        """USER."""
        user = self.expand(command.value[0])
        return lambda ctr: ctr.with_user(user)

    def _label(self, command: Instruction) -> Step:
        """LABEL: each pair."""
        values = command.value
        pairs = [(unquote(name), unquote(self.expand(value))) for name, value in zip(values[::2], values[1::2])]

        def step(ctr: dagger.Container) -> dagger.Container:
            for name, value in pairs:
                ctr = ctr.with_label(name, value)
            return ctr

        return step

    def _entrypoint(self, command: Instruction) -> Step:
        """ENTRYPOINT (exec form as is; shell form through /bin/sh -c)."""
        entry = list(command.value) if command.json else ["/bin/sh", "-c", command.value[0]]
        return lambda ctr: ctr.with_entrypoint(entry)

    def _cmd(self, command: Instruction) -> Step:
        """CMD (exec form as is; shell form through /bin/sh -c)."""
        default = list(command.value) if command.json else ["/bin/sh", "-c", command.value[0]]
        return lambda ctr: ctr.with_default_args(default)

    def _expose(self, command: Instruction) -> Step:
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
