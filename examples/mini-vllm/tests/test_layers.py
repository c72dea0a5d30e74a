"""Tests for the Python layers on top of vllm._C."""

import pytest
from vllm_test_utils import assert_allclose

from vllm import layers


def test_native_ops_available() -> None:
    """The installed wheel ships the compiled extension."""
    assert layers.has_native_ops()


@pytest.mark.parametrize("x", [[1.0], [1.0, 2.0, 3.0], [-0.5, 0.0, 0.5, 8.0]])
def test_rms_norm_matches_reference(x: list) -> None:
    """The C kernel agrees with the pure-Python reference."""
    assert_allclose(layers.rms_norm(x, 1e-6), layers.rms_norm_ref(x, 1e-6))


def test_rms_norm_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extension the Python fallback is used."""
    monkeypatch.setattr(layers, "has_native_ops", lambda: False)
    assert_allclose(layers.rms_norm([2.0, 2.0], 0.0), [1.0, 1.0])
