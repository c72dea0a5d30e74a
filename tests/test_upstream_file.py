"""The Dockerfile being built as this project reads it (vllm_ci.upstream_file): ARG expansion and scopes as BuildKit has them. Pure logic, no engine."""

from __future__ import annotations

from conftest import example_build
from vllm_ci.instructions import AUTOMATIC_VALUES
from vllm_ci.upstream_file import expand


def test_an_arg_with_a_modifier_expands_as_buildkit_does_innermost_first() -> None:
    off = {"USE_SCCACHE": "", "SCCACHE_BUCKET_NAME": "bucket", "CUDA_VERSION": "13.0.3", "VLLM_MAIN_CUDA_VERSION": ""}
    on = {**off, "USE_SCCACHE": "1"}
    assert expand("${USE_SCCACHE:+${SCCACHE_BUCKET_NAME}}", off) == ""
    assert expand("${USE_SCCACHE:+${SCCACHE_BUCKET_NAME}}", on) == "bucket"
    assert expand("${VLLM_MAIN_CUDA_VERSION:-${CUDA_VERSION}}", off) == "13.0.3"
    assert expand("${UV_INDEX_URL}|$PATH", {"UV_INDEX_URL": None}) == "|$PATH"  # unset: empty; not an ARG: left


def test_an_arg_is_scoped_per_stage_from_its_line_on_as_buildkit_scopes_it() -> None:
    file = example_build().file
    csrc, extensions = file.stage("csrc-build"), file.stage("extensions-build")
    assert file.stage_values(csrc, {}, AUTOMATIC_VALUES)["max_jobs"] == "2"  # ARG max_jobs=2
    assert file.stage_values(extensions, {}, AUTOMATIC_VALUES)["max_jobs"] is None  # bare ARG max_jobs: unset
    assert file.stage_values(extensions, {"max_jobs": "16"}, AUTOMATIC_VALUES)["max_jobs"] == "16"  # passed
    assert file.stage_values(csrc, {}, AUTOMATIC_VALUES)["UV_INDEX_URL"] == ""  # global UV_INDEX_URL=${PIP_INDEX_URL}
    assert file.stage_values(csrc, {}, AUTOMATIC_VALUES)["PIP_INDEX_URL"] is None  # global, no default
    first_arg = min(line for line, _ in ((i.line, n) for i, n, _ in csrc.args()))
    assert file.stage_values(csrc, {}, AUTOMATIC_VALUES, until_line=first_arg - 1) == {}  # nothing above its line
