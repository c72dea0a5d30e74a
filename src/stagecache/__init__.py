"""A registry stage cache for Dagger pipelines: each stage's result is an image in a cache
repository, tagged by a key computed from exactly the inputs the stage reads.

Generic: it knows nothing of vLLM. `keys` and `registry` import nothing of Dagger."""

from stagecache.keys import KeyPreimage
from stagecache.report import BuildReport, StageRecord
from stagecache.store import Stage, StageCache, StageContext

__all__ = ["BuildReport", "KeyPreimage", "Stage", "StageCache", "StageContext", "StageRecord"]
