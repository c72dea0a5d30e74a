"""The constructor arguments as an args file gives them (vllm_ci.args), without an engine."""

from __future__ import annotations

import pytest

from conftest import EXAMPLE
from vllm_ci.args import build_args_of
from vllm_ci.main import VllmCi


def test_an_args_file_gives_each_constructor_argument_with_its_fields_type() -> None:
    args = build_args_of("--max-jobs=4\n--python-version=3.11\n--openai-extras=a b\n--torch-cuda-arch-list=\n")
    assert args == {"max_jobs": 4, "python_version": "3.11", "openai_extras": "a b", "torch_cuda_arch_list": ""}


def test_the_examples_args_file_makes_the_module_object() -> None:
    module = VllmCi(**build_args_of((EXAMPLE / "vllm-ci.args").read_text()))
    assert module.python_version == "3.11" and module.torch_cuda_arch_list == ""


def test_a_flag_that_is_no_constructor_argument_is_named() -> None:
    with pytest.raises(ValueError, match="^--no-such-arg: no such constructor argument$"):
        build_args_of("--no-such-arg=1\n")
