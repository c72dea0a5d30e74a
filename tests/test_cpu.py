"""The CPU stage set (vllm_ci.stages.cpu, docker/Dockerfile.cpu): chosen by the Dockerfile's name, conforming to
the pinned release's file, named apart from the CUDA set in the cache; and the example's CPU image, built
with the example's portability arguments, runs its tests."""

from __future__ import annotations

import dataclasses
import re

import pytest

from conftest import EXAMPLE, REGISTRY, cpu_module, example_build, example_module, source_of, vllm_source
from local_registry import RegistryAPI
from stagecache.keys import cache_tag
from stagecache.stages import stage_preimages
from vllm_ci.build import Build
from vllm_ci.conformance import accept, accepted_digests, check, refusal, released_file
from vllm_ci.declare import STAGE_SETS, stage_set_for
from vllm_ci.errors import UsageError
from vllm_ci.graph import stage_graph
from vllm_ci.upstream_file import UpstreamFile

CPU_FILE = "docker/Dockerfile.cpu"


def pinned_cpu_file(text: str | None = None) -> UpstreamFile:
    """The pinned release's docker/Dockerfile.cpu (or an edited text of it), as a build reads it."""
    return UpstreamFile.parse(text or (vllm_source() / CPU_FILE).read_text(), CPU_FILE)


def cpu_build() -> Build:
    """A build of the pinned Dockerfile.cpu with the example's CPU arguments."""
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
    assert len(tags[1]) == len(STAGE_SETS["cpu"].declared) and tags[0].isdisjoint(tags[1])


def test_a_stage_only_the_cuda_file_has_is_refused_for_the_cpu_dockerfile_listing_the_cpu_stages() -> None:
    module = cpu_module()
    with pytest.raises(UsageError, match=r"--target: no stage 'csrc-build'; the stages of docker/Dockerfile.cpu: base"):
        module.cache_target("csrc-build")
    assert module.cache_target("") == "cpu.vllm-test"  # the CPU set's CI image, as the cache names it
    assert example_module().cache_target("") == "test"


def test_accepting_the_cpu_files_deviations_keeps_the_cuda_sets_accepted_digests() -> None:
    digests = accept(pinned_cpu_file(), STAGE_SETS["cpu"].declared)
    held = accepted_digests()
    assert digests == held  # the pinned file is the accepted one
    assert {d for d in digests if d.startswith("cpu:")} and {d for d in digests if not d.startswith("cpu:")}


@pytest.mark.anyio
@pytest.mark.timeout(2400)
async def test_the_examples_cpu_test_image_builds_beside_the_cuda_entries_and_its_tests_pass_in_it(
    client: None, warm_cpu_cache: tuple[str, dict]
) -> None:
    # One cache repository for both sets: the CUDA test image's entries first, then the CPU image's.
    cache, report = warm_cpu_cache
    source = source_of(EXAMPLE)
    cpu = cpu_module()
    assert report["target"] == "cpu.vllm-test"
    outcomes = {s["stage"]: s["outcome"] for s in report["stages"]}
    assert outcomes and all(stage.startswith("cpu.") for stage in outcomes)
    assert "hit" not in outcomes.values()  # none of the CUDA entries beside them is a hit for a CPU stage
    tags = RegistryAPI(REGISTRY).tags(cache.partition("/")[2])
    assert {t.partition("-")[0] for t in tags if t.startswith("cpu.")} >= {"cpu.base", "cpu.vllm"}
    # Its tests, run in the image as CI runs them (every stage now a hit).
    output = await cpu.run_tests(source, cache_from=[cache])  # type: ignore[attr-defined]
    assert re.search(r"\b\d+ passed\b", output) and " failed" not in output, output


def test_an_image_rewrite_replaces_the_image_a_from_names_in_the_key_and_a_malformed_one_is_refused() -> None:
    upstream = Build(dataclasses.replace(cpu_module(), image_rewrite=[]), pinned_cpu_file())
    assert upstream.from_image("base") == "ubuntu:22.04"  # upstream's, with no rewrite
    assert cpu_build().from_image("base") == "127.0.0.1:5000/library/vllm-ci-runtime:bookworm"  # the example's
    keys = [{p.stage: p.key() for p in stage_preimages(stage_graph(b), {})} for b in (upstream, cpu_build())]
    assert {stage for stage in keys[0] if keys[0][stage] != keys[1][stage]} == set(keys[0])  # base, and all on it
    with pytest.raises(UsageError, match="--image-rewrite 'ubuntu:22.04': expected OLD=NEW"):
        dataclasses.replace(cpu_module(), image_rewrite=["ubuntu:22.04"])
