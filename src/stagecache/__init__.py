"""A registry stage cache for Dagger pipelines: each stage's result is an image in a cache
repository, tagged by a key computed from exactly the inputs the stage reads.

Generic: it knows nothing of vLLM. `keys` and `registry` import nothing of Dagger, and importing
them does not import Dagger either: the names below load their modules when first used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Re-exported (`as` marks it for linters; __all__ is computed below, out of their sight).
    from stagecache.keys import KeyPreimage as KeyPreimage
    from stagecache.report import BuildReport as BuildReport
    from stagecache.report import StageRecord as StageRecord
    from stagecache.stages import Stage as Stage
    from stagecache.stages import StageContext as StageContext
    from stagecache.stages import Tail as Tail
    from stagecache.store import StageCache as StageCache

_HOMES = {
    "KeyPreimage": "stagecache.keys",
    "BuildReport": "stagecache.report",
    "StageRecord": "stagecache.report",
    "Stage": "stagecache.stages",
    "StageCache": "stagecache.store",
    "StageContext": "stagecache.stages",
    "Tail": "stagecache.stages",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562), so `stagecache.registry` stays Dagger-free."""
    if name not in _HOMES:
        raise AttributeError(f"module 'stagecache' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
