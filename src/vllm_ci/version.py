"""The version vLLM's setup.py derives from a checkout's .git, derived on the host.

Upstream's stages `build` and `rust-build` bind .git and let setuptools-scm run `git describe`.
The upload leaves .git out (it is large, and no key may read its contents), so the client derives
the same version here, with the same library and upstream's own describe command, and the stages
hand it to setuptools-scm as SETUPTOOLS_SCM_PRETEND_VERSION. The version, not .git, is in their keys."""

from __future__ import annotations

import os
import pathlib
from unittest import mock

from vllm_ci.errors import UsageError

# setup.py's and tools/build_rust.py's VLLM_GIT_DESCRIBE_COMMAND (vLLM 0.33.0).
VLLM_GIT_DESCRIBE_COMMAND = ["git", "describe", "--dirty", "--tags", "--long", "--abbrev=40", "--match", "v[0-9]*"]
# rust-build's RUN sets this: the relinked binaries carry the commit's version, dirty or not.
CLEAN_METADATA = "{dirty=false}"


def git_versions(checkout: pathlib.Path) -> tuple[str, str]:
    """(build's version, rust-build's version: the tree taken as clean) as setuptools-scm derives them
    from the checkout's .git; ("", "") when the folder is not the root of a git checkout."""
    if not (checkout / ".git").exists():
        return "", ""
    from setuptools_scm import get_version  # imported only on the host, where a checkout is read

    def derive() -> str:
        """setup.py's get_version() on this checkout."""
        return get_version(root=str(checkout), scm={"git": {"describe_command": VLLM_GIT_DESCRIBE_COMMAND}})

    try:
        version = derive()
        with mock.patch.dict(os.environ, {"SETUPTOOLS_SCM_PRETEND_METADATA": CLEAN_METADATA}):
            return version, derive()
    except (LookupError, OSError) as error:
        why = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UsageError(f"--source: setuptools-scm derives no version from {checkout}/.git ({why})") from None


if __name__ == "__main__":  # the flags for `dagger call`, which cannot read the host's .git itself
    import sys

    build_version, clean_version = git_versions(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print(f"--git-version={build_version} --git-version-clean={clean_version}")
