"""mini-vllm: a tiny vLLM-shaped package with a C extension (vllm._C)."""

from types import ModuleType

try:  # written by setuptools-scm when the package is built, as vLLM's
    from vllm._version import __version__
except ImportError:
    __version__ = "dev"


def native_ops() -> ModuleType:
    """Import and return the compiled extension module vllm._C."""
    from vllm import _C

    return _C
