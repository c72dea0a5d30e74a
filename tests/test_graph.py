"""The stages as data (vllm_ci.graph): each key follows its stage's own code, ARGs, instructions and files
and nothing else, and a stage function must walk its stage. Pure logic, no engine."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import dagger
import pytest

from conftest import EMPTY_CONTEXT, EXAMPLE, edited_copy, example_build
from stagecache.errors import StageError
from stagecache.stages import stage_preimages
from stagecache.why import explain
from vllm_ci.build import Build, UndeclaredRead
from vllm_ci.declare import DECLARED
from vllm_ci.graph import stage_graph, walked
from vllm_ci.upstream_file import UpstreamFile


def keys(graph: list, reads: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """Each stage's key from its declaration, with the same files read by all."""
    return {p.stage: p.key() for p in stage_preimages(graph, reads or {})}


def moved_by(build: Build) -> set[str]:
    """The stages whose keys a build changes against the example's own build, with the same files read."""
    before, after = keys(stage_graph(example_build())), keys(stage_graph(build))
    return {s for s in before if before[s] != after[s]}


CSRC_AND_BELOW = {
    "csrc-build",
    "kernel-symbol-map",
    "build",
    "extension",
    "vllm-base",
    "test",
    "vllm-openai-base",
    "vllm-openai",
    "vllm-openai-nonroot",
    "vllm-sagemaker",
}


def test_a_changed_arg_moves_only_the_stages_that_read_it_and_their_descendants() -> None:
    # buildkite_commit is declared by csrc-build only (the kernel symbol map names it).
    assert moved_by(example_build(build_arg=["buildkite_commit=0123abc"])) == CSRC_AND_BELOW
    assert "buildkite_commit" in dict(next(s for s in stage_graph(example_build()) if s.name == "csrc-build").args)


RUNTIME_AND_BELOW = {
    "vllm-runtime-base",
    "runtime-python",
    "package",  # its bytecode is compiled by the runtime's Python
    "test-deps",
    "openai-deps",
    "vllm-base",
    "test",
    "vllm-openai-base",
    "vllm-openai",
    "vllm-openai-nonroot",
    "vllm-sagemaker",
}


def test_an_arg_of_the_runtime_moves_no_build_stage() -> None:
    # GGUF_VERSION is declared by vllm-runtime-base only.
    assert moved_by(example_build(build_arg=["GGUF_VERSION===0.19.0"])) == RUNTIME_AND_BELOW


def edited_build(old: str, new: str) -> Build:
    """The example's build of its Dockerfile with one edit, as a vLLM PR would make it."""
    text = (EXAMPLE / "docker" / "Dockerfile").read_text()
    assert text.count(old) == 1, old
    return Build(example_build().args, UpstreamFile.parse(text.replace(old, new), "docker/Dockerfile"))


def test_an_edited_run_of_the_runtime_base_moves_it_and_its_descendants_and_its_miss_names_the_line() -> None:
    graph = stage_graph(example_build())
    edited = stage_graph(edited_build("RUN python3 -m pip install uv\n", "RUN python3 -m pip install uv && echo pr\n"))
    before, after = keys(graph), keys(edited)
    assert {s for s in before if before[s] != after[s]} == RUNTIME_AND_BELOW
    old, new = (next(p for p in stage_preimages(g, {}) if p.stage == "vllm-runtime-base") for g in (graph, edited))
    [runtime] = [s for s in edited if s.name == "vllm-runtime-base"]
    why = explain(json.loads(old.canonical()), json.loads(new.canonical()), {}, {}, runtime.step_notes)
    stage = example_build().file.stage("vllm-runtime-base")
    runs = [i for i in stage.instructions if i.kind == "RUN"]
    number, line = next((n, i.line) for n, i in enumerate(runs, 1) if i.text == "RUN python3 -m pip install uv")
    assert why == f"RUN {number} changed (line {line})"


def test_a_new_run_in_test_deps_moves_only_test_deps_and_test() -> None:
    edited = edited_build("FROM test-deps AS test\n", "RUN echo pr\n\nFROM test-deps AS test\n")
    assert moved_by(edited) == {"test-deps", "test"}


def test_an_edit_to_the_test_stages_editable_install_moves_test_deps_which_runs_it() -> None:
    assert moved_by(edited_build("-e tests/vllm_test_utils", "-e tests/vllm_test_utils -v")) == {"test-deps", "test"}


def test_editing_one_stage_function_moves_its_key_and_its_descendants_and_no_other(tmp_path: pathlib.Path) -> None:
    decl = DECLARED["test-deps"]
    before = keys(stage_graph(example_build()))
    edited = edited_copy(decl.function, '"""FROM vllm-runtime-base', '"""Edited: FROM vllm-runtime-base', tmp_path)
    DECLARED["test-deps"] = dataclasses.replace(decl, function=edited)
    try:
        after = keys(stage_graph(example_build()))
    finally:
        DECLARED["test-deps"] = decl
    assert {s for s in before if before[s] != after[s]} == {"test-deps", "test"}


def test_editing_a_step_moves_the_stages_that_call_it_and_their_descendants(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm_ci.fastpath import install
    from vllm_ci.stages import runtime, test

    before = keys(stage_graph(example_build()))
    edited = edited_copy(
        install.vllm_installed,
        "folder = dag.directory()",
        "folder = dag.directory().with_new_directory('edited')",
        tmp_path,
    )
    for module in (runtime, test):  # the stage modules that add vLLM by file layers (openai's through runtime's)
        monkeypatch.setattr(module, "vllm_installed", edited)
    after = keys(stage_graph(example_build()))
    assert {s for s in before if before[s] != after[s]} == {
        "vllm-base",
        "test",
        "vllm-openai-base",
        "vllm-openai",
        "vllm-openai-nonroot",
        "vllm-sagemaker",
    }


def test_a_stage_key_is_the_same_in_every_process_whatever_its_hash_seed() -> None:
    # Set constants (GLOBAL_DEFAULTS, AUTOMATIC_ARGS) are part of the code fingerprint; their repr
    # order follows the per-process string hash.
    script = (
        "import conftest; from vllm_ci.graph import stage_graph; "
        "print({s.name: s.code for s in stage_graph(conftest.example_build())})"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)},  # conftest's path
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(runs) == 1


def test_a_url_rewrite_moves_every_stage_that_runs_the_files_instructions() -> None:
    moved = moved_by(example_build(url_rewrite=["https://index.invalid/simple=file:///mirror"]))
    # No instruction of the file of their own:
    ours_only = {"extension", "rust-installed", "runtime-python", "package", "source-tree"}
    assert moved - ours_only == set(keys(stage_graph(example_build()))) - ours_only


@pytest.mark.anyio
async def test_a_stage_function_that_skips_an_instruction_fails_the_build_naming_the_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def skips_the_file(build, ctx):  # type: ignore[no-untyped-def]
        """Builds dev from its parent without walking dev's instructions."""
        return ctx.parents["base"]

    monkeypatch.setitem(DECLARED, "dev", dataclasses.replace(DECLARED["dev"], function=skips_the_file))
    with pytest.raises(StageError, match="^build: stage dev: its function did not walk every instruction"):
        await walked(DECLARED["dev"], example_build())(EMPTY_CONTEXT)


@pytest.mark.anyio
async def test_the_real_stage_function_walks_every_instruction_of_its_stage() -> None:
    build = example_build()
    assert isinstance(await walked(DECLARED["dev"], build)(EMPTY_CONTEXT), dagger.Container)
    assert build.walks["dev"].complete()


def with_descendants(stages: set[str]) -> set[str]:
    """These stages and every stage that builds on one of them, by the example's stage graph."""
    graph = {s.name: set(s.parents) for s in stage_graph(example_build())}
    found = set(stages)
    while grown := {name for name, parents in graph.items() if parents & found} - found:
        found |= grown
    return found


def test_a_release_lane_moves_only_the_stages_that_read_its_args_and_an_arg_no_stage_reads_moves_nothing() -> None:
    # A release build passes other ARGs than CI's (vllm#30762): every stage that reads none of them must hit.
    assert moved_by(example_build(build_arg=["UBUNTU_VERSION=20.04"])) == set()  # global, read by no stage here
    file = example_build().file
    declaring = {stage.name for stage in file.stages if any(name == "GGUF_VERSION" for _, name, _ in stage.args())}
    assert declaring
    assert moved_by(example_build(build_arg=["GGUF_VERSION===0.19.0"])) == with_descendants(declaring)
    # The arch list is base's last instruction, an ENV: base's entry keeps its key (its RUNs never see the
    # list), and so does test-deps, which copies a file of base's; every stage built on base's image moves.
    graph = stage_graph(example_build())
    built_on_base = {s.name for s in graph if "base" in s.parents and "base" not in s.files_only}
    moved = moved_by(example_build(build_arg=["torch_cuda_arch_list=9.0 10.0+PTX"]))
    assert moved == with_descendants(built_on_base)
    assert not {"base", "test-deps", "vllm-runtime-base", "runtime-python"} & moved
    assert {"csrc-build", "build", "dev", "test"} <= moved
    # So base's function may not read the arch list: its entry's key does not hold it.
    build = example_build()
    view = build.for_stage(DECLARED["base"], build.key_values(DECLARED["base"], build.tails["base"]))
    assert view.value("PYTHON_VERSION")
    with pytest.raises(UndeclaredRead, match="stage base reads torch_cuda_arch_list"):
        view.value("torch_cuda_arch_list")
