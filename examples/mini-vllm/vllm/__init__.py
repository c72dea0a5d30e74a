"""mini-vllm: a tiny vLLM-shaped package with a C extension (vllm._C)."""
from types import ModuleType

__version__ = "0.1.0"


def native_ops() -> ModuleType:
    """Import and return the compiled extension module vllm._C."""
    from vllm import _C

    return _C
