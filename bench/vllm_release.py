"""vLLM's real source, the release this port follows (vllm_ci.release pins it): the sdist on the package
index, fetched by pinned version and sha256, cached by that hash, never committed. The conformance tests
read its Dockerfile, the bench builds it with BuildKit, ci/up places it in the example; none of this is
the package's. The index is pip's own (PIP_INDEX_URL, or pip's default); git helpers for tagged checkouts."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import tarfile
import urllib.request

from pip._internal.models.index import PyPI  # pip's default index, so no host name is written here

from vllm_ci.release import CACHE, UNPACKED, VLLM_SDIST_SHA256, VLLM_VERSION, unpacked_source


def _index() -> str:
    """The simple index pip uses here."""
    return os.environ.get("PIP_INDEX_URL", PyPI.simple_url).rstrip("/")


def vllm_sdist() -> pathlib.Path:
    """The vLLM sdist, verified against its pinned sha256; downloaded once per hash."""
    path = UNPACKED.with_name(f"{UNPACKED.name}.tar.gz")
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == VLLM_SDIST_SHA256:
        return path
    request = urllib.request.Request(f"{_index()}/vllm/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        files = json.load(response)["files"]
    url = next(f["url"] for f in files if f["filename"] == f"vllm-{VLLM_VERSION}.tar.gz")
    with urllib.request.urlopen(url, timeout=600) as response:
        blob = response.read()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != VLLM_SDIST_SHA256:
        raise RuntimeError(f"vllm-{VLLM_VERSION}.tar.gz has sha256 {digest}, pinned {VLLM_SDIST_SHA256}")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(blob)
    partial.rename(path)
    return path


def vllm_source() -> pathlib.Path:
    """The sdist unpacked (once per hash): vLLM's source tree as a checkout has it, less .git."""
    if (tree := unpacked_source()) is not None:
        return tree
    with tarfile.open(vllm_sdist()) as archive:
        archive.extractall(UNPACKED, filter="data")
    (UNPACKED / ".complete").touch()
    return UNPACKED / f"vllm-{VLLM_VERSION}"


def git(checkout: pathlib.Path, *args: str, date: str | None = None) -> str:
    """Run git in a checkout with a fixed identity (and, given one, a fixed date: the same tree then
    gives the same commits in every copy); its output."""
    command = ["git", "-C", str(checkout), "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", *args]
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else None
    return subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout.strip()


def tagged_checkout(root: pathlib.Path, date: str | None = None) -> pathlib.Path:
    """A folder made a git checkout one commit past the release's tag, as a vLLM PR branch is past a release."""
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "release", date=date)
    git(root, "tag", f"v{VLLM_VERSION}")
    (root / "CHANGES").write_text("a PR's commit\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a PR's commit", date=date)
    return root


# The Dockerfiles the bundled example builds, as the pinned release has them.
DOCKERFILES = ("Dockerfile", "Dockerfile.cpu")


def place_dockerfiles(folder: pathlib.Path) -> None:
    """Copy the pinned release's docker/Dockerfile and docker/Dockerfile.cpu into folder (the bundled
    example's docker/), each only if it differs."""
    for name in DOCKERFILES:
        text = (vllm_source() / "docker" / name).read_bytes()
        target = folder / name
        if not target.exists() or target.read_bytes() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["dockerfiles"] or len(sys.argv) != 3:
        sys.exit("usage: bench/vllm_release.py dockerfiles FOLDER")
    place_dockerfiles(pathlib.Path(sys.argv[2]))
