"""A second local OCI registry that demands a password: Debian's docker-registry with htpasswd auth,
plain http on a free loopback port, storage in a given directory. Started and stopped by pid.

    with AuthRegistry(tmp_dir, "bot", password) as registry:
        registry.addr        # "127.0.0.1:PORT"

The password reaches htpasswd on its stdin, never on a command line.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

DOCKER_REGISTRY = "/usr/bin/docker-registry"
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AuthRegistry:
    """docker-registry with htpasswd auth in ``directory`` (config, htpasswd, data, log)."""

    def __init__(self, directory: Path, username: str, password: str, port: int | None = None) -> None:
        self.dir, self.username, self.password = Path(directory), username, password
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = self.dir / "registry.log"
        self.pid: int | None = None

    def start(self) -> AuthRegistry:
        """Write htpasswd and config, start the registry in its own session, wait until it answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        htpasswd = self.dir / "htpasswd"
        line = subprocess.run(["htpasswd", "-iBn", self.username], input=self.password, capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        htpasswd.write_text(line + "\n")
        htpasswd.chmod(0o600)
        config = self.dir / "config.yml"
        config.write_text(f"""version: 0.1
log:
  level: info
  formatter: json
storage:
  filesystem:
    rootdirectory: {self.dir / 'data'}
  delete:
    enabled: true
http:
  addr: {self.addr}
auth:
  htpasswd:
    realm: vllm-ci-test
    path: {htpasswd}
""")
        with open(self.log, "ab") as log:
            proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        self.pid = proc.pid
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {proc.returncode}; read {self.log}")
            if self.status(anonymous=True) == 401:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.addr} within 15 s; read {self.log}")

    def stop(self) -> None:
        """Stop the registry this object started (by its pid), and wait for it to go."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def __enter__(self) -> AuthRegistry:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- the distribution API, with the credentials --------------------------------------------

    def _request(self, path: str, method: str = "GET", accept: str = "", anonymous: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One request; (status, headers, body), errors included."""
        req = urllib.request.Request(f"http://{self.addr}{path}", method=method)
        if accept:
            req.add_header("Accept", accept)
        if not anonymous:
            pair = f"{self.username}:{self.password}".encode()
            req.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()
        except (urllib.error.URLError, OSError):
            return 0, {}, b""

    def status(self, anonymous: bool = False) -> int:
        """The status of ``GET /v2/`` (0 when nothing answers)."""
        return self._request("/v2/", anonymous=anonymous)[0]

    def json(self, path: str, accept: str = "") -> Any:
        """GET a JSON document with the credentials."""
        status, _, body = self._request(path, accept=accept)
        assert status == 200, f"GET {path}: HTTP {status}"
        return json.loads(body)

    def digest(self, repository: str, reference: str) -> str | None:
        """HEAD a manifest: its digest, or None when it does not exist."""
        status, headers, _ = self._request(f"/v2/{repository}/manifests/{reference}", "HEAD", MANIFEST_TYPES)
        if status == 404:
            return None
        assert status == 200, f"HEAD {repository}:{reference}: HTTP {status}"
        return headers.get("Docker-Content-Digest")

    def repositories(self) -> list[str]:
        """Every repository in the registry."""
        return self.json("/v2/_catalog?n=1000").get("repositories") or []

    def tags(self, repository: str) -> list[str]:
        """Every tag of a repository."""
        return self.json(f"/v2/{repository}/tags/list?n=1000").get("tags") or []

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        """A manifest."""
        return self.json(f"/v2/{repository}/manifests/{reference}", MANIFEST_TYPES)

    def config_blob(self, repository: str, reference: str) -> bytes:
        """The raw image configuration blob of a tag (labels, env, history: everything but the layers)."""
        digest = self.manifest(repository, reference)["config"]["digest"]
        status, _, body = self._request(f"/v2/{repository}/blobs/{digest}")
        assert status == 200, f"GET config {repository}@{digest}: HTTP {status}"
        return body
