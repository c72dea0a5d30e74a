"""ci/buildkite-step end to end with a stand-in CLI, registry and agent: skip, success, failure, secrets."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from buildkite_fakes import DIGEST, PASSWORD, REPO, SHA, Registry, cancelled


def step(work: Path, env: dict) -> subprocess.CompletedProcess:
    """Run the copied ci/buildkite-step (its checkout's src/ is the fake package) in the work directory."""
    return subprocess.run([env["STEP"]], cwd=work, env=env, capture_output=True, text=True, timeout=60)


def test_a_successful_build_logs_groups_annotates_uploads_and_passes_the_image_on(world):
    work, env, agent_log = world
    done = step(work, env)
    assert done.returncode == 0, done.stdout + done.stderr
    groups = [line for line in done.stdout.splitlines() if line.startswith("--- ")]
    assert groups == [
        "--- :docker: settings",
        "--- :docker: check image",
        "--- :docker: build",
        "--- :buildkite: report",
    ]
    calls = agent_log.read_text()
    assert "ARGS annotate --context vllm-ci-image --style success" in calls
    assert "| base | hit | r:base-k | 0.1 | 0.0 | 5 B | - |  |" in calls
    assert "ARGS artifact upload vllm-ci-out/report.json;vllm-ci-out/annotation.md" in calls
    assert done.stdout.count("fake vllm-ci ") == 1  # one CLI run: the build plans itself, once
    assert (work / "vllm-ci-out/annotation.md").read_text() in calls  # the annotation body, kept as an artifact
    assert "-o vllm-ci-out/report.json build --source ." in done.stdout
    assert "ARGS meta-data set vllm-ci-image 127.0.0.1:" in calls and f"/vllm-ci/test:{SHA}@{DIGEST}" in calls
    assert json.loads((work / "vllm-ci-out/report.json").read_text())["stages"][0]["outcome"] == "hit"


def test_an_existing_image_is_skipped_with_exit_0_in_the_log_and_the_annotation(world):
    work, env, agent_log = world
    Registry.existing.add(SHA)
    done = step(work, env)
    assert done.returncode == 0
    assert "already exists: skipping the build" in done.stdout
    assert "fake vllm-ci" not in done.stdout
    calls = agent_log.read_text()
    assert "--style info" in calls and "build skipped" in calls
    assert f"/vllm-ci/test:{SHA}@{DIGEST}" in calls


@pytest.mark.parametrize(
    ("failing", "error", "phase"),
    [
        ("build", "plan: cannot read Dockerfile", "plan"),
        ("build", "push: registry answered 500", "push"),
        ("build", "export: registry 127.0.0.1:5000 unreachable (stage base)", "export"),
    ],
)
def test_a_failure_expands_the_log_names_the_phase_and_exits_1_not_255(world, failing, error, phase):
    work, env, agent_log = world
    done = step(work, {**env, "FAKE_FAIL": failing, "FAKE_ERROR": error, "FAKE_PHASE": phase})
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    at = lines.index("^^^ +++")
    assert lines[at + 1] == f"vllm-ci-step: error: {phase}: {error.removeprefix(phase + ': ')}"
    assert "--style error" in agent_log.read_text()


def test_a_cancel_is_forwarded_once_to_the_cli_and_the_step_ends_in_one_line_with_143_not_255(world, tmp_path):
    import signal

    work, env, agent_log = world
    signals = tmp_path / "signals"
    code, lines = cancelled([env["STEP"]], work, {**env, "FAKE_SIGNALS": str(signals)})
    assert code == 143, lines
    assert signals.read_text() == f"{int(signal.SIGTERM)}\n"  # the CLI got it once, from the step
    assert [line for line in lines if line.startswith("vllm-ci-step: error:")] == ["vllm-ci-step: error: terminated"]
    assert "vllm-ci: error: terminated" in lines  # the CLI's own line, streamed before it
    assert not agent_log.exists() or "annotate" not in agent_log.read_text()


def test_the_password_reaches_the_cli_only_through_its_environment_and_is_never_printed(world):
    work, env, agent_log = world
    env = {**env, "VLLM_CI_REGISTRY_USERNAME": "bot", "VLLM_CI_REGISTRY_PASSWORD": PASSWORD}
    done = step(work, {**env, "FAKE_FAIL": "build", "FAKE_ERROR": f"login failed for bot:{PASSWORD}"})
    assert done.returncode == 1
    assert "--registry-password env:VLLM_CI_REGISTRY_PASSWORD" in done.stdout
    assert "password-env-is [REDACTED]" in done.stdout  # the child had it; the log shows no trace
    for text in (done.stdout, done.stderr, agent_log.read_text()):
        assert PASSWORD not in text
    assert Registry.auth and all(a.startswith("Basic ") for a in Registry.auth)


def test_a_token_registry_is_asked_for_a_bearer_token_with_the_basic_credentials(world):
    work, env, _ = world
    Registry.existing.add(SHA)
    Registry.bearer = True
    done = step(work, {**env, "VLLM_CI_REGISTRY_USERNAME": "bot", "VLLM_CI_REGISTRY_PASSWORD": PASSWORD})
    assert done.returncode == 0, done.stdout
    assert "already exists: skipping the build" in done.stdout
    assert (
        Registry.auth[0].startswith("Basic ")
        and Registry.auth[1].startswith("Basic ")
        and Registry.auth[2] == "Bearer tok"
    )


def test_a_registry_refusing_the_credentials_fails_the_login_phase(world):
    work, env, _ = world
    Registry.bearer = Registry.refuse = True
    done = step(work, {**env, "VLLM_CI_REGISTRY_USERNAME": "bot", "VLLM_CI_REGISTRY_PASSWORD": PASSWORD})
    assert done.returncode == 1
    assert "vllm-ci-step: error: login: " in done.stdout and "fake vllm-ci" not in done.stdout
    assert PASSWORD not in done.stdout


def test_a_missing_agent_is_logged_and_a_silent_one_is_bounded(world):
    work, env, agent_log = world
    done = step(work, {**env, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0
    assert "buildkite-agent not found: skipping 'annotate --context'" in done.stdout
    done = step(work, {**env, "FAKE_AGENT_SLEEP": "30", "VLLM_CI_AGENT_TIMEOUT": "0.5"})
    assert done.returncode == 0
    assert "gave no answer within 0.5 s" in done.stdout


def test_a_missing_registry_setting_fails_with_one_line(world):
    work, env, _ = world
    del env["VLLM_CI_REGISTRY"]
    done = step(work, env)
    assert done.returncode == 1
    assert "vllm-ci-step: error: plan: VLLM_CI_REGISTRY is not set" in done.stdout


def test_the_step_imports_no_dagger():
    probe = "import sys, vllm_ci.buildkite_step; sys.exit('dagger' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env={"PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr or "importing the Buildkite step imported dagger"


def test_the_step_in_a_checkout_that_shadows_its_packages_runs_none_of_its_code_and_writes_nothing_there(world):
    work, env, agent_log = world
    markers = work.parent / "ran"
    markers.mkdir()
    # Every top-level module the step and the CLI it starts import, and Python's startup hooks, planted in the
    # checkout (the step's working directory), each leaving a marker when run; and a .git that names programs.
    for name in ("docker", "vllm_ci", "anyio", "stagecache", "httpx", "json", "shlex", "fnmatch", "signal"):
        (work / name).mkdir()
        for module in ("__init__", "__main__"):
            (work / name / f"{module}.py").write_text(f"open({str(markers / name)!r}, 'w').close()\n")
    for name in ("sitecustomize", "usercustomize", "re", "subprocess"):
        (work / f"{name}.py").write_text(f"open({str(markers / name)!r}, 'w').close()\n")
    git = ["git", "-C", str(work), "-c", "user.name=ci", "-c", "user.email=ci@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "pr"], ["config", "core.fsmonitor", "./fsm"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    (work / "fsm").write_text(f"#!/bin/sh\ntouch {markers / 'fsmonitor'}\n")
    (work / "fsm").chmod(0o755)
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file() and p.name != "index"}
    env = {**env, "BUILDKITE_COMMIT": "HEAD", "VLLM_CI_OUT": str(work.parent / "out")}  # HEAD: the step runs git
    done = step(work, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "using the checkout's HEAD" in done.stdout and "fake vllm-ci" in done.stdout
    assert sorted(p.name for p in markers.iterdir()) == []
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file() and p.name != "index"} == before


def test_url_user_info_and_the_index_netrc_are_in_no_log_line_or_annotation(world):
    work, env, agent_log = world
    token, netrc_password = "tok-Qv9-never-shown", "netrc-Pw4-never-shown"
    url = f"https://bot:{token}@idx.example/simple"
    env = {
        **env,
        "VLLM_CI_FLAGS": f"--build-arg=PIP_INDEX_URL={url}",
        "VLLM_CI_INDEX_NETRC": f"machine idx.example login bot password {netrc_password}\n",
    }
    done = step(work, {**env, "FAKE_FAIL": "build", "FAKE_ERROR": f"pip could not reach {url} as bot {netrc_password}"})
    assert done.returncode == 1
    assert "--index-netrc env:VLLM_CI_INDEX_NETRC" in done.stdout  # the netrc reaches the CLI by name only
    assert "--build-arg=PIP_INDEX_URL=https://***@idx.example/simple" in done.stdout
    annotation = (work / "vllm-ci-out/annotation.md").read_text()
    assert "https://***@idx.example/simple" in annotation
    for text in (done.stdout, done.stderr, agent_log.read_text(), annotation):
        assert token not in text and netrc_password not in text


def checkout_sha(work: Path) -> str:
    """Make the work directory a git checkout with one commit; its sha."""
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_a_garbage_buildkite_commit_is_refused_in_one_line_not_replaced_by_head(world):
    work, env, _ = world
    checkout_sha(work)  # HEAD would resolve: the garbage must not be swapped for it
    done = step(work, {**env, "BUILDKITE_COMMIT": "main; echo x"})
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if "error" in line]
    assert errors == [
        "vllm-ci-step: error: plan: BUILDKITE_COMMIT must be a commit sha (7-64 hex digits), got 'main; echo x'"
    ]
    assert "using the checkout's HEAD" not in done.stdout and "fake vllm-ci" not in done.stdout


@pytest.mark.parametrize("commit", ["HEAD", ""], ids=["HEAD", "unset"])
def test_a_symbolic_buildkite_commit_builds_the_checkouts_sha_and_says_so(world, commit):
    work, env, _ = world
    sha = checkout_sha(work)
    done = step(work, {**env, "BUILDKITE_COMMIT": commit})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"BUILDKITE_COMMIT is {commit or 'unset'!r}: using the checkout's HEAD {sha}" in done.stdout
    assert f"/vllm-ci/test:{sha}" in done.stdout
