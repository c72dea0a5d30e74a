"""The constructor arguments as an args file gives them, and --build-arg values (vllm_ci.args), without an engine."""

from __future__ import annotations

import pytest

from conftest import EXAMPLE, example_file
from vllm_ci.args import read_args_file
from vllm_ci.build import Build
from vllm_ci.errors import UsageError
from vllm_ci.main import VllmCi


def test_an_args_file_gives_each_constructor_argument_and_adds_up_its_build_args() -> None:
    args = read_args_file("--build-arg=max_jobs=4\n--build-arg=PYTHON_VERSION=3.11\n--openai-extras=a b\n")
    assert args == {"build_arg": ["max_jobs=4", "PYTHON_VERSION=3.11"], "openai_extras": "a b"}


def test_the_examples_args_file_makes_the_module_object() -> None:
    module = VllmCi(**read_args_file((EXAMPLE / "vllm-ci.args").read_text()))
    assert module.passed()["PYTHON_VERSION"] == "3.11" and module.passed()["torch_cuda_arch_list"] == ""


def test_a_flag_that_is_no_constructor_argument_is_named() -> None:
    with pytest.raises(ValueError, match="^--no-such-arg: no such constructor argument$"):
        read_args_file("--no-such-arg=1\n")


def test_a_build_arg_value_is_kept_exactly_as_given_and_the_last_of_a_name_wins() -> None:
    module = VllmCi(build_arg=["TIMM_VERSION=${CUDA_VERSION}", "X=a=b", "X=$(rm -rf /); 'q'"])
    assert module.passed() == {"TIMM_VERSION": "${CUDA_VERSION}", "X": "$(rm -rf /); 'q'"}


@pytest.mark.parametrize("pair", ["NOVALUE", "=x", "1X=2", "A-B=1"])
def test_a_build_arg_that_is_not_name_equals_value_is_one_line(pair: str) -> None:
    with pytest.raises(UsageError, match=r"^--build-arg .*: expected NAME=VALUE$"):
        VllmCi(build_arg=[pair])


def test_a_build_arg_the_dockerfile_does_not_declare_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError, match=r"^--build-arg NO_SUCH_ARG: docker/Dockerfile declares no ARG NO_SUCH_ARG$"):
        Build(VllmCi(build_arg=["NO_SUCH_ARG=1"]), example_file())
