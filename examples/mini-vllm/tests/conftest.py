"""Shared pytest setup.

The tests exercise the *installed* vLLM, not the source tree: in the test image the checkout's
vllm/ is at src/vllm (as vLLM's test stage moves it), so the /vllm-workspace that tests/__init__.py
puts on sys.path holds no `vllm` to shadow the installed one, whose compiled _C the tests need.
"""

import pytest


@pytest.fixture(scope="session")
def ops():
    """The compiled vllm._C module."""
    from vllm import _C

    return _C
