"""Tests for the `vllm` console script."""

import importlib.metadata

from vllm_test_utils import run_vllm

import vllm


def test_version() -> None:
    """`vllm --version` prints the package version."""
    result = run_vllm(["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == vllm.__version__


def test_serve() -> None:
    """`vllm serve <model>` reports the model and exits 0."""
    result = run_vllm(["serve", "my-model"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "serving my-model"


def test_collect_env() -> None:
    """`vllm collect-env` reports that vllm._C loads."""
    result = run_vllm(["collect-env"])
    assert result.returncode == 0, result.stderr
    assert "vllm._C: ok" in result.stdout


def test_embedded_version() -> None:
    """As vLLM's test_embedded_commit: the build wrote _version.py, and it is the installed version's."""
    assert vllm.__version__ != "dev"
    assert importlib.metadata.version("mini-vllm").startswith(vllm.__version__)
