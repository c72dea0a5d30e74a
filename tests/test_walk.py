"""The walk of a stage's instructions (instructions.AsWritten.walk): what a stage function must run,
checked when it returns, before anything reaches the engine (the steps it composes are lazy)."""

from __future__ import annotations

import dataclasses

import dagger
import pytest
from dagger import dag

from conftest import example_build, walk_of
from stagecache import StageContext
from stagecache.errors import StageError
from vllm_ci.declare import DECLARED
from vllm_ci.deviations import Deviation, skipped
from vllm_ci.errors import UsageError
from vllm_ci.graph import walked

CONTEXT = StageContext(source=dag.directory(), parents={"base": dag.container()})


@pytest.mark.anyio
async def test_a_stage_function_that_skips_an_instruction_fails_the_build_naming_the_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def skips_the_file(build, ctx):  # type: ignore[no-untyped-def]
        """Builds dev from its parent without walking dev's instructions."""
        return ctx.parents["base"]

    monkeypatch.setitem(DECLARED, "dev", dataclasses.replace(DECLARED["dev"], function=skips_the_file))
    with pytest.raises(StageError, match="^build: stage dev: its function did not walk every instruction"):
        await walked(DECLARED["dev"], example_build())(CONTEXT)


@pytest.mark.anyio
async def test_the_real_stage_function_walks_every_instruction_of_its_stage() -> None:
    build = example_build()
    assert isinstance(await walked(DECLARED["dev"], build)(CONTEXT), dagger.Container)
    assert build.walks["dev"].complete()


def test_a_handler_for_a_deviation_the_stage_does_not_declare_is_refused() -> None:
    upstream = walk_of("RUN echo a", CONTEXT)
    with pytest.raises(UsageError, match="handlers for undeclared deviations"):
        upstream.walk(dag.container(), {Deviation("RUN", "echo a"): skipped})


def test_a_deviation_must_name_exactly_one_instruction() -> None:
    twice = Deviation("RUN", "echo")
    with pytest.raises(UsageError, match=r"deviation RUN …echo… must name one instruction, names 2, 3$"):
        walk_of("RUN echo a\nRUN echo b", CONTEXT, deviations=(twice,)).walk(dag.container(), {twice: skipped})


def test_an_instruction_the_runner_cannot_run_as_written_is_refused_with_its_line() -> None:
    with pytest.raises(UsageError, match=r"^Dockerfile:3: RUN --network=none cannot be run as written$"):
        walk_of("RUN echo a\nRUN --network=none echo b", CONTEXT).walk(dag.container())
