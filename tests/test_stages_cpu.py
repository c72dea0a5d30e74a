"""The CPU stage set (vllm_ci.stages.cpu, docker/Dockerfile.cpu): chosen by the Dockerfile's name, conforming to
the pinned release's file, and named apart from the CUDA set in the cache. No engine."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import example_build, example_module, vllm_source
from stagecache.keys import cache_tag
from stagecache.stages import stage_preimages
from vllm_ci.build import Build
from vllm_ci.conformance import accept, accepted_digests, check, refusal, released_file
from vllm_ci.declare import STAGE_SETS, stage_set_for
from vllm_ci.errors import UsageError
from vllm_ci.graph import stage_graph
from vllm_ci.main import VllmCi
from vllm_ci.upstream_file import UpstreamFile

CPU_FILE = "docker/Dockerfile.cpu"


def pinned_cpu_file(text: str | None = None) -> UpstreamFile:
    """The pinned release's docker/Dockerfile.cpu (or an edited text of it), as a build reads it."""
    return UpstreamFile.parse(text or (vllm_source() / CPU_FILE).read_text(), CPU_FILE)


def cpu_module() -> VllmCi:
    """The module configured as for the example, building docker/Dockerfile.cpu (none of the example's CUDA ARGs)."""
    return dataclasses.replace(example_module(), build_arg=[], dockerfile=CPU_FILE)


def cpu_build() -> Build:
    """A build of the pinned Dockerfile.cpu with the example's own arguments (none of its CUDA ARGs)."""
    return Build(cpu_module(), pinned_cpu_file())


@pytest.mark.parametrize(
    ("path", "stage_set"),
    [("docker/Dockerfile.cpu", "cpu"), ("fork/ci/Dockerfile.cpu", "cpu"), ("docker/Dockerfile", "cuda")],
)
def test_the_stage_set_is_the_one_the_dockerfiles_name_says(path: str, stage_set: str) -> None:
    assert stage_set_for(path).name == stage_set


def test_the_cpu_stage_set_conforms_to_the_pinned_releases_dockerfile_cpu() -> None:
    report = check(pinned_cpu_file(), STAGE_SETS["cpu"].declared)
    assert report.ok(), report.table()
    assert report.stage_counts() == {"in file": 15, "built": 15, "missing": 0, "removed upstream": 0}
    assert report.counts()["reproduced"] > 100  # nearly every instruction runs as written


def test_an_edited_deviated_instruction_of_dockerfile_cpu_is_refused_naming_its_stage_function_and_diff() -> None:
    text = (vllm_source() / CPU_FILE).read_text().replace("--py-limited-api=cp38", "--py-limited-api=cp39")
    edited = pinned_cpu_file(text)
    refused = refusal(check(edited, STAGE_SETS["cpu"].declared, released=released_file(STAGE_SETS["cpu"])))
    message = str(refused).splitlines()
    assert message[-1].startswith(f"{CPU_FILE}:")
    assert "stage vllm-build: deviated instruction changed since it was accepted" in message[-1]
    assert "[vllm_ci.stages.cpu:vllm_build]" in message[-1]
    assert any(line.startswith("+") and "cp39" in line for line in message)
    assert any(line.startswith("-") and "cp38" in line for line in message)


def test_a_cpu_and_a_cuda_build_into_one_cache_repository_name_no_entry_alike() -> None:
    cuda, cpu = stage_graph(example_build()), stage_graph(cpu_build())
    assert {s.name for s in cpu} == {f"cpu.{name}" for name in STAGE_SETS["cpu"].declared}
    assert {"base", "rust-build"} <= {s.name for s in cuda}  # names both files use
    tags = [{cache_tag(p.stage, p.key()) for p in stage_preimages(graph, {})} for graph in (cuda, cpu)]
    assert len(tags[1]) == 15 and tags[0].isdisjoint(tags[1])


def test_a_stage_only_the_cuda_file_has_is_refused_for_the_cpu_dockerfile_listing_the_cpu_stages() -> None:
    module = cpu_module()
    with pytest.raises(UsageError, match=r"--target: no stage 'csrc-build'; the stages of docker/Dockerfile.cpu: base"):
        module._target("csrc-build")
    assert module._target("") == "cpu.vllm-test"  # the CPU set's CI image, as the cache names it
    assert example_module()._target("") == "test"


def test_accepting_the_cpu_files_deviations_keeps_the_cuda_sets_accepted_digests() -> None:
    digests = accept(pinned_cpu_file(), STAGE_SETS["cpu"].declared)
    held = accepted_digests()
    assert digests == held  # the pinned file is the accepted one
    assert {d for d in digests if d.startswith("cpu:")} and {d for d in digests if not d.startswith("cpu:")}
