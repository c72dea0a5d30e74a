"""The stage cache's errors (stagecache.errors): the first stage error of concurrent failures; no engine."""

from __future__ import annotations


def test_of_concurrent_failures_the_first_stage_error_is_reported_however_deeply_grouped() -> None:
    from stagecache.errors import StageError, first_stage_error

    export = StageError("registry refused the push", stage="base", phase="export")
    nested = ExceptionGroup(
        "stages", [ExceptionGroup("parents", [KeyError("base"), export]), StageError("other", stage="rust")]
    )
    assert first_stage_error(nested) is export
    plain = ExceptionGroup("no stage", [KeyError("x")])
    assert first_stage_error(plain) is plain
