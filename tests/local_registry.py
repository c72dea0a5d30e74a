"""Throwaway local OCI registries for the end-to-end tests, and a small client of the distribution API.

``LocalRegistry`` is Debian's docker-registry on a free loopback port (plain http), storage in a
given directory, optionally demanding a password (htpasswd) or refusing writes (read-only
maintenance mode). Started and stopped by its pid:

    with LocalRegistry(tmp_dir, username="bot", password=pw) as registry:
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


class RegistryAPI:
    """The distribution API of a plain-http registry, with basic credentials when given."""

    def __init__(self, addr: str, username: str = "", password: str = "") -> None:
        self.addr, self.username, self.password = addr, username, password

    def _request(self, path: str, method: str = "GET", accept: str = "", anonymous: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One request: (status, headers, body), error statuses included; status 0 when nothing answers."""
        req = urllib.request.Request(f"http://{self.addr}{path}", method=method)
        if accept:
            req.add_header("Accept", accept)
        if self.username and not anonymous:
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
        """The status of ``GET /v2/``."""
        return self._request("/v2/", anonymous=anonymous)[0]

    def raw(self, path: str, accept: str = "") -> bytes:
        """GET a document; fails the test on anything but 200."""
        status, _, body = self._request(path, accept=accept)
        assert status == 200, f"GET {self.addr}{path}: HTTP {status}"
        return body

    def digest(self, repository: str, reference: str, anonymous: bool = False) -> str | None:
        """HEAD a manifest: its digest, or None when it does not exist."""
        status, headers, _ = self._request(f"/v2/{repository}/manifests/{reference}", "HEAD", MANIFEST_TYPES, anonymous)
        if status == 404:
            return None
        assert status == 200, f"HEAD {self.addr}/{repository}:{reference}: HTTP {status}"
        return headers.get("Docker-Content-Digest")

    def head_status(self, repository: str, reference: str, anonymous: bool = False) -> int:
        """The status of a manifest HEAD."""
        return self._request(f"/v2/{repository}/manifests/{reference}", "HEAD", MANIFEST_TYPES, anonymous)[0]

    def repositories(self) -> list[str]:
        """Every repository in the registry."""
        return json.loads(self.raw("/v2/_catalog?n=1000")).get("repositories") or []

    def tags(self, repository: str) -> list[str]:
        """Every tag of a repository."""
        return json.loads(self.raw(f"/v2/{repository}/tags/list?n=1000")).get("tags") or []

    def manifest_raw(self, repository: str, reference: str) -> bytes:
        """A manifest as the registry stores it."""
        return self.raw(f"/v2/{repository}/manifests/{reference}", MANIFEST_TYPES)

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        """A manifest."""
        return json.loads(self.manifest_raw(repository, reference))

    def config_raw(self, repository: str, reference: str) -> bytes:
        """The image configuration blob of a tag, raw (labels, env, history: all but the layers)."""
        return self.raw(f"/v2/{repository}/blobs/{self.manifest(repository, reference)['config']['digest']}")

    def config(self, repository: str, reference: str) -> dict[str, Any]:
        """The image configuration of a tag."""
        return json.loads(self.config_raw(repository, reference))

    def layers(self, repository: str, reference: str) -> list[str]:
        """The layer digests of a tag, in order."""
        return [layer["digest"] for layer in self.manifest(repository, reference)["layers"]]


class LocalRegistry(RegistryAPI):
    """docker-registry in ``directory`` (config, htpasswd, data, log), started and stopped by this object."""

    def __init__(self, directory: Path, username: str = "", password: str = "", readonly: bool = False) -> None:
        super().__init__(f"127.0.0.1:{free_port()}", username, password)
        self.dir, self.readonly = Path(directory), readonly
        self.log = self.dir / "registry.log"
        self.pid: int | None = None

    def _config(self) -> str:
        """The registry's configuration."""
        text = f"""version: 0.1
log:
  level: info
  formatter: json
storage:
  filesystem:
    rootdirectory: {self.dir / 'data'}
  delete:
    enabled: true
  maintenance:
    readonly:
      enabled: {'true' if self.readonly else 'false'}
http:
  addr: {self.addr}
"""
        if self.username:
            htpasswd = self.dir / "htpasswd"
            line = subprocess.run(["htpasswd", "-iBn", self.username], input=self.password, capture_output=True,
                                  text=True, check=True, timeout=30).stdout.strip()
            htpasswd.write_text(line + "\n")
            htpasswd.chmod(0o600)
            text += f"auth:\n  htpasswd:\n    realm: vllm-ci-test\n    path: {htpasswd}\n"
        return text

    def start(self) -> LocalRegistry:
        """Write the configuration, start the registry in its own session, wait until it answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.yml"
        config.write_text(self._config())
        with open(self.log, "ab") as log:
            proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        self.pid = proc.pid
        ready = 401 if self.username else 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid = None
                raise RuntimeError(f"docker-registry exited with {proc.returncode}; read {self.log}")
            if self.status(anonymous=True) == ready:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.addr} within 15 s; read {self.log}")

    def stop(self) -> None:
        """Stop the registry this object started (by its pid) and reap it."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
