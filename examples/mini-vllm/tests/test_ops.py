"""Tests for the compiled extension vllm._C."""

import math
from pathlib import Path

import pytest

import vllm


def test_extension_comes_from_installed_package(ops) -> None:
    """vllm and vllm._C resolve to the installed package, next to each other."""
    assert Path(ops.__file__).parent == Path(vllm.__file__).parent
    assert Path(ops.__file__).name.startswith("_C")


def test_add(ops) -> None:
    """add() returns the float sum."""
    assert ops.add(1, 2) == 3.0
    assert ops.add(-1.5, 0.25) == -1.25


def test_rms_norm_values(ops) -> None:
    """rms_norm() divides by the root mean square."""
    out = ops.rms_norm([3.0, 4.0], 0.0)
    rms = math.sqrt((9 + 16) / 2)
    assert out == pytest.approx([3 / rms, 4 / rms])


def test_rms_norm_rejects_bad_input(ops) -> None:
    """rms_norm() raises on empty or non-numeric input."""
    with pytest.raises(ValueError):
        ops.rms_norm([])
    with pytest.raises(TypeError):
        ops.rms_norm(["a"])


def test_version(ops) -> None:
    """version() matches the package version."""
    assert ops.version() == vllm.__version__
