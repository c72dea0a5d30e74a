"""Python layers built on top of the native ops in vllm._C."""

import math
from typing import List, Sequence


def has_native_ops() -> bool:
    """Return True if the compiled extension vllm._C can be imported."""
    try:
        from vllm import _C  # noqa: F401
    except ImportError:
        return False
    return True


def rms_norm_ref(x: Sequence[float], eps: float = 1e-6) -> List[float]:
    """Pure-Python reference RMS norm, used as fallback and in tests."""
    if not x:
        raise ValueError("rms_norm expects a non-empty sequence")
    scale = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [v * scale for v in x]


def rms_norm(x: Sequence[float], eps: float = 1e-6) -> List[float]:
    """RMS-normalise x with the C kernel, falling back to Python if it is missing."""
    if has_native_ops():
        from vllm import _C

        return _C.rms_norm(list(x), eps)
    return rms_norm_ref(x, eps)
