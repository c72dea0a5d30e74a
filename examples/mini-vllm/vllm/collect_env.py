"""Print a short environment report (python version, whether vllm._C loads)."""

import platform
import sys


def collect() -> dict:
    """Gather environment facts as a dict of strings."""
    info = {"python": platform.python_version(), "executable": sys.executable}
    try:
        from vllm import _C

        info["vllm._C"] = f"ok ({_C.version()})"
    except ImportError as exc:
        info["vllm._C"] = f"missing ({exc})"
    return info


def main() -> None:
    """Print the environment report."""
    for key, value in collect().items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
