"""Helpers shared by the mini-vllm tests."""

import shutil
import subprocess
from typing import List, Sequence


def assert_allclose(actual: Sequence[float], expected: Sequence[float], tol: float = 1e-9) -> None:
    """Assert two float sequences have equal length and match within tol."""
    assert len(actual) == len(expected), (actual, expected)
    for a, e in zip(actual, expected):
        assert abs(a - e) <= tol, (actual, expected)


def run_vllm(args: List[str]) -> subprocess.CompletedProcess:
    """Run the installed `vllm` console script and capture its output."""
    exe = shutil.which("vllm")
    assert exe is not None, "the `vllm` console script is not on PATH"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
