"""Checks of what a call was given, where the arguments enter: the client command runs them before it
contacts the engine, and every module function runs them first (`@checked`), since under `dagger call`
the function is the entry. Each check refuses with one UsageError (exit 2) naming the flag."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import dagger

from stagecache.refs import ImageRef
from stagecache.report import BuildReport
from vllm_ci.args import flag_of
from vllm_ci.declare import STAGE_SETS, stage_set_for
from vllm_ci.errors import UsageError
from vllm_ci.graph import targets


def check_ref(flag: str, value: str) -> ImageRef | None:
    """A fully qualified image reference, parsed: the one parse of a ref a user gives, where it enters
    (the client command's check, then the module function's argument); None when none is given (empty)."""
    try:
        return ImageRef.parse(value) if value else None
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None


def check_refs(flag: str, values: list[str]) -> list[ImageRef]:
    """Each of a list of image references, parsed (check_ref), in order."""
    return [ref for value in values if (ref := check_ref(flag, value))]


def ref_argument(name: str, value: str) -> ImageRef | None:
    """A module function's image-reference argument as the value the stage cache takes (check_ref)."""
    return check_ref(flag_of(name), value)


def ref_arguments(name: str, values: list[str] | None) -> list[ImageRef]:
    """A module function's list of image references as the values the stage cache takes (check_refs)."""
    return check_refs(flag_of(name), values or [])


def check_target(flag: str, value: str, dockerfile: str | None = None) -> None:
    """The name of a stage: of the stage set a Dockerfile's name says when it is known, else of any set;
    empty is the set's test image."""
    sets = [stage_set_for(dockerfile)] if dockerfile is not None else list(STAGE_SETS.values())
    if value and not any(value in targets(s) for s in sets):
        listed = "; ".join(f"{s.dockerfile}: {', '.join(targets(s))}" for s in sets)
        raise UsageError(f"{flag}: no stage {value!r}; the stages of {listed}")


def check_count(flag: str, value: float) -> None:
    """A finite number, zero or more (a negative keep-last would slice to 'all but the oldest')."""
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{flag}: a finite number, 0 or more, not {value}")


def check_report(flag: str, value: str) -> None:
    """A build's JSON report, every field of the type it has (stagecache.report)."""
    try:
        BuildReport.from_json(value)
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{flag}: not a build report ({type(err).__name__}: {err})") from None


# Argument name -> its check; an argument of that name means the same in every function.
CHECKS: Final[Mapping[str, Callable[[str, Any], object]]] = {
    "image": check_ref,
    "cache_to": check_ref,
    "cache_repo": check_ref,
    "cache_from": check_refs,
    "target": check_target,
    "keep_days": check_count,
    "keep_last": check_count,
    "report_json": check_report,
}


def check_arguments(values: Mapping[str, Any]) -> None:
    """Refuse a function's bad arguments (by name, see CHECKS) and a password without a username."""
    for name, value in values.items():
        if value is not None and name in CHECKS:
            CHECKS[name](flag_of(name), value)
    if values.get("registry_password") is not None and not values.get("registry_username"):
        raise UsageError("--registry-password: given without --registry-username (a registry login needs both)")


def empty_secret(flag: str, where: str = "") -> UsageError:
    """The refusal of an empty secret."""
    return UsageError(f"{flag}: the secret{' in ' + where if where else ''} is empty")


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def checked(func: F) -> F:
    """A module function that checks its arguments first (check_arguments), and that no secret is empty."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        check_arguments(bound.arguments)
        for name, value in bound.arguments.items():
            if isinstance(value, dagger.Secret) and not await value.plaintext():
                raise empty_secret(flag_of(name))
        return await func(*args, **kwargs)

    # The wrapper takes and returns what func does; mypy cannot tie a *args wrapper to the TypeVar.
    return wrapper  # type: ignore[return-value]
