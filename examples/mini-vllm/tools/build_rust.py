"""The example's Rust frontend: what setup.py asks of it, and its build (run by tools/build_rust.sh).

vLLM's setup.py loads tools/build_rust.py by path, so csrc-build copies it in; this example keeps the
same contract. As a script it builds rust/ with cargo and installs the `vllm-rs` binary into vllm/."""

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def rust_py_extension_module_names() -> list[str]:
    """The Rust extension modules the wheel ships; this example has none, only the binary."""
    return []


# vLLM's VLLM_GIT_DESCRIBE_COMMAND: release tags only.
GIT_DESCRIBE_COMMAND = ["git", "describe", "--dirty", "--tags", "--long", "--abbrev=40", "--match", "v[0-9]*"]


def prepare_build_environment() -> str | None:
    """As vLLM's: VLLM_RS_BUILD_VERSION, else setuptools-scm's version of the checkout (a pretend one
    when set), else none, and the binary falls back to its crate version."""
    # Imported here: csrc-build loads this file by path, and its build requirements lack setuptools-scm.
    from setuptools_scm import get_version

    version = os.getenv("VLLM_RS_BUILD_VERSION") or None
    if version is None:
        try:
            version = get_version(root=ROOT, git_describe_command=GIT_DESCRIBE_COMMAND)
        except LookupError:
            return None
    os.environ["VLLM_RS_BUILD_VERSION"] = version
    return version


def main(profile: str) -> None:
    """Build rust/ and install vllm/vllm-rs."""
    release = profile != "--debug"
    target = ROOT / "rust" / "target"
    command = [
        "cargo",
        "build",
        "--locked",
        "--manifest-path",
        str(ROOT / "rust" / "Cargo.toml"),
        "--target-dir",
        str(target),
    ]
    prepare_build_environment()
    subprocess.run(command + (["--release"] if release else []), check=True)
    built = target / ("release" if release else "debug") / "vllm-rs"
    (ROOT / "vllm").mkdir(exist_ok=True)
    shutil.copy2(built, ROOT / "vllm" / "vllm-rs")
    print(f"installed {ROOT / 'vllm' / 'vllm-rs'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "--release")
