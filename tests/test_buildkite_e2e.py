"""The Buildkite step end to end: `bk local run` of .buildkite/pipeline.yml with the real agent, on the
real engine and registries, against a direct client-mode call of the same command (laptop = CI).

Each job runs in a git checkout of this working tree (a throwaway repository: `bk local run` reads the
branch and commit from it), with its own HOME so that its artifacts land in a known place. bk forwards
only HOME, PATH and `--env` to the agent; a registry password comes from an agent `environment` hook
that reads a root-only file, as on a real agent, never from bk's command line.

Run with the engine lock held: flock /tmp/vllm-ci-engine.lock .venv/bin/python -m pytest tests/test_buildkite_e2e.py
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from conftest import REGISTRY, REPO, edit, example_flags, git, vllm_source
from local_registry import LocalRegistry, RegistryAPI
from stagecache.keys import KEY_LABEL, PREIMAGE_LABEL, STAGE_LABEL
from stagecache.why import INPUTS_SUFFIX

SOURCE = "examples/mini-vllm"  # what the pipeline sets VLLM_CI_SOURCE to
GROUP = ".buildkite/vllm-image-build.yaml"  # the drop-in for vLLM's image-build group, as a job would upload it
GROUPS = [
    "--- :docker: settings",
    "--- :docker: check image",
    "--- :docker: build",
    "--- :buildkite: report",
]
# Off for the secrets test: the agent blanks values of *_PASSWORD variables in the job log itself,
# which would hide a leak of ours. With this, the log shows exactly what the step printed.
NO_AGENT_REDACTION = {"BUILDKITE_REDACTED_VARS": "VLLM_CI_TEST_REDACTS_NOTHING"}
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def tools(engine: None) -> None:
    """The real bk and buildkite-agent (ci/install-buildkite), and the engine and registry (ci/up)."""
    missing = [tool for tool in ("bk", "buildkite-agent", "htpasswd") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"not on PATH: {', '.join(missing)}: run ci/up (ci/install-buildkite)")


@pytest.fixture(scope="module", autouse=True)
def timings() -> object:
    """Print how long each job and call took, at the end of the module."""
    yield
    for name, seconds in TIMINGS.items():
        print(f"e2e timing: {name}: {seconds:.1f} s")


@pytest.fixture
def homes() -> object:
    """A short directory for the jobs' HOMEs: the agent's job-api socket lives under HOME, and a unix
    socket path longer than 108 bytes (pytest's tmp_path makes one) fails the job before it starts."""
    root = Path(tempfile.mkdtemp(prefix="bk-e2e-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@dataclasses.dataclass
class Job:
    """One `bk local run`: its exit status, its job log (markers stripped) and its artifacts by name."""

    returncode: int
    log: str
    artifacts: dict[str, Path]

    def lines(self) -> list[str]:
        """The job log's lines, without the blank ones the agent's line endings leave."""
        return [line for line in self.log.splitlines() if line.strip()]

    def calls(self) -> list[list[str]]:
        """The arguments of each `python -m vllm_ci ...` call the step logged."""
        prefix = "$ python -m vllm_ci "
        return [shlex.split(line[len(prefix) :]) for line in self.lines() if line.startswith(prefix)]

    def call(self, function: str) -> list[str]:
        """The arguments of the `python -m vllm_ci ... FUNCTION ...` call the step logged."""
        (found,) = [args for args in self.calls() if function in args]
        return found

    def error_line(self) -> str:
        """The step's one error line, right after a `^^^ +++` (the build's live view may open one
        for the failing stage before it, and the agent one after it)."""
        lines = self.lines()
        after = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == "^^^ +++"]
        return next((line for line in after if line.startswith("vllm-ci-step: ")), after[0])


def make_checkout(root: Path) -> Path:
    """A git repository holding this working tree (committed and not), on branch main."""
    checkout = root / "checkout"
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():  # deleted-but-tracked files are listed too
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name)
    # The example's docker/Dockerfile is upstream's, placed by ci/up and never committed here; a vLLM
    # checkout has its own committed, as this one now does.
    dockerfile = Path("examples/mini-vllm/docker/Dockerfile")
    shutil.copy2(REPO / dockerfile, checkout / dockerfile)
    git(checkout, "init", "-q", "-b", "main")
    return commit(checkout, "snapshot of the working tree")


def commit(checkout: Path, message: str) -> Path:
    """Commit everything in the checkout."""
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "--allow-empty", "-m", message)
    return checkout


def head(checkout: Path) -> str:
    """The checkout's commit sha."""
    return git(checkout, "rev-parse", "HEAD")


def bk_run(checkout: Path, home: Path, env: dict[str, str], name: str, pipeline: str = "", path: str = "") -> Job:
    """`bk local run` of the checkout's pipeline (or another file of it) with the given agent environment; HOME is
    a fresh directory; ``path`` goes first on the PATH the jobs run with (bk's own: its --env does not set PATH)."""
    home.mkdir(parents=True)
    agent_env = {"VLLM_CI_PYTHON": sys.executable, **env}
    started = time.monotonic()
    done = subprocess.run(
        ["bk", "local", "run", *(f"--env={k}={v}" for k, v in agent_env.items()), *([pipeline] if pipeline else [])],
        cwd=checkout,
        env={"PATH": f"{path}:{os.environ['PATH']}" if path else os.environ["PATH"], "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    TIMINGS[name] = time.monotonic() - started
    # The agent marks each line with a timestamp (ESC _bk;t=... BEL), colours some and ends them with CR CR LF.
    log = re.sub(r"\x1b_bk;t=\d+\x07|\x1b\[[0-9;]*m|\r", "", done.stdout + done.stderr)
    artifacts = {p.name: p for p in (home / ".buildkite" / "local" / "artifacts").glob("*/*") if p.is_file()}
    return Job(done.returncode, log, artifacts)


def laptop_call(
    checkout: Path,
    report: Path,
    image: str,
    cache_to: str,
    cache_from: list[str],
    name: str,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[list[str], dict]:
    """A developer's direct client-mode call in the checkout: `python -P -m vllm_ci $(flags) -o R build ...`."""
    args = [
        *example_flags(),
        "-o",
        str(report),
        "build",
        "--source",
        SOURCE,
        "--image",
        image,
        "--cache-to",
        cache_to,
        *(arg for repo in cache_from for arg in ("--cache-from", repo)),  # besides its own, read first anyway
        *(extra or []),
    ]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-P", "-m", "vllm_ci", *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )
    TIMINGS[name] = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    return args, json.loads(report.read_text())


def same_call_but_output_and_image(args: list[str]) -> list[str]:
    """A call with the values of `-o` and `--image` blanked: what may differ between two runs of it."""
    out = list(args)
    for flag in ("-o", "--image"):
        out[out.index(flag) + 1] = f"<{flag.strip('-')}>"
    return out


def digest_of(image: str) -> str:
    """The digest part of a report's `ref@digest`."""
    return image.rsplit("@", 1)[1]


def test_bk_local_run_pushes_the_image_a_laptop_call_pushes_and_a_rerun_skips(tmp_path: Path, homes: Path) -> None:
    checkout = make_checkout(tmp_path)
    sha = head(checkout)
    namespace = f"e2e-{uuid.uuid4().hex[:10]}"
    registry = f"{REGISTRY}/{namespace}"
    local = RegistryAPI(REGISTRY)
    cache = f"{registry}/cache-main"  # branch main: reads and writes main's cache

    # A developer builds first, from cold: the cache now holds every stage.
    _, cold = laptop_call(
        checkout, tmp_path / "cold.json", f"{registry}/test:laptop-cold", cache, [], "laptop call, cold"
    )

    # CI: the pipeline's step in a Buildkite job.
    ci = bk_run(checkout, homes / "home-1", {"VLLM_CI_REGISTRY": registry}, "bk local run, build")
    assert ci.returncode == 0, ci.log
    assert [line for line in ci.lines() if line.startswith("--- ")] == GROUPS
    assert "^^^ +++" not in ci.log
    ci_report = json.loads((checkout / "vllm-ci-out" / "report.json").read_text())
    assert json.loads(ci.artifacts["report.json"].read_text()) == ci_report
    assert {"report.json", "annotation.md"} <= set(ci.artifacts)
    annotation = ci.artifacts["annotation.md"].read_text()
    assert ci_report["image"] in annotation and "| test | hit |" in annotation
    assert ci_report["image"].startswith(f"{registry}/test:{sha}@sha256:")

    # The same developer call again, after CI, in the same cache state: only the image ref differs.
    laptop_args, laptop = laptop_call(
        checkout, tmp_path / "laptop.json", f"{registry}/test:laptop", cache, [], "laptop call, warm"
    )
    ci_args = ci.call("build")
    assert ci_args[ci_args.index("--image") + 1] == f"{registry}/test:{sha}"
    assert same_call_but_output_and_image(ci_args) == same_call_but_output_and_image(laptop_args)
    assert ci.call("build")[: len(example_flags())] == example_flags()  # the example's constructor flags
    assert not any("plan" in args for args in ci.calls())  # one CLI call: the build plans itself, once

    ci_digest, laptop_digest = digest_of(ci_report["image"]), digest_of(laptop["image"])
    print(
        f"e2e digest: CI {ci_report['image']}\ne2e digest: laptop {laptop['image']}\ne2e digest: laptop, cold {cold['image']}"
    )
    assert local.digest(f"{namespace}/test", sha) == ci_digest
    assert local.digest(f"{namespace}/test", "laptop") == laptop_digest
    assert ci_digest == laptop_digest  # laptop = CI
    assert {s["stage"]: s["outcome"] for s in ci_report["stages"]} == {
        s["stage"]: s["outcome"] for s in laptop["stages"]
    }
    # Built from cold or imported from the cache, the filesystem is the same, layer for layer.
    assert local.layers(f"{namespace}/test", "laptop-cold") == local.layers(f"{namespace}/test", sha)

    # A second job for the same commit finds the image and skips.
    again = bk_run(checkout, homes / "home-2", {"VLLM_CI_REGISTRY": registry}, "bk local run, skip")
    assert again.returncode == 0, again.log
    assert f"image {registry}/test:{sha}@{ci_digest} already exists: skipping the build" in again.lines()
    assert "$ python -m vllm_ci" not in again.log
    assert "build skipped" in again.artifacts["annotation.md"].read_text()
    assert local.digest(f"{namespace}/test", sha) == ci_digest


def traces(username: str, password: str) -> set[str]:
    """The forms a leaked password would take: itself, in a basic-auth header, base64, URL-quoted, hex."""
    return {
        password,
        base64.b64encode(f"{username}:{password}".encode()).decode(),
        base64.b64encode(password.encode()).decode().rstrip("="),
        urllib.parse.quote(password, safe=""),
        password.encode().hex(),
    }


def password_hook(root: Path, username: str, password: str) -> tuple[Path, Path]:
    """An agent hooks directory whose `environment` hook exports the credentials from a root-only file."""
    secret_dir, hooks = root / "secrets", root / "hooks"
    secret_dir.mkdir(mode=0o700)
    hooks.mkdir()
    secret = secret_dir / "registry-password"
    secret.touch(mode=0o600)
    secret.write_text(password)
    hook = hooks / "environment"
    hook.write_text(f"""#!/bin/bash
set -euo pipefail
export VLLM_CI_REGISTRY_USERNAME={shlex.quote(username)}
VLLM_CI_REGISTRY_PASSWORD=$(cat {shlex.quote(str(secret))})
export VLLM_CI_REGISTRY_PASSWORD
""")
    hook.chmod(0o755)
    return hooks, secret


def test_a_registry_password_in_the_agent_environment_leaves_no_trace(tmp_path: Path, homes: Path) -> None:
    username, password = "ci-bot", "pw-" + secrets.token_urlsafe(24)
    checkout = make_checkout(tmp_path)
    hooks, secret = password_hook(tmp_path, username, password)
    with LocalRegistry(tmp_path / "auth-registry", username, password) as registry:
        env = {"VLLM_CI_REGISTRY": f"{registry.addr}/vllm-ci", "BUILDKITE_HOOKS_PATH": str(hooks), **NO_AGENT_REDACTION}
        first = bk_run(checkout, homes / "home-1", env, "bk local run, auth registry, cold")
        assert first.returncode == 0, first.log
        assert "VLLM_CI_REGISTRY_PASSWORD added" in first.log  # the hook ran
        assert f"registry    user {username}, password from VLLM_CI_REGISTRY_PASSWORD" in first.lines()
        first_report = json.loads(first.artifacts["report.json"].read_text())
        assert {s["outcome"] for s in first_report["stages"]} == {"exported"}  # every stage exported, with the password

        # A new commit that does not touch the example: the stage cache is read back through the password.
        (checkout / "README.md").write_text((checkout / "README.md").read_text() + "\nA change outside the image.\n")
        commit(checkout, "touch the README")
        second = bk_run(checkout, homes / "home-2", env, "bk local run, auth registry, warm")
        assert second.returncode == 0, second.log
        second_report = json.loads(second.artifacts["report.json"].read_text())
        outcomes = {s["stage"]: s["outcome"] for s in second_report["stages"]}
        assert outcomes["test"] == "hit" and not {"exported", "built"} & set(outcomes.values()), outcomes
        assert next(s for s in second_report["stages"] if s["stage"] == "test")["ref"].startswith(
            f"{registry.addr}/vllm-ci/cache-main:"
        )
        # Without the password, the registry gives nothing away: every push and pull above was authenticated.
        assert registry.head_status("vllm-ci/test", head(checkout), anonymous=True) == 401
        assert registry.digest("vllm-ci/test", head(checkout)) == digest_of(second_report["image"])

        # Every image in the registry, the test images and the cache images: manifests, configs, labels.
        texts: dict[str, str] = {"job log 1": first.log, "job log 2": second.log}
        assert set(registry.repositories()) == {"vllm-ci/test", "vllm-ci/cache-main"}
        stages_seen = set()
        for repository in registry.repositories():
            for tag in registry.tags(repository):
                texts[f"{repository}:{tag} manifest"] = registry.manifest_raw(repository, tag).decode()
                texts[f"{repository}:{tag} config"] = registry.config_raw(repository, tag).decode()
                if tag.endswith(INPUTS_SUFFIX):  # an entry's input manifest (paths and digests), no image
                    continue
                labels = registry.config(repository, tag)["config"].get("Labels") or {}
                assert {KEY_LABEL, STAGE_LABEL, PREIMAGE_LABEL} <= set(labels)
                stages_seen.add(labels[STAGE_LABEL])
                texts.update({f"{repository}:{tag} label {k}": f"{k}={v}" for k, v in labels.items()})
        assert stages_seen == set(outcomes)
        # The annotation bodies, reports and plans (artifacts), and whatever else the jobs left behind.
        for job, home in ((first, homes / "home-1"), (second, homes / "home-2")):
            assert {"report.json", "annotation.md"} <= set(job.artifacts)
            for path in home.rglob("*"):
                if path.is_file():
                    texts[str(path)] = path.read_text(errors="replace")
        for path in (checkout / "vllm-ci-out").iterdir():
            texts[str(path)] = path.read_text()
        assert "| test | hit |" in second.artifacts["annotation.md"].read_text()
        leaks = sorted(where for where, text in texts.items() for trace in traces(username, password) if trace in text)
        assert leaks == []

        # A wrong password: the login phase fails in one line, naming neither password.
        wrong = "pw-" + secrets.token_urlsafe(24)
        secret.write_text(wrong)
        refused = bk_run(checkout, homes / "home-3", env, "bk local run, wrong password")
        assert refused.returncode != 0
        print(f"e2e error line (wrong password): {refused.error_line()}")
        assert (
            refused.error_line()
            == f"vllm-ci-step: error: login: registry {registry.addr} refused the credentials (HTTP 401)"
        )
        assert "failed in phase **login**" in refused.artifacts["annotation.md"].read_text()
        assert not [t for t in traces(username, password) | traces(username, wrong) if t in refused.log]


@pytest.mark.parametrize(
    ("case", "phase"),
    [
        ("missing source", "usage"),  # the CLI refuses it, exit 2, before any work
        ("missing base image", "build"),
        ("read-only registry", "push"),
        ("read-only registry, strict", "export"),
    ],
)
def test_a_failure_of_the_real_cli_names_its_phase_in_one_line(
    tmp_path: Path, homes: Path, case: str, phase: str
) -> None:
    checkout = make_checkout(tmp_path)
    env = {"VLLM_CI_REGISTRY": f"{REGISTRY}/e2e-{uuid.uuid4().hex[:10]}"}
    registry = None
    if case == "missing source":
        env["VLLM_CI_SOURCE"] = "examples/absent"
    elif case == "missing base image":
        env["VLLM_CI_FLAGS"] = (
            f"--build-arg=BUILD_BASE_IMAGE={REGISTRY}/library/absent:none"  # after the args file: it wins
        )
    else:
        registry = LocalRegistry(tmp_path / "read-only-registry", readonly=True).start()
        env["VLLM_CI_REGISTRY"] = f"{registry.addr}/vllm-ci"
        if case.endswith("strict"):
            env["VLLM_CI_CACHE_STRICT"] = "1"
    try:
        job = bk_run(checkout, homes / "home", env, f"bk local run, {case}")
    finally:
        if registry:
            registry.stop()
    assert job.returncode != 0
    assert "The command exited with status 1" in job.log  # 1, not 255 or -1: no automatic retry
    line = job.error_line()
    print(f"e2e error line ({case}): {line}")
    assert line.startswith(f"vllm-ci-step: error: {phase}: ") and len(line.splitlines()) == 1, line
    assert f"failed in phase **{phase}**" in job.artifacts["annotation.md"].read_text()


# vLLM's image-build group (.buildkite/image_build/image_build.yaml) through bk, offline: both images built and
# tagged as upstream's scripts tag them, the smoke test as upstream writes it (through ci/docker-shim), then a
# Python-only commit through the same group.


def group_env(registry: str, namespace: str, sha: str, docker_config: Path) -> dict[str, str]:
    """What vLLM's pipeline sets for the group on main (the upload interpolates it), the example's flags, and the
    agent's docker login (DOCKER_CONFIG, as `docker login` leaves it)."""
    image = f"{registry}/{namespace}/vllm-ci-test-repo"
    return {
        "REGISTRY": f"{registry}/{namespace}",  # upstream's has a path too (public.ecr.aws/q9t5s3a7)
        "REPO": "vllm-ci-test-repo",
        "BRANCH": "main",
        "IMAGE_TAG": f"{image}:{sha}",
        "IMAGE_TAG_LATEST": f"{image}:latest",
        "VLLM_CI_SOURCE": SOURCE,
        "VLLM_CI_ARGS_FILE": f"{SOURCE}/vllm-ci.args",
        "VLLM_CI_CPU_ARGS_FILE": f"{SOURCE}/vllm-ci-cpu.args",
        # What the agent needs to reach this machine's engine, and the registry on its loopback from the module.
        "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///run/dagger/engine.sock",
        "DAGGER_NO_UPDATE_CHECK": "1",
        "DAGGER_NO_NAG": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CI_REGISTRY_SERVICE": f"tcp://{registry}",
        "DOCKER_CONFIG": str(docker_config),
        **NO_AGENT_REDACTION,
    }


def docker_login(directory: Path, registry: str, username: str, password: str) -> Path:
    """A docker config folder holding a login for the registry, as `docker login` writes one without a store."""
    directory.mkdir(mode=0o700, exist_ok=True)
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return directory


def reports(home: Path) -> dict[str, dict]:
    """The jobs' uploaded report.json artifacts, by the image each names."""
    found = [json.loads(p.read_text()) for p in (home / ".buildkite" / "local" / "artifacts").rglob("report.json")]
    return {r["image"].split("@")[0]: r for r in found}


def annotations(home: Path) -> list[str]:
    """The jobs' uploaded annotation.md artifacts (our per-stage report, one a job)."""
    return [p.read_text() for p in (home / ".buildkite" / "local" / "artifacts").rglob("annotation.md")]


def megabytes(text: str) -> float:
    """A size as the report writes it (`12 B`, `3.4 kB`, `5.6 MB`, `1.2 GB`), in MB."""
    number, unit = text.split()
    return float(number) * {"B": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3}[unit]


def vllm_checkout(root: Path, group: str) -> Path:
    """A checkout as vLLM's agent has one: the example tree (its Dockerfiles as ci/up places them) and the drop-in
    group, and nothing of this repository."""
    checkout = root / "vllm-checkout"
    outputs = {REPO / SOURCE / "build", REPO / SOURCE / "dist"}  # the top-level build outputs only

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(folder, n) in outputs or n == "__pycache__" or n.endswith(".egg-info")]

    shutil.copytree(REPO / SOURCE, checkout / SOURCE, ignore=ignore)
    (checkout / GROUP).parent.mkdir(parents=True)
    (checkout / GROUP).write_text(group)
    git(checkout, "init", "-q", "-b", "main")
    return commit(checkout, "vLLM's tree with the drop-in")


def test_bk_local_run_of_the_group_pushes_upstreams_tags_passes_the_smoke_test_rebuilds_a_python_change_and_leaves_no_trace_of_the_login(
    tmp_path: Path,
    homes: Path,  # noqa: F811
) -> None:
    from git_server import GitServer

    # The module as another repository uses it: this working tree's commit, served over git, pinned by the drop-in.
    module_commit = git(REPO, "rev-parse", "HEAD")
    upstream_group = vllm_source() / ".buildkite" / "image_build" / "image_build.yaml"
    username, password = "ci-bot", "pw-" + secrets.token_urlsafe(24)
    with GitServer() as server, LocalRegistry(tmp_path / "auth-registry", username, password) as registry:
        module = f"{server.publish(REPO, 'vllm-ci.git')}@{module_commit}"
        drop_in = subprocess.run(
            [sys.executable, "-P", "-m", "vllm_ci.group_pipeline", "--module", module, str(upstream_group)],
            capture_output=True,
            text=True,
            check=True,
        )
        checkout = vllm_checkout(tmp_path, drop_in.stdout)
        sha = head(checkout)
        assert not (checkout / "ci" / "buildkite-step").exists() and not (checkout / "src").exists()
        namespace = f"e2e-group-{uuid.uuid4().hex[:10]}"
        repo = f"{namespace}/vllm-ci-test-repo"
        shim = str(REPO / "ci" / "docker-shim")  # the machine's `docker` (none here), not the checkout's
        # The agent's docker login for the registry the group pushes to (one that refuses anonymous access).
        config = docker_login(tmp_path / "docker", registry.addr, username, password)

        env = group_env(registry.addr, namespace, sha, config)
        first = bk_run(checkout, homes / "home-1", env, "group, first", GROUP, shim)
        assert first.returncode == 0, first.log
        assert f"load module: {module}" in first.log  # dagger loaded the pinned module, the step nothing of ours
        assert registry.digest(repo, "latest") == registry.digest(repo, sha) is not None  # on main: IMAGE_TAG_LATEST
        assert registry.digest(repo, f"{sha}-cpu") is not None
        assert "non-root invariants OK" in first.lines()  # upstream's smoke test, against our image
        assert set(reports(homes / "home-1")) == {f"{registry.addr}/{repo}:{sha}", f"{registry.addr}/{repo}:{sha}-cpu"}

        # A Python-only commit through the same group: a new image, its heavy stages from the cache.
        edit(checkout / SOURCE / "vllm" / "layers.py", "CHANGED_BY_TEST = 1")
        changed = head(commit(checkout, "a Python-only change"))
        env = group_env(registry.addr, namespace, changed, config)
        second = bk_run(checkout, homes / "home-2", env, "group, python-only", GROUP, shim)
        assert second.returncode == 0, second.log
        assert registry.digest(repo, "latest") == registry.digest(repo, changed) != registry.digest(repo, sha)
        report = reports(homes / "home-2")[f"{registry.addr}/{repo}:{changed}"]
        outcomes = {s["stage"]: s["outcome"] for s in report["stages"]}
        assert {outcomes[s] for s in ("base", "csrc-build", "test-deps") if s in outcomes} <= {"hit", "unused"}
        assert "non-root invariants OK" in second.lines()
        # Its annotation says what a test agent holding main's previous `latest` pulls to run it (the layers it
        # lacks): a few file layers, none of the heavy ones. (What the build pulled is measured at the registry's
        # log, which the module's container cannot read: not in group-job's report.)
        (note,) = [a for a in annotations(homes / "home-2") if f":{changed}@" in a]
        agent = re.search(rf"holding `{repo}:latest` \(`(sha256:[0-9a-f]+)`\) pulls \*\*([0-9.]+ k?[MG]?B)\*\*", note)
        assert agent, note
        assert agent[1] == registry.digest(repo, sha)  # held: the first commit's image, read before latest moved
        assert megabytes(agent[2]) < 5, agent[2]  # the example's base image alone is ~450 MB
        assert not (checkout / "ci").exists()  # nothing of this repository reached the agent's checkout

        # Every push and pull went with the docker login, and it is nowhere: the job logs, the artifacts and what
        # the jobs left, every manifest, config and label in the registry.
        assert registry.head_status(repo, changed, anonymous=True) == 401
        texts = {"job log 1": first.log, "job log 2": second.log}
        for home in (homes / "home-1", homes / "home-2"):
            texts |= {str(p): p.read_text(errors="replace") for p in home.rglob("*") if p.is_file()}
        texts |= {str(p): p.read_text(errors="replace") for p in (checkout / "vllm-ci-out").rglob("*") if p.is_file()}
        for repository in registry.repositories():
            for tag in registry.tags(repository):
                texts[f"{repository}:{tag} manifest"] = registry.manifest_raw(repository, tag).decode()
                texts[f"{repository}:{tag} config"] = registry.config_raw(repository, tag).decode()
        assert len(texts) > 20
        assert sorted(where for where, text in texts.items() for t in traces(username, password) if t in text) == []

        # A wrong password: the build job fails at the login, in one line, naming neither password.
        wrong = "pw-" + secrets.token_urlsafe(24)
        docker_login(config, registry.addr, username, wrong)
        refused = bk_run(checkout, homes / "home-3", env, "group, wrong password", GROUP, shim)
    assert refused.returncode != 0
    said = f"login: registry {registry.addr} refused the credentials (HTTP 401)"
    assert f"Error: FunctionError: {said}" in refused.log, refused.log[-3000:]
    assert not [t for t in traces(username, password) | traces(username, wrong) if t in refused.log]
