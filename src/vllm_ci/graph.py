"""vLLM's stages as data for the stage cache, derived from each stage function's one declaration
(declare.py): parents, the source files it reads (its filter and its key's input), the ARGs it
reads (its key's arguments) and its code fingerprint (no recipe number to bump)."""

from __future__ import annotations

import functools

import dagger
from dagger import dag

from stagecache import Stage
from stagecache.fingerprint import code_fingerprint
from vllm_ci import stages
from vllm_ci.args import PROJECT_ARGS, BuildArgs
from vllm_ci.declare import DECLARED, StageDeclaration
from vllm_ci.instructions import INDEX_NETRC, scoped_value

TARGETS = tuple(DECLARED)
# The packages whose code a stage's fingerprint follows.
OWN_CODE = ("vllm_ci",)


def include_patterns(reads: tuple[str, ...]) -> tuple[str, ...]:
    """A stage's reads as include patterns: a folder ("cmake/") is everything under it."""
    return tuple(p + "**" if p.endswith("/") else p for p in reads)


def key_args(decl: StageDeclaration, args: BuildArgs) -> dict[str, str]:
    """The ARGs a stage reads, each with the value its RUNs see (scoped_value, the one function both
    use, so the key and the build cannot disagree; an unset ARG is not in the key; BuildKit's platform
    ARGs too, so an arm64 agent never hits an amd64 entry: base and the runtime base read
    TARGETPLATFORM, and every stage descends from one of them); this project's own
    arguments as given; the image a stage without parents starts from counts as read (expanded),
    since no parent key covers it."""
    values: dict[str, str] = {}
    for name in decl.arg_names():
        own = name in PROJECT_ARGS or name in decl.also_reads
        seen = str(getattr(args, name.lower())) if own else scoped_value(decl, name, args)
        if seen is not None:
            values[name] = seen
    if decl.from_ is not None and not decl.parents:
        values["FROM"] = args.expand(decl.from_)
    return values


def stage_graph(args: BuildArgs) -> list[Stage]:
    """Every declared stage, wired to its stage function with this build's arguments."""
    return [
        Stage(
            decl.name,
            functools.partial(decl.function, args),
            decl.parents,
            include_patterns(decl.reads),
            key_args(decl, args),
            code_fingerprint(decl.function, OWN_CODE),
            decl.not_read,
        )
        for decl in DECLARED.values()
    ]


async def secrets_of(
    aws_access_key_id: dagger.Secret | None,
    aws_secret_access_key: dagger.Secret | None,
    index_netrc: dagger.Secret | None = None,
) -> dict[str, dagger.Secret]:
    """The build's secrets by the id the RUNs mount them with: the AWS keys as the one credentials file
    sccache reads (--mount=type=secret,id=aws-credentials), made as a secret; the private-index netrc as
    given (every RUN run as written mounts it, instructions.INDEX_NETRC). No text of either reaches a
    layer, a log, a key or the report."""
    secrets = {INDEX_NETRC: index_netrc} if index_netrc is not None else {}
    if aws_access_key_id is None or aws_secret_access_key is None:
        return secrets
    text = (
        f"[default]\naws_access_key_id = {await aws_access_key_id.plaintext()}\n"
        f"aws_secret_access_key = {await aws_secret_access_key.plaintext()}\n"
    )
    return {**secrets, stages.AWS_CREDENTIALS: dag.set_secret(stages.AWS_CREDENTIALS, text)}
