"""Build mini-vllm: compile csrc/ with CMake, or reuse a precompiled _C from a wheel."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools_scm import get_version

ROOT = Path(__file__).parent.resolve()
EXT_RE = re.compile(r"^vllm/_C[^/]*\.so$")
# vLLM's VLLM_GIT_DESCRIBE_COMMAND: release tags only.
VLLM_GIT_DESCRIBE_COMMAND = ["git", "describe", "--dirty", "--tags", "--long", "--abbrev=40", "--match", "v[0-9]*"]


def load_module_from_path(name: str, path: Path) -> ModuleType:
    """Load a module by path without importing the vllm package (as vLLM's setup.py does)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


envs = load_module_from_path("vllm_envs", ROOT / "vllm" / "envs.py")
rust_build = load_module_from_path("rust_build", ROOT / "tools" / "build_rust.py")


class CMakeExtension(Extension):
    """An extension whose sources are built by CMake rather than setuptools."""

    def __init__(self, name: str) -> None:
        """Create an extension with no setuptools-managed sources."""
        super().__init__(name, sources=[])


class cmake_build_ext(build_ext):
    """build_ext that runs CMake, or copies _C out of a precompiled wheel."""

    def build_extension(self, ext: Extension) -> None:
        """Produce the extension file at the path setuptools expects."""
        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        if envs.VLLM_USE_PRECOMPILED:
            self.copy_precompiled(target)
        else:
            self.run_cmake(target)
        if not target.exists():
            raise RuntimeError(f"extension was not produced at {target}")

    def copy_precompiled(self, target: Path) -> None:
        """Extract vllm/_C*.so from VLLM_PRECOMPILED_WHEEL_LOCATION into target."""
        wheel = envs.VLLM_PRECOMPILED_WHEEL_LOCATION
        if not wheel or not Path(wheel).is_file():
            raise RuntimeError("VLLM_USE_PRECOMPILED=1 needs VLLM_PRECOMPILED_WHEEL_LOCATION=<wheel path>")
        print(f"using precompiled extension from {wheel}", flush=True)
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if EXT_RE.match(n)]
            if len(members) != 1:
                raise RuntimeError(f"expected one vllm/_C*.so in {wheel}, found {members}")
            if Path(members[0]).name != target.name:
                raise RuntimeError(f"{members[0]} does not match this interpreter ({target.name})")
            with zf.open(members[0]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        target.chmod(0o755)

    def run_cmake(self, target: Path) -> None:
        """Configure and build csrc/ with CMake, writing the module next to target."""
        build_dir = Path(self.build_temp).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_BUILD_TYPE={envs.CMAKE_BUILD_TYPE}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DVLLM_PYTHON_OUTPUT_DIR={target.parent}",
        ]
        if shutil.which("ccache"):
            args.append("-DCMAKE_C_COMPILER_LAUNCHER=ccache")
        if envs.VERBOSE:
            args.append("-DCMAKE_VERBOSE_MAKEFILE=ON")
        jobs = envs.MAX_JOBS or str(os.cpu_count() or 1)
        subprocess.check_call(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args])
        subprocess.check_call(["cmake", "--build", str(build_dir), "--parallel", jobs])


def get_vllm_version() -> str:
    """As vLLM's setup.py: setuptools-scm's version (written to vllm/_version.py), with the target's
    suffix; outside git and with no pretend version, pyproject's fallback_version."""
    fallback = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools_scm"]["fallback_version"]
    version = get_version(
        root=str(ROOT),
        write_to="vllm/_version.py",
        git_describe_command=VLLM_GIT_DESCRIBE_COMMAND,
        fallback_version=fallback,
    )
    sep = "+" if "+" not in version else "."  # dev versions might contain +
    if envs.VLLM_TARGET_DEVICE == "empty":
        version += f"{sep}empty"
    return version


ext_modules = [] if envs.VLLM_TARGET_DEVICE == "empty" else [CMakeExtension("vllm._C")]

# The Rust frontend, when rust-build put it into the tree (vLLM's setup.py ships it as-is).
package_data = {"vllm": ["vllm-rs"]} if (ROOT / "vllm" / "vllm-rs").exists() else {}

setup(
    version=get_vllm_version(),
    ext_modules=ext_modules,
    cmdclass={"build_ext": cmake_build_ext},
    package_data=package_data,
)
