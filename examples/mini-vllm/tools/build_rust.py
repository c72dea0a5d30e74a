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


def version() -> str:
    """The version the binary reports: setuptools-scm's pretend version when one is set."""
    return os.environ.get("SETUPTOOLS_SCM_PRETEND_VERSION") or "unknown"


def main(profile: str) -> None:
    """Build rust/ and install vllm/vllm-rs."""
    release = profile != "--debug"
    target = ROOT / "rust" / "target"
    command = ["cargo", "build", "--locked", "--manifest-path", str(ROOT / "rust" / "Cargo.toml"), "--target-dir", str(target)]
    subprocess.run(command + (["--release"] if release else []), check=True, env={**os.environ, "VLLM_RS_VERSION": version()})
    built = target / ("release" if release else "debug") / "vllm-rs"
    (ROOT / "vllm").mkdir(exist_ok=True)
    shutil.copy2(built, ROOT / "vllm" / "vllm-rs")
    print(f"installed {ROOT / 'vllm' / 'vllm-rs'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "--release")
