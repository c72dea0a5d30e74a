"""Shared pytest setup.

The tests exercise the *installed* wheel, not the source tree:

    pip install dist/*.whl -r requirements/test/cuda.txt ./tests/vllm_test_utils
    python -m pytest tests

The source vllm/ has no compiled _C, so the checkout root is dropped from
sys.path here (`python -m pytest` puts the cwd on it) to stop it shadowing
the installed package.
"""
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != CHECKOUT]


@pytest.fixture(scope="session")
def ops():
    """The compiled vllm._C module."""
    from vllm import _C

    return _C
