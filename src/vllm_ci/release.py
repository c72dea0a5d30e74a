"""The vLLM release this port follows (the accepted digests were taken from its docker/Dockerfile), pinned by
version and sdist sha256, and where its source is unpacked on this machine when the tests or bench fetched it
(bench/vllm_release.py): conformance shows a changed instruction's diff against it."""

from __future__ import annotations

import os
import pathlib
from typing import Final

VLLM_VERSION: Final = "0.34.0"
VLLM_SDIST_SHA256: Final = "fcad848b246a9d8652b47e6425af92334dc02492f9802720f54e27b823cf0113"
CACHE: Final = pathlib.Path(os.environ.get("VLLM_CI_CACHE", "/var/cache/vllm-ci")) / "upstream"
# The sdist unpacked, by version and hash; `.complete` in it once whole.
UNPACKED: Final = CACHE / f"vllm-{VLLM_VERSION}-{VLLM_SDIST_SHA256[:16]}"


def unpacked_source() -> pathlib.Path | None:
    """The pinned release's source tree if it is already unpacked here (never downloads)."""
    return UNPACKED / f"vllm-{VLLM_VERSION}" if (UNPACKED / ".complete").exists() else None
