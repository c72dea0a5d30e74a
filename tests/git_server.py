"""A smart-HTTP git server on loopback port 80, for loading the module from a git URL.

`git http-backend` runs as a CGI behind Python's http.server. Dagger v0.18.19's module-ref parser
drops a URL's port, so the server must listen on 80. http.server runs CGI scripts as `nobody` when
started as root; git then refuses a repository it does not own unless safe.directory says so,
which the CGI script sets for itself. Started and stopped by its pid."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

PORT = 80
CGI = """#!/bin/sh
export GIT_PROJECT_ROOT={root} GIT_HTTP_EXPORT_ALL=1
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'
exec /usr/lib/git-core/git-http-backend
"""


class GitServer:
    """Serves bare repositories at http://127.0.0.1/cgi-bin/git/<name>, from a folder of its own
    under /tmp that the CGI's user can traverse (pytest's tmp_path is private to root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vllm-ci-git-"))
        self.repos = self.dir / "repos"
        self.pid: int | None = None

    def publish(self, checkout: Path, name: str) -> str:
        """A bare clone of a checkout, served; returns its URL."""
        subprocess.run(["git", "clone", "-q", "--bare", str(checkout), str(self.repos / name)], check=True, timeout=120)
        for path in [self.repos / name, *(self.repos / name).rglob("*")]:
            path.chmod(path.stat().st_mode | 0o555)  # readable by the CGI's user
        return f"http://127.0.0.1/cgi-bin/git/{name}"

    def start(self) -> GitServer:
        """Write the CGI script, start http.server, wait until it answers."""
        cgi_bin = self.dir / "cgi-bin"
        cgi_bin.mkdir(parents=True, exist_ok=True)
        self.repos.mkdir(exist_ok=True)
        script = cgi_bin / "git"
        script.write_text(CGI.format(root=self.repos))
        script.chmod(0o755)
        self.dir.chmod(0o755)
        with open(self.dir / "server.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "http.server", "--cgi", "--bind", "127.0.0.1", str(PORT)],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.pid = proc.pid
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid = None
                raise RuntimeError(f"http.server exited with {proc.returncode}; is port {PORT} taken?")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=2).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the git server did not answer on port {PORT} within 15 s")

    def stop(self) -> None:
        """Stop the server this object started, by its pid, and remove its folder."""
        if self.pid is not None:
            pid, self.pid = self.pid, None
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
