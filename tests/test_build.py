"""A stage function's view of the build (vllm_ci.build.Build.for_stage): it reads the values its key holds,
and nothing its @stage does not declare."""

from __future__ import annotations

import pytest

from conftest import example_build
from vllm_ci.build import UndeclaredRead
from vllm_ci.declare import DECLARED
from vllm_ci.graph import stage_graph

READ_BY_NO_STAGE = "PR_ONLY_ARG"


def test_a_stage_function_sees_exactly_the_values_its_key_holds_for_what_it_declares() -> None:
    build = example_build(build_arg=["PYTHON_VERSION=3.99"], git_version="1.2.3.dev4+gabc")
    graph = {stage.name: stage for stage in stage_graph(build)}
    view = build.for_stage(DECLARED["test"], graph["test"].args)
    assert view.value("PYTHON_VERSION") == graph["test"].args["PYTHON_VERSION"] == "3.99"
    assert view.value("git_version") == graph["test"].args["git_version"] == "1.2.3.dev4+gabc"
    assert view.site_packages() == "/usr/local/lib/python3.99/dist-packages"


@pytest.mark.parametrize(
    ("stage", "undeclared"),
    [
        ("rust-installed", "git_version"),  # an argument of this project's it does not declare
        ("rust-installed", "PIP_INDEX_URL"),  # a global ARG of the file it does not declare
        ("runtime-python", "PYTHON_VERSION"),
        ("base", READ_BY_NO_STAGE),  # a name nothing declares
    ],
)
def test_a_stage_function_reading_a_value_its_stage_does_not_declare_fails_naming_the_stage_and_the_value(
    stage: str, undeclared: str
) -> None:
    build = example_build()
    graph = {s.name: s for s in stage_graph(build)}
    view = build.for_stage(DECLARED[stage], graph[stage].args)
    with pytest.raises(UndeclaredRead, match=f"stage {stage} reads {undeclared}, which its @stage does not declare"):
        view.value(undeclared)


def test_the_build_outside_a_stage_reads_any_arg_and_argument() -> None:
    build = example_build(build_arg=["PYTHON_VERSION=3.99"], git_version="9.9")
    assert (build.value("PYTHON_VERSION"), build.value("git_version")) == ("3.99", "9.9")
