"""Throwaway local OCI registries for the end-to-end tests, and a blocking facade over stagecache's registry client.

``LocalRegistry`` is Debian's docker-registry on a free loopback port (plain http), storage in a
given directory, optionally demanding a password (htpasswd) or refusing writes (read-only
maintenance mode). Started and stopped by its pid:

    with LocalRegistry(tmp_dir, username="bot", password=pw) as registry:
        registry.addr        # "127.0.0.1:PORT"

The password reaches htpasswd on its stdin, never on a command line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from anyio.from_thread import start_blocking_portal

from stagecache.registry import RegistryClient

DOCKER_REGISTRY = "/usr/bin/docker-registry"
T = TypeVar("T")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryAPI:
    """The distribution API of a plain-http registry, with basic credentials when given: a blocking
    facade over stagecache's RegistryClient, usable from sync tests and from inside an event loop."""

    def __init__(self, addr: str, username: str = "", password: str = "") -> None:
        self.addr, self.username, self.password = addr, username, password

    def _run(self, call: Callable[[RegistryClient], Awaitable[T]], anonymous: bool = False) -> T:
        """Run one call on a fresh client (anonymous: without the credentials) in a thread of its own, and wait."""

        async def session() -> T:
            """Open the client, make the call, close the client."""
            username = "" if anonymous else self.username
            async with RegistryClient(self.addr, username, self.password, timeout=10, attempts=1) as client:
                return await call(client)

        with start_blocking_portal() as portal:
            return portal.call(session)

    def status(self, anonymous: bool = False) -> int:
        """The status of ``GET /v2/`` (0 when nothing answers)."""
        return self._run(lambda client: client.status("GET", "/v2/"), anonymous)

    def digest(self, repository: str, reference: str, anonymous: bool = False) -> str | None:
        """HEAD a manifest: its digest, or None when it does not exist."""
        return self._run(lambda client: client.manifest_digest(repository, reference), anonymous)

    def head_status(self, repository: str, reference: str, anonymous: bool = False) -> int:
        """The status of a manifest HEAD."""
        return self._run(lambda client: client.status("HEAD", f"/v2/{repository}/manifests/{reference}"), anonymous)

    def repositories(self) -> list[str]:
        """Every repository in the registry."""
        return self._run(lambda client: client.repositories())

    def tags(self, repository: str) -> list[str]:
        """Every tag of a repository."""
        return self._run(lambda client: client.tags(repository))

    def manifest_raw(self, repository: str, reference: str) -> bytes:
        """A manifest as the registry stores it; fails the test when there is none."""
        found = self._run(lambda client: client.raw_manifest(repository, reference))
        assert found is not None, f"{self.addr}/{repository}:{reference}: no manifest"
        return found[0]

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        """A manifest."""
        return json.loads(self.manifest_raw(repository, reference))

    def blob(self, repository: str, digest: str) -> bytes:
        """A blob's bytes as the registry serves them."""
        return self._run(lambda client: client.blob(repository, digest))

    def config_raw(self, repository: str, reference: str) -> bytes:
        """The image configuration blob of a tag, raw (labels, env, history: all but the layers)."""
        return self.blob(repository, self.manifest(repository, reference)["config"]["digest"])

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
    rootdirectory: {self.dir / "data"}
  delete:
    enabled: true
  maintenance:
    readonly:
      enabled: {"true" if self.readonly else "false"}
http:
  addr: {self.addr}
"""
        if self.username:
            htpasswd = self.dir / "htpasswd"
            line = subprocess.run(
                ["htpasswd", "-iBn", self.username],
                input=self.password,
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.strip()
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
            proc = subprocess.Popen(
                [DOCKER_REGISTRY, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
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
