"""The Buildkite image-build step: settings from the agent environment, then ``python -m vllm_ci build``
exactly as on a laptop (it plans once, itself, and names each stage's hit or miss as it goes), then
annotation, artifacts and meta-data. No Dagger here.

Run by ``ci/buildkite-step``. Exit 0 on success or when the image already exists, 1 on failure
(never 255 or -1, which the pipeline retries as a lost agent). A cancel (SIGTERM, which the agent
sends; or SIGINT) is forwarded to the running ``python -m vllm_ci``, which stops its session and
exits; the step waits for it and ends with one line, exit 143 (SIGTERM) or 130 (SIGINT). Writes report.json and the
annotation body (annotation.md) to ``VLLM_CI_OUT``: the annotation is an artifact too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from fnmatch import fnmatch
from pathlib import Path

import anyio

from stagecache.redact import without_userinfo
from stagecache.registry import ImageRef, RegistryClient, RegistryError, connect
from vllm_ci.buildkite import (
    ANNOTATION_CONTEXT,
    INDEX_NETRC_VAR,
    PASSWORD_VAR,
    SECRET_VARS,
    SettingsError,
    StepSettings,
    failure_phase,
    render_annotation,
    report_style,
)
from vllm_ci.entry import ERROR_FILE_VAR, WORDS, Interrupted
from vllm_ci.hostgit import SAFE_GIT

_TRUE = {"1", "true", "yes", "on"}


class StepFailed(Exception):
    """A failed phase and its one-line reason."""

    def __init__(self, phase: str, message: str) -> None:
        """Keep the phase and message."""
        super().__init__(f"{phase}: {message}")
        self.phase, self.message = phase, message


class Cancel:
    """SIGTERM and SIGINT for the step: forwarded to the CLI while it runs (in a session of its own,
    so a signal to the agent's process group reaches it once, from here), else raised where the step is."""

    received: list[int] = []
    child: subprocess.Popen[str] | None = None
    forwarding = False  # between starting the CLI and its exit: the signal is the CLI's to handle

    @classmethod
    def install(cls) -> None:
        """Take the signals."""
        for signum in WORDS:
            signal.signal(signum, cls.on_signal)

    @classmethod
    def on_signal(cls, signum: int, frame: object) -> None:
        """Forward to the CLI when it runs; raise otherwise."""
        cls.received.append(signum)
        if not cls.forwarding:
            raise Interrupted(signum)
        if cls.child is not None:  # else run_cli forwards it as soon as the CLI has started
            cls.child.send_signal(signum)


def log(line: str) -> None:
    """Print one job-log line, unbuffered, URL credentials blanked (the ARG values a flag or error names)."""
    print(without_userinfo(line), flush=True)


def redactor(env: Mapping[str, str]) -> Callable[[str], str]:
    """A function that blanks the secrets' values (registry password, AWS keys, the index netrc and each
    password in it) and every URL's user-info out of a string."""
    netrc_passwords = re.findall(r"\bpassword\s+(\S+)", env.get(INDEX_NETRC_VAR, ""))
    secrets = sorted({*(env[v] for v in SECRET_VARS if env.get(v)), *netrc_passwords}, key=len, reverse=True)

    def redact(text: str) -> str:
        """The text with every secret value and URL user-info replaced."""
        for secret in secrets:
            text = text.replace(secret, "[REDACTED]")
        return without_userinfo(text)

    return redact


def agent(args: list[str], env: Mapping[str, str], stdin: str | None = None, cwd: Path | None = None) -> bool:
    """Run ``buildkite-agent ARGS`` (in ``cwd``) bounded in time; log and carry on when absent, slow or failing."""
    what = " ".join(args[:2])
    binary = shutil.which("buildkite-agent")
    if binary is None:
        log(f"buildkite-agent not found: skipping '{what}'")
        return False
    limit = float(env.get("VLLM_CI_AGENT_TIMEOUT", "") or 20)
    proc = subprocess.Popen(
        [binary, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=cwd,
    )
    try:
        output, _ = proc.communicate(stdin or "", timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        log(f"buildkite-agent '{what}' gave no answer within {limit:g} s: skipped")
        return False
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-1:] or ["no output"]
        log(f"buildkite-agent '{what}' failed (exit {proc.returncode}): {redactor(env)(tail[0])}")
        return False
    return True


def resolve_commit(env: dict[str, str]) -> None:
    """Replace a symbolic ``BUILDKITE_COMMIT`` (``HEAD``, unset) with the checkout's sha; anything
    else is left as given, for the settings to take as a sha or refuse in one line."""
    commit = env.get("BUILDKITE_COMMIT", "")
    if commit.strip() not in ("", "HEAD"):
        return
    try:
        sha = subprocess.run(
            [*SAFE_GIT, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return
    if sha:
        log(f"BUILDKITE_COMMIT is {commit or 'unset'!r}: using the checkout's HEAD {sha}")
        env["BUILDKITE_COMMIT"] = sha


def registry_client(host: str, settings: StepSettings, env: Mapping[str, str]) -> RegistryClient:
    """The one registry client, for a registry host: the step's credentials, else the agent's docker login."""
    insecure = env.get("VLLM_CI_REGISTRY_INSECURE", "").lower() in _TRUE
    return connect(host, settings.username or "", env.get(PASSWORD_VAR, ""), insecure=insecure, timeout=10)


def image_digest(settings: StepSettings, env: Mapping[str, str]) -> str | None:
    """HEAD the image manifest: its digest when the tag exists, None when it does not."""
    image = ImageRef.parse(settings.image_ref)
    host = image.registry
    try:
        return anyio.run(_manifest_digest, registry_client(host, settings, env), image)
    except RegistryError as err:
        if err.status in (401, 403):
            who = "the credentials" if settings.username else "anonymous access"
            raise StepFailed("login", f"registry {host} refused {who} (HTTP {err.status})") from None
        if err.status is not None:
            raise StepFailed("plan", f"registry {host} answered HTTP {err.status} to the image check") from None
        raise StepFailed("login", f"registry {host} did not answer the image check: {err}") from None


async def _manifest_digest(client: RegistryClient, image: ImageRef) -> str | None:
    """The digest of an image (None when its tag does not exist)."""
    async with client:
        return await client.manifest_digest(image.repository, image.reference)


def run_cli(phase: str, args: list[str], env: Mapping[str, str], error_file: Path) -> None:
    """Run ``python -P -m vllm_ci ARGS``, streaming its output (password blanked); raise ``StepFailed`` on failure,
    in the phase and words the CLI's error file gives (ERROR_FILE_VAR). -P: the working directory, the
    checkout, is not on the module path (its docker/ would shadow the package)."""
    redact = redactor(env)
    log(f"$ python -m vllm_ci {shlex.join(args)}")
    error_file.unlink(missing_ok=True)
    Cancel.forwarding = True
    try:
        with subprocess.Popen(
            [sys.executable, "-P", "-m", "vllm_ci", *args],
            env={**env, "PYTHONUNBUFFERED": "1", ERROR_FILE_VAR: str(error_file.resolve())},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=1,
            start_new_session=True,
        ) as proc:
            Cancel.child = proc
            if Cancel.received:  # a signal came while it started
                proc.send_signal(Cancel.received[-1])
            assert proc.stdout is not None
            for line in proc.stdout:  # until the CLI exits, cancelled or not
                log(redact(line.rstrip("\n")))
    finally:
        Cancel.forwarding, Cancel.child = False, None
    if Cancel.received:
        raise Interrupted(Cancel.received[0])
    if proc.returncode != 0:
        try:
            failure = json.loads(error_file.read_text())
        except (OSError, ValueError):  # it died before saying
            failure = None
        failed = failure_phase(phase, failure)
        reason = redact(str((failure or {}).get("message", ""))).removeprefix(f"{failed}:").strip()
        raise StepFailed(failed, reason or f"python -m vllm_ci {phase} exited {proc.returncode}")


def upload_artifacts(paths: list[Path], env: Mapping[str, str]) -> None:
    """Upload the files the step's ``artifact_paths`` does not cover (the agent uploads those after the step)."""
    present = [p for p in paths if p.is_file()]
    patterns = [p.strip() for p in re.split(r"[;,]", env.get("BUILDKITE_ARTIFACT_PATHS", "")) if p.strip()]
    todo = [p for p in present if not any(fnmatch(str(p), pat) for pat in patterns)]
    for p in sorted(set(present) - set(todo)):
        log(f"artifact {p}: uploaded by the agent after the step (artifact_paths)")
    if todo:
        agent(["artifact", "upload", ";".join(str(p) for p in todo)], env)


def annotate(body: str, style: str, env: Mapping[str, str], path: Path, context: str = ANNOTATION_CONTEXT) -> None:
    """Write the annotation to ``path`` (an artifact) and post it under a stable context, password blanked."""
    body = redactor(env)(body)
    try:
        path.write_text(body)
    except OSError as err:
        log(f"could not write {path}: {err}")
    agent(["annotate", "--context", context, "--style", style], env, stdin=body)


def run(env: dict[str, str]) -> int:
    """The whole step; returns the exit code."""
    log("--- :docker: settings")
    resolve_commit(env)
    try:
        settings = StepSettings.from_env(env)
    except SettingsError as err:
        log("^^^ +++")
        log(f"vllm-ci-step: error: plan: {err}")
        return 1
    log(f"image       {settings.image_ref}")
    log(f"cache-to    {settings.cache_to}")
    log(f"cache-from  {', '.join(['its own', *settings.cache_from])}")
    log(f"source      {settings.source}")
    log(f"flags       {shlex.join(settings.flags) or '(none)'}")
    login = f"user {settings.username}, password from {PASSWORD_VAR}" if settings.username else "anonymous"
    log(f"registry    {login}")
    if settings.has_index_netrc:
        log(f"indexes     netrc from {INDEX_NETRC_VAR}")

    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report, note = out / "report.json", out / "annotation.md"
    for stale in (report, note):
        stale.unlink(missing_ok=True)
    heading = f"**:docker: test image** `{settings.image_ref}`"
    try:
        log("--- :docker: check image")
        digest = image_digest(settings, env)
        if digest is not None:
            ref = f"{settings.image_ref}@{digest}" if digest else settings.image_ref
            log(f"image {ref} already exists: skipping the build")
            annotate(
                f"{heading} already exists (`{digest or 'digest not given'}`): build skipped.\n", "info", env, note
            )
            upload_artifacts([note], env)
            agent(["meta-data", "set", "vllm-ci-image", ref], env)
            return 0
        log(f"image {settings.image_ref} not found: building")
        log("--- :docker: build")
        run_cli("build", settings.build_args(str(report)), env, out / "error.json")
        data = json.loads(report.read_text())
        body = render_annotation(data)
    except StepFailed as failed:
        log("^^^ +++")
        log(f"vllm-ci-step: error: {failed.phase}: {redactor(env)(failed.message)}")
        log("--- :buildkite: report")
        annotate(f"{heading} failed in phase **{failed.phase}**: {failed.message}\n", "error", env, note)
        upload_artifacts([report, note], env)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as err:
        log("^^^ +++")
        log(f"vllm-ci-step: error: build: no readable report at {report}: {err}")
        return 1
    except Interrupted as cancel:  # cancelled: no annotation or upload, the agent kills what outlives its grace
        log("^^^ +++")
        log(f"vllm-ci-step: error: {cancel}")
        return 128 + cancel.signum
    log("--- :buildkite: report")
    log(redactor(env)(body))
    annotate(body, report_style(data), env, note)
    upload_artifacts([report, note], env)
    agent(["meta-data", "set", "vllm-ci-image", str(data.get("image") or settings.image_ref)], env)
    return 0


def main() -> None:
    """Entry point of ``ci/buildkite-step``."""
    Cancel.install()
    try:
        code = run(dict(os.environ))
    except Interrupted as cancel:  # before the first phase or after the last
        log(f"vllm-ci-step: error: {cancel}")
        code = 128 + cancel.signum
    sys.exit(code)


if __name__ == "__main__":
    main()
