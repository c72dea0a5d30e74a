"""Environment variables read by mini-vllm (and by setup.py at build time)."""

import os
from typing import Any, Callable, Dict, List


def _flag(name: str) -> bool:
    """Return True if the env var is set to 1/true/yes."""
    return os.getenv(name, "0").strip().lower() in ("1", "true", "yes")


environment_variables: Dict[str, Callable[[], Any]] = {
    # Target device: "cuda", "cpu", or "empty" (build no extension at all).
    "VLLM_TARGET_DEVICE": lambda: os.getenv("VLLM_TARGET_DEVICE", "cuda").lower(),
    # Parallel compile jobs for the CMake build (default: all cores).
    "MAX_JOBS": lambda: os.getenv("MAX_JOBS") or None,
    # CMake build type for the extension.
    "CMAKE_BUILD_TYPE": lambda: os.getenv("CMAKE_BUILD_TYPE", "Release"),
    # Verbose CMake output.
    "VERBOSE": lambda: _flag("VERBOSE"),
    # Skip compiling; take vllm/_C*.so from VLLM_PRECOMPILED_WHEEL_LOCATION.
    "VLLM_USE_PRECOMPILED": lambda: _flag("VLLM_USE_PRECOMPILED"),
    "VLLM_PRECOMPILED_WHEEL_LOCATION": lambda: os.getenv("VLLM_PRECOMPILED_WHEEL_LOCATION") or None,
    # Model served by `vllm serve` when none is given.
    "VLLM_DEFAULT_MODEL": lambda: os.getenv("VLLM_DEFAULT_MODEL", "facebook/opt-125m"),
}


def __getattr__(name: str) -> Any:
    """Read an environment variable lazily, e.g. ``envs.MAX_JOBS``."""
    if name in environment_variables:
        return environment_variables[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    """List the supported environment variables."""
    return list(environment_variables)
