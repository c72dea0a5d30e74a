"""The version vLLM's setup.py derives from a checkout's .git (or, outside git, its PKG-INFO), derived on the host.

Upstream's stages `build` and `rust-build` bind .git and let setuptools-scm run `git describe`.
The upload leaves .git out (it is large, and no key may read its contents), so the client derives
the same version here, with the same library and upstream's own describe command, and the stages
hand it to setuptools-scm as SETUPTOOLS_SCM_PRETEND_VERSION. The version, not .git, is in their keys."""

from __future__ import annotations

import os
import pathlib
import tempfile
import tomllib
from unittest import mock

import dagger

from vllm_ci.errors import UsageError

# setup.py's and tools/build_rust.py's VLLM_GIT_DESCRIBE_COMMAND (vLLM 0.33.0).
VLLM_GIT_DESCRIBE_COMMAND = ["git", "describe", "--dirty", "--tags", "--long", "--abbrev=40", "--match", "v[0-9]*"]
# rust-build's RUN sets this: the relinked binaries carry the commit's version, dirty or not.
CLEAN_METADATA = "{dirty=false}"
# What setuptools-scm reads of a tree outside git: the project's settings (fallback_version), an sdist's PKG-INFO.
FALLBACK_FILES = ("pyproject.toml", "PKG-INFO")


def git_versions(checkout: pathlib.Path) -> tuple[str, str]:
    """(build's version, rust-build's version: the tree taken as clean) as setuptools-scm derives them
    for the checkout: from its .git, or outside git from what setuptools-scm falls back to (an sdist's
    PKG-INFO, the project's fallback_version); ("", "") when a folder outside git gives none."""
    from setuptools_scm import get_version  # imported only on the host, where a checkout is read

    def derive() -> str:
        """setup.py's get_version() on this checkout, with the project's own [tool.setuptools_scm]
        settings (vLLM's are empty: its presence enables setuptools-scm; the example's give a fallback)."""
        pyproject = checkout / "pyproject.toml"
        toml = tomllib.loads(pyproject.read_text()) if pyproject.is_file() else {}
        settings = toml.get("tool", {}).get("setuptools_scm", {})
        return get_version(root=str(checkout), scm={"git": {"describe_command": VLLM_GIT_DESCRIBE_COMMAND}}, **settings)

    try:
        version = derive()
        with mock.patch.dict(os.environ, {"SETUPTOOLS_SCM_PRETEND_METADATA": CLEAN_METADATA}):
            return version, derive()
    except (LookupError, OSError, ValueError) as error:
        if not (checkout / ".git").exists():
            return "", ""
        why = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UsageError(f"--source: setuptools-scm derives no version from {checkout}/.git ({why})") from None


async def source_versions(source: dagger.Directory) -> tuple[str, str]:
    """git_versions of an uploaded source, which has no .git: from the files setuptools-scm falls back to."""
    entries = await source.entries()
    with tempfile.TemporaryDirectory(prefix="vllm-ci-version-") as tmp:
        for name in FALLBACK_FILES:
            if name in entries:
                await source.file(name).export(f"{tmp}/{name}")
        return git_versions(pathlib.Path(tmp))


if __name__ == "__main__":  # the flags for `dagger call`, which cannot read the host's .git itself
    import sys

    build_version, clean_version = git_versions(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print(f"--git-version={build_version} --git-version-clean={clean_version}")
