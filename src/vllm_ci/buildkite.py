"""Buildkite glue, pure logic: agent environment -> image ref, cache repositories, CLI arguments.

Nothing here talks to Dagger, a registry or the agent; ``buildkite_step`` does the I/O (the one file
read here is ``VLLM_CI_ARGS_FILE``, the constructor flags).
The registry password is never read into these values: the CLI gets ``env:VLLM_CI_REGISTRY_PASSWORD``
(and the private-index netrc ``env:VLLM_CI_INDEX_NETRC``).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagecache.report import BuildReport

PASSWORD_VAR = "VLLM_CI_REGISTRY_PASSWORD"
ARGS_FILE_VAR = "VLLM_CI_ARGS_FILE"  # constructor flags, one per line (as examples/mini-vllm/vllm-ci.args)
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # sccache's S3 keys, passed on as secrets
INDEX_NETRC_VAR = "VLLM_CI_INDEX_NETRC"  # a netrc file's text: the private package indexes' credentials
SECRET_VARS = (PASSWORD_VAR, *AWS_VARS, INDEX_NETRC_VAR)
DEFAULT_NAMESPACE = "vllm-ci"
MAX_NAME = 128
MAIN_CACHE = "cache-main"
ANNOTATION_CONTEXT = "vllm-ci-image"

_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?|\[[0-9A-Fa-f:]+\](:[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*")
_SHA = re.compile(r"[0-9a-f]{7,64}")
_TRUE = frozenset({"1", "true", "yes", "on"})


class SettingsError(ValueError):
    """A missing or invalid Buildkite/vllm-ci setting, described in one line."""


def sanitise_tag(value: str) -> str:
    """Map a string onto a valid tag: ``[A-Za-z0-9._-]``, no leading ``.``/``-``, at most 128 characters."""
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", value).lstrip(".-")[:MAX_NAME]
    return tag or "_"


def sanitise_component(value: str, limit: int = MAX_NAME) -> str:
    """Map a string onto a valid OCI repository path component (lower-case), at most ``limit`` characters."""
    low = value.lower()
    name = re.sub(r"[^a-z0-9]+", lambda m: m[0] if re.fullmatch(r"\.|_|__|-+", m[0]) else "-", low)
    name = name[:limit].strip("._-")
    return name or "x"


def _branch_cache(branch: str) -> str:
    """Cache repository name of a non-main branch; lossy or reserved names get a hash suffix."""
    digest = hashlib.sha256(branch.encode()).hexdigest()[:8]
    clean = sanitise_component(branch, MAX_NAME - len("cache-"))
    if clean == branch and clean != "main" and not re.fullmatch(r"pr-[0-9]+", clean):
        return f"cache-{clean}"
    stem = sanitise_component(branch, MAX_NAME - len("cache-") - len(digest) - 1)
    return f"cache-{stem}-{digest}"


def _registry(value: str) -> str:
    """Validate ``host[:port][/namespace...]``; a bare host gets the default namespace."""
    value = value.strip().rstrip("/")
    if not value:
        raise SettingsError("VLLM_CI_REGISTRY is not set (expected host[:port]/namespace, e.g. 127.0.0.1:5000/vllm-ci)")
    if "://" in value:
        raise SettingsError(f"VLLM_CI_REGISTRY must not have a scheme: {value!r} (expected host[:port]/namespace)")
    host, _, path = value.partition("/")
    if not _HOST.fullmatch(host):
        raise SettingsError(f"VLLM_CI_REGISTRY has an invalid host: {host!r}")
    parts = path.split("/") if path else [DEFAULT_NAMESPACE]
    bad = [p for p in parts if not _PATH_COMPONENT.fullmatch(p)]
    if bad:
        raise SettingsError(
            f"VLLM_CI_REGISTRY has an invalid repository path component {bad[0]!r} (lower-case [a-z0-9._-])"
        )
    return "/".join([host, *parts])


def _constructor_flags(env: Mapping[str, str]) -> tuple[str, ...]:
    """Constructor flags: ``VLLM_CI_ARGS_FILE``'s lines (one argument each, as ``mapfile -t`` reads them;
    empty lines skipped), then ``VLLM_CI_FLAGS`` split as shell words."""
    flags: list[str] = []
    path = env.get(ARGS_FILE_VAR, "").strip()
    if path:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
            raise SettingsError(f"{ARGS_FILE_VAR}: cannot read {path!r}: {reason}") from None
        flags += [line for line in text.splitlines() if line]
    try:
        flags += shlex.split(env.get("VLLM_CI_FLAGS", ""))
    except ValueError as err:
        raise SettingsError(f"VLLM_CI_FLAGS is not valid shell words: {err}") from None
    if any(f == "--output" or f.startswith(("-o", "--output=")) for f in flags):
        raise SettingsError(f"VLLM_CI_FLAGS and {ARGS_FILE_VAR} must not set the output: the step writes report.json")
    return tuple(flags)


def _pull_request(value: str) -> int | None:
    """Parse ``BUILDKITE_PULL_REQUEST``: ``false``/empty is no PR, else a positive number."""
    value = value.strip()
    if value in ("", "false"):
        return None
    if not value.isdigit() or int(value) <= 0:
        raise SettingsError(f"BUILDKITE_PULL_REQUEST must be 'false' or a PR number, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class StepSettings:
    """What the image-build step builds, where it reads and writes its cache, and with which credentials."""

    registry: str
    commit: str
    branch: str
    pull_request: int | None
    base_branch: str | None
    main_branch: str
    source: str
    username: str | None
    has_password: bool
    has_aws_keys: bool
    has_index_netrc: bool
    cache_strict: bool
    verbose: bool
    flags: tuple[str, ...]
    out_dir: str
    image: str = (
        ""  # the image to publish, when the caller names it (vLLM's group: $IMAGE_TAG); else image_ref's default
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StepSettings:
        """Read the settings from an agent environment; raise ``SettingsError`` on a missing or bad one."""
        commit = env.get("BUILDKITE_COMMIT", "").strip().lower()
        if not _SHA.fullmatch(commit):
            raise SettingsError(f"BUILDKITE_COMMIT must be a commit sha (7-64 hex digits), got {commit or 'nothing'!r}")
        branch = env.get("BUILDKITE_BRANCH", "").strip()
        if not branch:
            raise SettingsError("BUILDKITE_BRANCH is not set")
        username = env.get("VLLM_CI_REGISTRY_USERNAME", "").strip() or None
        has_password = bool(env.get(PASSWORD_VAR, ""))
        if has_password != bool(username):
            have, lack = (
                ("VLLM_CI_REGISTRY_USERNAME", PASSWORD_VAR) if username else (PASSWORD_VAR, "VLLM_CI_REGISTRY_USERNAME")
            )
            raise SettingsError(f"{have} is set but {lack} is not: set both or neither")
        has_aws_keys = all(env.get(v) for v in AWS_VARS)
        if not has_aws_keys and any(env.get(v) for v in AWS_VARS):
            raise SettingsError(f"only one of {' and '.join(AWS_VARS)} is set: set both or neither")
        flags = _constructor_flags(env)
        return cls(
            registry=_registry(env.get("VLLM_CI_REGISTRY", "")),
            commit=commit,
            branch=branch,
            pull_request=_pull_request(env.get("BUILDKITE_PULL_REQUEST", "false")),
            base_branch=env.get("BUILDKITE_PULL_REQUEST_BASE_BRANCH", "").strip() or None,
            main_branch=env.get("VLLM_CI_MAIN_BRANCH", "").strip() or "main",
            source=env.get("VLLM_CI_SOURCE", "").strip() or ".",
            username=username,
            has_password=has_password,
            has_aws_keys=has_aws_keys,
            has_index_netrc=bool(env.get(INDEX_NETRC_VAR, "").strip()),
            cache_strict=env.get("VLLM_CI_CACHE_STRICT", "").strip().lower() in _TRUE,
            verbose=env.get("VLLM_CI_VERBOSE", "").strip().lower() in _TRUE,
            flags=flags,
            out_dir=env.get("VLLM_CI_OUT", "").strip() or "vllm-ci-out",
        )

    @property
    def image_repo(self) -> str:
        """Repository the test image is published to."""
        return f"{self.registry}/test"

    @property
    def tag(self) -> str:
        """Image tag: the commit sha."""
        return sanitise_tag(self.commit)

    @property
    def image_ref(self) -> str:
        """Full image reference: the one given, else ``registry/namespace/test:<commit>``."""
        return self.image or f"{self.image_repo}:{self.tag}"

    def cache_repo(self, branch: str) -> str:
        """Cache repository of a branch: main's is ``cache-main``, others ``cache-<sanitised branch>``."""
        name = MAIN_CACHE if branch == self.main_branch else _branch_cache(branch)
        return f"{self.registry}/{name}"

    @property
    def cache_to(self) -> str:
        """The one cache repository this build writes: its PR's, else its branch's (main's only on main)."""
        if self.pull_request is not None:
            return f"{self.registry}/cache-pr-{self.pull_request}"
        return self.cache_repo(self.branch)

    @property
    def cache_from(self) -> tuple[str, ...]:
        """Cache repositories read besides its own, in order: the PR's base branch, main; without repeats.
        That a build reads its own first is the cache's rule (stagecache.refs.read_order), not said here."""
        repos = [self.cache_repo(self.base_branch)] if self.pull_request is not None and self.base_branch else []
        repos.append(self.cache_repo(self.main_branch))
        return tuple(repo for repo in dict.fromkeys(repos) if repo != self.cache_to)

    def _global_args(self, output: str) -> list[str]:
        """Constructor flags (``VLLM_CI_ARGS_FILE``, ``VLLM_CI_FLAGS``), ``-o`` and ``-v``: before the function name."""
        return [*self.flags, "-o", output, *(["-v"] if self.verbose else [])]

    def _auth_args(self) -> list[str]:
        """Registry credential flags; the password only as an ``env:`` reference."""
        if not self.username:
            return []
        return ["--registry-username", self.username, "--registry-password", f"env:{PASSWORD_VAR}"]

    def build_args(self, output: str) -> list[str]:
        """Arguments of ``python -m vllm_ci`` for the build and publish; secrets only as ``env:`` references."""
        args = [
            *self._global_args(output),
            "build",
            "--source",
            self.source,
            "--image",
            self.image_ref,
            "--cache-to",
            self.cache_to,
            *(arg for repo in self.cache_from for arg in ("--cache-from", repo)),  # one flag each: no list to split
            *self._auth_args(),
        ]
        if self.has_aws_keys:
            args += ["--aws-access-key-id", f"env:{AWS_VARS[0]}", "--aws-secret-access-key", f"env:{AWS_VARS[1]}"]
        if self.has_index_netrc:
            args += ["--index-netrc", f"env:{INDEX_NETRC_VAR}"]
        if self.cache_strict:
            args.append("--cache-strict")
        return args


def failure_phase(command: str, failure: Mapping[str, Any] | None) -> str:
    """The failed phase: the one the CLI's error named (its StageError's phase, in the CLI's error file,
    vllm_ci.entry.ERROR_FILE_VAR), else the command that failed (a CLI that died before saying)."""
    return str(failure.get("phase") or command) if failure else command


def report_style(report: Mapping[str, Any]) -> str:
    """Annotation style: ``success`` if every stage was cached or exported, else ``warning``."""
    outcomes = {s.get("outcome") for s in report.get("stages", [])}
    return "success" if outcomes <= {"hit", "exported"} else "warning"


def render_annotation(report: Mapping[str, Any]) -> str:
    """The annotation body: a heading naming the image, then the report as markdown (report.py's
    one renderer: the same units and columns as the log's table)."""
    parsed = BuildReport.from_dict(dict(report))
    return f"**:docker: test image** `{parsed.image or '-'}`\n\n{parsed.markdown()}\n"
