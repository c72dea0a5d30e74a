"""The stand-ins the Buildkite step tests run ci/buildkite-step with: a CLI package, an agent and a registry
(test_buildkite_step.py, test_buildkite_group.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"
PASSWORD = "pw-Xy7-never-shown"
DIGEST = "sha256:" + "b" * 64

# Stands in for the lead's CLI: echoes its arguments, fails when FAKE_FAIL says so, writes a report.
FAKE_MAIN = r"""
import json, os, sys
args = sys.argv[1:]
print("fake vllm-ci", " ".join(args), "password-env-is", os.environ.get("VLLM_CI_REGISTRY_PASSWORD"))
out = args[args.index("-o") + 1]
command = "build" if "build" in args else "plan"
if os.environ.get("FAKE_HANG") == command:  # a long build: a SIGTERM ends it as the real CLI does
    import signal, time
    def terminated(signum, frame):
        with open(os.environ["FAKE_SIGNALS"], "a") as seen:
            seen.write(f"{signum}\n")
        print("vllm-ci: error: terminated", file=sys.stderr, flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, terminated)
    print("fake vllm-ci building", flush=True)
    time.sleep(60)
    sys.exit(0)
if os.environ.get("FAKE_FAIL") == command:  # the line, and the error file with its phase, as cli.fail writes them
    print(f"vllm-ci: error: {os.environ['FAKE_ERROR']}", file=sys.stderr)
    record = {"phase": os.environ.get("FAKE_PHASE", "build"), "exit_code": 1, "message": os.environ["FAKE_ERROR"]}
    open(os.environ["VLLM_CI_ERROR_FILE"], "w").write(json.dumps(record))
    sys.exit(255)
if command == "build":
    image = args[args.index("--image") + 1]
    json.dump({"target": "test", "image": image + "@" + os.environ["FAKE_DIGEST"], "total_seconds": 3.0, "stages": [
        {"stage": "base", "key": "k", "outcome": "hit", "ref": "127.0.0.1:5000/r:base-k", "build_seconds": 0.1,
         "export_seconds": 0, "bytes_pushed": None, "bytes_pulled": 5}]}, open(out, "w"))
else:
    json.dump({"stages": []}, open(out, "w"))
"""

FAKE_AGENT = """#!/bin/sh
[ -n "$FAKE_AGENT_SLEEP" ] && sleep "$FAKE_AGENT_SLEEP"
{ echo "ARGS $*"; [ "$1" = annotate ] && cat; echo END; } >>"$FAKE_AGENT_LOG"
"""


class Registry(BaseHTTPRequestHandler):
    """Answers manifest HEADs: 200 for tags in ``existing``, else 404; records Authorization headers."""

    existing: set[str] = set()
    auth: list[str] = []
    bearer = False  # ask for a token first, as Docker Hub or GHCR do
    refuse = False  # the token service refuses the credentials

    def do_GET(self):  # noqa: N802
        """The token service: hands out "tok" to the basic-auth user bot."""
        Registry.auth.append(self.headers.get("Authorization", ""))
        body = json.dumps({"token": "tok"}).encode()
        self.send_response(401 if Registry.refuse else 200 if "scope=repository" in self.path else 400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        """One manifest HEAD."""
        Registry.auth.append(self.headers.get("Authorization", ""))
        if Registry.bearer and self.headers.get("Authorization") != "Bearer tok":
            self.send_response(401)
            realm = f"http://127.0.0.1:{self.server.server_port}/token"
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="reg",scope="repository:x:pull"')
            self.end_headers()
            return
        if self.path.rsplit(":", 1)[-1] in Registry.existing or self.path.rsplit("/", 1)[-1] in Registry.existing:
            self.send_response(200)
            self.send_header("Docker-Content-Digest", DIGEST)
        else:
            self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        """Quiet."""


@pytest.fixture
def world(tmp_path):
    """A checkout-like directory, a fake CLI package, a fake agent and a stub registry."""
    repo = tmp_path / "repo"
    pkg = repo / "src" / "vllm_ci"
    pkg.mkdir(parents=True)
    (repo / "ci").mkdir()
    shutil.copy(REPO / "ci" / "buildkite-step", repo / "ci" / "buildkite-step")
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_MAIN)
    for name in ("buildkite.py", "buildkite_step.py", "hostgit.py", "entry.py"):
        shutil.copy(REPO / "src" / "vllm_ci" / name, pkg / name)
    shutil.copytree(REPO / "src" / "stagecache", repo / "src" / "stagecache")  # the registry client the step uses
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "buildkite-agent").write_text(FAKE_AGENT)
    (bindir / "buildkite-agent").chmod(0o755)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Registry.existing, Registry.auth, Registry.bearer, Registry.refuse = set(), [], False, False
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "VLLM_CI_PYTHON": sys.executable,
        "BUILDKITE_BRANCH": "feature/x",
        "BUILDKITE_PULL_REQUEST": "false",
        "BUILDKITE_COMMIT": SHA,
        "VLLM_CI_REGISTRY": f"127.0.0.1:{server.server_port}/vllm-ci",
        "FAKE_DIGEST": DIGEST,
        "FAKE_AGENT_LOG": str(tmp_path / "agent.log"),
    }
    yield work, {**env, "STEP": str(repo / "ci" / "buildkite-step")}, tmp_path / "agent.log"
    server.shutdown()


def cancelled(command: list[str], work: Path, env: dict) -> tuple[int, list[str]]:
    """Run a step until the stand-in CLI builds, then SIGTERM its process group as the agent cancels a job:
    the exit code and every line printed."""
    with subprocess.Popen(
        command,
        cwd=work,
        env={**env, "FAKE_HANG": "build"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as run:
        assert run.stdout is not None
        seen = []
        for line in run.stdout:
            seen.append(line)
            if line.startswith("fake vllm-ci building"):
                break
        os.killpg(run.pid, signal.SIGTERM)
        rest = run.communicate(timeout=60)[0]
    return run.returncode, ("".join(seen) + rest).splitlines()
