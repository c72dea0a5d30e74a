"""One job of vLLM's image-build group inside the engine, for `dagger call -m <pinned ref> group-job`: what
upstream's build scripts do (the skip when the tag exists, the cache lanes, the build, the `latest` tag, the kernel
symbol map, the annotation bodies), composed of buildkite_group's pure logic and the module's build. It returns a
folder; the step exports it and posts it with plain `buildkite-agent annotate` / `artifact upload`
(group_pipeline's STEP_FUNCTION), so the agent runs no program of ours.

Registry credentials come from the agent's docker login: its config.json as a Secret (`--docker-config`), read
here for the one registry host the job pushes to. Only inline entries (`auths`, as `docker login` writes them
without a credential store) can be read here: a credential helper is a program on the agent, which the module's
container does not have, so a config that names one for the host is refused in one line."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import dagger
from dagger import dag

from stagecache.errors import StageError
from stagecache.registry import ImageRef, RegistryClient, RegistryError, connect
from vllm_ci.args import LIST_FIELDS, read_args_file, tunnels_of
from vllm_ci.buildkite import SECRET_VARS, SettingsError, render_annotation, report_style
from vllm_ci.buildkite_group import (
    ARGS_FILE_VARS,
    SYMBOL_MAP,
    GroupJob,
    agent_pull_line,
    held_by_agent,
    push_extra_tags,
)
from vllm_ci.checks import ref_argument
from vllm_ci.errors import UsageError

if TYPE_CHECKING:
    from vllm_ci.main import VllmCi

# The agent environment a job reads (buildkite_group.GroupJob.parse), passed by the step as `--env NAME=VALUE`;
# nothing else, and never a secret: a function's string arguments are visible in the engine's telemetry.
ENV_NAMES: Final = (
    "BUILDKITE_BRANCH",
    "BUILDKITE_PULL_REQUEST",
    "BUILDKITE_PULL_REQUEST_BASE_BRANCH",
    "BUILDKITE_LABEL",
    "TORCH_NIGHTLY",
    "VLLM_KERNEL_SYMBOL_MAP",
    "VLLM_CI_REGISTRY",
    "VLLM_CI_MAIN_BRANCH",
    "VLLM_CI_CACHE_STRICT",
    "VLLM_CI_FLAGS",
)
# The returned folder's files, which the step posts (names fixed: the step's shell reads them).
IMAGES_NOTE: Final = "images.md"  # upstream's docker-images annotation lines
REPORT: Final = "report.json"
NOTE: Final = "annotation.md"  # our per-stage report, posted under vllm-ci-image-<job>
STYLE: Final = "annotation.style"


def job_env(pairs: Sequence[str]) -> dict[str, str]:
    """`--env` NAME=VALUE items as a mapping; a name the job does not read (or a secret's) is refused."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in ENV_NAMES:
            hint = " (credentials come from --docker-config)" if name in SECRET_VARS else ""
            raise UsageError(f"--env {name!r}: not NAME=VALUE of one of {', '.join(ENV_NAMES)}{hint}")
        env[name] = value
    return env


def docker_login(config: str, host: str) -> tuple[str, str]:
    """The username and password a docker config.json holds inline for a registry host ("", "" when none);
    a credential helper named for the host, or a config that is not JSON, is refused (never naming a value)."""
    try:
        data = json.loads(config or "{}")
    except ValueError:
        raise UsageError("--docker-config: not a docker config.json (not JSON)") from None
    auths = data.get("auths") or {}
    entry = next((auths[k] for k in (host, f"https://{host}", f"http://{host}") if k in auths), None)
    if entry and (entry.get("auth") or entry.get("username")):
        if entry.get("username"):
            return str(entry["username"]), str(entry.get("password") or "")
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise UsageError(f"--docker-config: the login for {host} is not base64 user:password") from None
        return username, password
    helper = (data.get("credHelpers") or {}).get(host) or data.get("credsStore")
    if helper:
        raise UsageError(
            f"--docker-config: the login for {host} is in the credential helper docker-credential-{helper}, a program "
            "on the agent the module cannot run; log in with a config that stores it (DOCKER_CONFIG of the job)"
        )
    return "", ""


def with_flags(obj: VllmCi, flags: Sequence[str]) -> VllmCi:
    """The module object with a job's constructor flags (its args file, then VLLM_CI_FLAGS) applied: lists add
    up, the last of a single value wins."""
    try:
        values = read_args_file("\n".join(flags))
    except ValueError as err:
        raise UsageError(f"constructor flags: {err}") from None
    for name in LIST_FIELDS:
        if name in values:
            values[name] = [*(getattr(obj, name) or []), *values[name]]
    return dataclasses.replace(obj, **values)


@dataclasses.dataclass
class Login:
    """The job's registry login: what the stage cache's engine pulls and pushes take, and a client factory."""

    username: str = ""
    password: str = ""
    service: dagger.Service | None = None  # a registry on the host's loopback, as `--registry-service`
    tunnels: Mapping[str, str] = dataclasses.field(default_factory=dict)  # its port -> the engine's tunnel

    def secret(self, host: str) -> dagger.Secret | None:
        """The password as a Secret (the engine scrubs its value from every log), None without a login."""
        return dag.set_secret(f"vllm-ci-docker-login-{host}", self.password) if self.username else None

    def client(self, host: str) -> RegistryClient:
        """A registry client with this login, through the engine's tunnel for a loopback host."""
        return connect(host, self.username, self.password, dict(self.tunnels), timeout=10)


def log(line: str) -> None:
    """A line of the job's log (`dagger call` shows the function's stderr)."""
    print(line, file=sys.stderr, flush=True)


async def run_group_job(
    obj: VllmCi,
    source: dagger.Directory,
    argv: Sequence[str],
    env: Sequence[str],
    args_file: dagger.File | None,
    docker_config: dagger.Secret | None,
    service: dagger.Service | None,
) -> dagger.Directory:
    """The module function's body: the job parsed as the step's (its environment, then the args file's flags
    before VLLM_CI_FLAGS, as buildkite.StepSettings reads them), the docker login for the host it pushes to, then
    the job."""
    pairs = job_env(env)
    flags = shlex.join(line for line in (await args_file.contents() if args_file else "").splitlines() if line)
    empty_args_files = dict.fromkeys(ARGS_FILE_VARS.values(), "")
    try:
        job = GroupJob.parse(
            list(argv), {**pairs, **empty_args_files, "VLLM_CI_FLAGS": f"{flags} {pairs.get('VLLM_CI_FLAGS', '')}"}
        )
    except SettingsError as err:
        raise UsageError(str(err)) from None
    host = ImageRef.parse(job.tags[0]).registry
    username, password = docker_login(await docker_config.plaintext() if docker_config else "", host)
    login = Login(username, password, service, await tunnels_of(service))
    return await run_job(with_flags(obj, job.settings.flags), job, source, pairs, login)


async def run_job(
    obj: VllmCi, job: GroupJob, source: dagger.Directory, env: Mapping[str, str], login: Login
) -> dagger.Directory:
    """The job: a folder with images.md always, then report.json, annotation.md and its style when it built, and
    kernel_symbol_map.json.gz when asked for; a failure is a StageError naming its phase."""
    settings, image = job.settings, ImageRef.parse(job.tags[0])
    log(f"image       {', '.join(job.tags)}\ncache-to    {settings.cache_to}")
    log(f"cache-from  {', '.join(['its own', *settings.cache_from])}")
    out = dag.directory().with_new_file(IMAGES_NOTE, job.images_annotation(env))
    reads = [settings.cache_to, *settings.cache_from]
    password = login.secret(image.registry)
    try:
        async with login.client(image.registry) as client:
            if await client.manifest_digest(image.repository, image.reference) is not None:
                log(f"Image already exists: {job.tags[0]}\nSkipping build")
                return await symbol_map(obj, job, source, reads, login, password, out)
            held = await held_by_agent(client, job)
    except RegistryError as err:
        who = "the credentials" if login.username else "anonymous access"
        said = f"refused {who} (HTTP {err.status})" if err.status in (401, 403) else f"did not answer: {err}"
        raise StageError(f"registry {image.registry} {said}", phase="login") from None
    cache = await obj.stage_cache(
        source,
        list(settings.cache_from),
        settings.cache_to,
        settings.cache_strict,
        login.username,
        password,
        registry_service=login.service,
    )
    target = obj.cache_target("")
    _, report = await cache.build(source, target, ref_argument("image", job.tags[0]))
    print(report.table(), file=sys.stderr)
    async with login.client(image.registry) as client:
        if len(job.tags) > 1:
            try:
                await push_extra_tags(client, job)
            except RegistryError as err:
                raise StageError(str(err), phase="publish", ref=job.tags[-1]) from None
            log(f"tagged {', '.join(job.tags[1:])}")
        try:
            pull = await agent_pull_line(client, job, held)
        except RegistryError as err:
            log(f"{image}: not measuring what a test agent pulls ({err})")
            pull = ""
    data = json.loads(report.to_json())
    out = (
        out.with_new_file(REPORT, report.to_json())
        .with_new_file(NOTE, render_annotation(data) + pull)
        .with_new_file(STYLE, report_style(data))
    )
    return await symbol_map(obj, job, source, reads, login, password, out)


async def symbol_map(
    obj: VllmCi,
    job: GroupJob,
    source: dagger.Directory,
    reads: list[str],
    login: Login,
    password: dagger.Secret | None,
    out: dagger.Directory,
) -> dagger.Directory:
    """`out` with the kernel symbol map from the cache this build filled, when asked for; never fails the job."""
    if not job.symbol_map:
        return out
    log("--- :world_map: Exporting kernel symbol map")
    try:
        cache = await obj.stage_cache(
            source, reads, "", False, login.username, password, registry_service=login.service
        )
        built, _ = await cache.build(source, obj.cache_target("kernel-symbol-map"))
        return await out.with_file(SYMBOL_MAP, built.file(SYMBOL_MAP)).sync()
    except (StageError, dagger.QueryError) as err:
        log(f"kernel symbol map export failed; continuing without it ({str(err).splitlines()[0]})")
        return out
