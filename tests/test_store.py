"""The registry stage cache on the real engine and registry: export, import, fallback, report, prune."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib

import anyio
import dagger
import pytest
from dagger import dag

from conftest import (
    EXAMPLE,
    REGISTRY,
    build,
    cache_for,
    edit,
    edited_copy,
    entry_tags,
    example_build,
    example_module,
    fresh_agent,
    source_of,
)
from stagecache.errors import InputError, StageError
from stagecache.keys import KEY_LABEL, KeyPreimage, cache_tag
from stagecache.prune import prune
from stagecache.registry import ImageRef, RegistryClient
from stagecache.stages import PlannedStage
from stagecache.store import StageCache
from stagecache.why import inputs_tag
from vllm_ci.graph import stage_graph

pytestmark = pytest.mark.anyio
TEST_STAGES = {
    "base",
    "rust-build-cache",
    "rust-build",
    "csrc-build",
    "extensions-build",
    "extension",
    "vllm-runtime-base",
    "runtime-python",
    "rust-installed",
    "package",
    "source-tree",
    "test-deps",
    "test",
}


async def test_a_cold_run_exports_every_stage(client: None, cache_repo: str) -> None:
    report = await build(EXAMPLE, cache_to=cache_repo)
    assert set(report.outcomes()) == TEST_STAGES
    assert set(report.outcomes().values()) == {"exported"}
    ref = ImageRef.parse(cache_repo)
    async with RegistryClient(ref.registry) as registry:
        for record in report.stages:
            labels, _ = await registry.labels(ref.repository, cache_tag(record.stage, record.key))
            assert labels[KEY_LABEL] == record.key


async def test_a_rerun_with_no_change_hits_asks_the_cache_for_the_target_only_and_runs_no_stage_work(
    client: None, warm_cache: str
) -> None:
    cache, asked = cache_for(cache_from=[warm_cache]), []
    look_up = cache.planner.lookup

    async def counted(preimage: KeyPreimage) -> tuple[ImageRef | None, str]:
        asked.append(preimage.stage)
        return await look_up(preimage)

    cache.planner.lookup = counted  # type: ignore[method-assign]
    _, report = await cache.build(source_of(EXAMPLE), "test")
    assert asked == ["test"]  # its parents' entries are of no use to a hit
    assert report.record("test").outcome == "hit"
    assert str(report.record("test").ref).startswith(f"{warm_cache}:test-")
    assert not {"exported", "built"} & set(report.outcomes().values())


async def test_a_target_that_hits_is_published_as_its_entry_by_the_registry_alone(
    client: None, warm_cache: str, cache_repo: str
) -> None:
    cache, by_engine = cache_for(cache_from=[warm_cache]), []
    engine_publish = cache.publisher.publish

    async def counted(ctr: dagger.Container, ref: ImageRef) -> ImageRef:
        by_engine.append(ref)
        return await engine_publish(ctr, ref)

    cache.publisher.publish = counted  # type: ignore[method-assign]
    image = ImageRef.parse(f"{cache_repo}-image:hit")
    _, report = await cache.build(source_of(EXAMPLE), "test", image)
    entry = report.record("test").ref
    assert report.record("test").outcome == "hit" and entry is not None and not by_engine
    assert report.image == image.with_digest(entry.digest or "")  # the entry's own manifest, tagged
    async with RegistryClient(image.registry) as registry:
        assert await registry.manifest_digest(image.repository, "hit") == entry.digest
        manifest, _ = await registry.manifest(image.repository, "hit") or ({}, "")
        assert await registry.missing_blobs(image.repository, manifest) == []  # every blob mounted


async def test_a_python_only_change_rebuilds_only_the_stages_that_read_it(
    client: None, warm_cache: str, example_dir: pathlib.Path
) -> None:
    edit(example_dir / "vllm" / "layers.py", "CHANGED_BY_TEST = 1")
    report = await build(example_dir, cache_from=[warm_cache])
    rebuilt = {name for name, outcome in report.outcomes().items() if outcome in ("built", "exported")}
    assert rebuilt == {"package", "source-tree", "test"}  # the first two by one layer onto their previous entry
    assert report.record("package").note.startswith("built on ") and report.record("source-tree").note
    assert report.record("test-deps").outcome == report.record("extension").outcome == "hit"


async def test_a_release_arch_list_reuses_base_and_test_deps_and_gives_base_its_own_arch_list(
    client: None, warm_cache: str
) -> None:
    # The arch list is base's last instruction, an ENV: base's entry holds none of it and is reused; the image
    # children get has the release's value; test-deps, which copies a file of base's, is reused too.
    release = {"cache_from": [warm_cache], "build_arg": ["torch_cuda_arch_list=9.0"]}
    base, report = await cache_for(**release).build(source_of(EXAMPLE), "base")  # type: ignore[arg-type]
    assert report.record("base").outcome == "hit"
    assert await base.env_variable("TORCH_CUDA_ARCH_LIST") == "9.0"
    entry = dag.container().from_(str(report.record("base").ref))
    assert await entry.env_variable("TORCH_CUDA_ARCH_LIST") is None
    assert set((await build(EXAMPLE, "test-deps", **release)).outcomes().values()) == {"hit", "unused"}


async def test_the_plan_names_keys_and_hits_before_any_container_work(client: None, warm_cache: str) -> None:
    plan = json.loads(await example_module().plan(source_of(EXAMPLE), cache_from=[warm_cache]))
    stages = {s["stage"]: s for s in plan["stages"]}
    assert set(stages) == TEST_STAGES
    assert all(s["hit"] and s["hit"].startswith(warm_cache) for s in stages.values())
    # csrc-build builds on base's image: keyed on base's entry with its config-only tail (its ENV) applied.
    tail = next(s.tail for s in stage_graph(example_build()) if s.name == "base")
    assert tail is not None
    assert json.loads(stages["csrc-build"]["preimage"])["parents"] == {"base": tail.given_key(stages["base"]["key"])}
    assert json.loads(stages["test-deps"]["preimage"])["parents"]["base"] == stages["base"]["key"]  # its files alone
    assert stages["csrc-build"]["args"]["max_jobs"] == "2"  # the values the stage reads, per stage


async def test_the_first_repository_that_hits_wins(client: None, warm_cache: str, cache_repo: str) -> None:
    report = await build(EXAMPLE, cache_from=[cache_repo, warm_cache])
    assert str(report.record("test").ref).startswith(warm_cache)


async def test_an_unreachable_registry_warns_and_the_build_goes_on(client: None) -> None:
    report = await build(EXAMPLE, "vllm-runtime-base", cache_to="127.0.0.1:5999/nobody/cache")
    assert report.record("vllm-runtime-base").outcome == "export-failed"
    assert "unreachable" in report.record("vllm-runtime-base").note


async def test_strict_mode_fails_the_build_when_export_fails(client: None, tmp_path: pathlib.Path) -> None:
    from local_registry import LocalRegistry

    with LocalRegistry(tmp_path / "read-only", readonly=True) as registry:  # reads answer, writes are refused
        with pytest.raises(StageError, match="^export: "):
            await build(EXAMPLE, "vllm-runtime-base", cache_to=f"{registry.addr}/nobody/cache", strict=True)


async def test_a_foreign_tag_with_the_right_name_is_ignored(client: None, cache_repo: str) -> None:
    planned = {p.stage.name: p for p in await cache_for(cache_from=[cache_repo]).plan(source_of(EXAMPLE), "test")}
    key = planned["vllm-runtime-base"].key
    await (
        dag.container()
        .from_(f"{REGISTRY}/library/debian:bookworm")
        .publish(f"{cache_repo}:{cache_tag('vllm-runtime-base', key)}")
    )
    again = {p.stage.name: p for p in await cache_for(cache_from=[cache_repo]).plan(source_of(EXAMPLE), "test")}
    assert again["vllm-runtime-base"].hit is None
    assert "no matching key label" in again["vllm-runtime-base"].note
    report = await build(EXAMPLE, "vllm-runtime-base", cache_from=[cache_repo])
    assert report.record("vllm-runtime-base").outcome == "built"


async def test_two_builds_racing_on_one_key_both_succeed(client: None, cache_repo: str) -> None:
    outcomes = []

    async def one() -> None:
        outcomes.append((await build(EXAMPLE, "test-deps", cache_to=cache_repo)).record("test-deps").outcome)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    assert sorted(outcomes) in (["exported", "exported"], ["hit", "exported"])
    assert (await build(EXAMPLE, "test-deps", cache_from=[cache_repo])).record("test-deps").outcome == "hit"


async def test_prune_deletes_only_what_it_should(client: None, cache_repo: str) -> None:
    report = await build(EXAMPLE, "test-deps", cache_to=cache_repo)
    live = report.record("test-deps").key
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    dry = await prune(ImageRef.parse(cache_repo), live_keys={live}, keep_days=7, keep_last=0, dry_run=True, now=later)
    assert "would delete vllm-runtime-base-" in dry and "kept test-deps-" in dry
    ref = ImageRef.parse(cache_repo)
    async with RegistryClient(ref.registry) as registry:
        assert len(entry_tags(await registry.tags(ref.repository))) == 3  # base, vllm-runtime-base, test-deps
        await prune(ImageRef.parse(cache_repo), live_keys={live}, keep_days=7, keep_last=0, dry_run=False, now=later)
        runtime_tag = cache_tag("vllm-runtime-base", report.record("vllm-runtime-base").key)
        assert await registry.manifest_digest(ref.repository, runtime_tag) is None
        assert await registry.manifest_digest(ref.repository, inputs_tag(runtime_tag)) is None
        assert await registry.manifest_digest(ref.repository, cache_tag("test-deps", live)) is not None
    kept = await prune(ImageRef.parse(cache_repo), live_keys=set(), keep_days=7, keep_last=1, dry_run=True, now=later)
    assert "kept test-deps-" in kept and "newest 1" in kept


@pytest.mark.wipes_engine
async def test_a_fresh_agent_still_hits_from_the_registry(warm_cache: str, engine: None) -> None:
    fresh_agent()
    with open(os.devnull, "w") as log:
        async with dagger.connection(dagger.Config(log_output=log)):
            report = await build(EXAMPLE, cache_from=[warm_cache])
            assert report.record("test").outcome == "hit"
            out = await cache_for().import_image(report.record("test").ref).with_exec(["vllm", "--version"]).stdout()
    assert out.strip() == "0.1.0"


def test_a_failing_stage_is_named_in_one_error_line(engine: None, example_dir: pathlib.Path) -> None:
    import subprocess
    import sys

    from conftest import EXAMPLE as example

    edit(example_dir / "csrc" / "ops.c", "this is not C;")
    flags = (example / "vllm-ci.args").read_text().splitlines()
    result = subprocess.run(
        [sys.executable, "-m", "vllm_ci", *flags, "test-image", "--source", str(example_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BUILDKITE": "true"},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    [error] = [line for line in lines if line.startswith("vllm-ci: error")]
    assert error == lines[-1]
    # The compile is upstream's RUN as written: its shell script, which names the setup.py command.
    assert error.startswith("vllm-ci: error: build: command '/bin/sh -c ")
    assert "python3 setup.py bdist_wheel --dist-dir=dist --py-limited-api=cp38" in error
    assert "(stage csrc-build, key " in error
    # Live view: the failing stage started and failed, each on a line of its own (a Buildkite group).
    assert "--- stage csrc-build: building" in lines and lines.index("^^^ +++") < lines.index(
        "stage csrc-build: failed"
    )


async def test_every_miss_says_why_a_file_an_arg_or_the_code(
    client: None, cache_repo: str, example_dir: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm_ci.declare import DECLARED

    # Target extension: it holds every kind of miss (a file, an ARG, a parent, the code) without the
    # runtime stages, whose exports would only add minutes.
    cold = await build(example_dir, "extension", cache_to=cache_repo)
    assert cold.record("csrc-build").why == "first build: no entry of stage csrc-build in the cache yet"

    edit(example_dir / "csrc" / "ops.c", "/* changed by the test */")
    plan = json.loads(await example_module().plan(source_of(example_dir), cache_from=[cache_repo]))
    assert {s["stage"]: s["why"] for s in plan["stages"]}["csrc-build"] == "files ~csrc/ops.c"
    report = await build(example_dir, "extension", cache_from=[cache_repo], cache_to=cache_repo)
    assert report.record("csrc-build").why == "files ~csrc/ops.c"
    assert report.record("extension").why == "parent csrc-build changed"
    assert "files ~csrc/ops.c" in report.table()

    report = await build(
        example_dir, "extension", cache_from=[cache_repo], cache_to=cache_repo, build_arg=["max_jobs=4"]
    )
    assert report.record("csrc-build").why == "ARG max_jobs: '2' -> '4'"
    assert {s["stage"]: s["why"] for s in json.loads(report.to_json())["stages"]}[
        "csrc-build"
    ] == "ARG max_jobs: '2' -> '4'"

    decl = DECLARED["extension"]
    edited = edited_copy(decl.function, "alone in one layer", "alone in one layer, edited", tmp_path)
    monkeypatch.setitem(DECLARED, "extension", dataclasses.replace(decl, function=edited))
    report = await build(
        example_dir, "extension", cache_from=[cache_repo], cache_to=cache_repo, build_arg=["max_jobs=4"]
    )
    assert report.record("extension").why == "the stage's code changed"
    assert report.record("csrc-build").outcome == "hit"


async def test_an_entry_missing_a_layer_blob_is_rebuilt_and_repaired_not_used(client: None, cache_repo: str) -> None:
    first = await build(EXAMPLE, "vllm-runtime-base", cache_to=cache_repo)
    ref = ImageRef.parse(cache_repo)
    tag = cache_tag("vllm-runtime-base", first.record("vllm-runtime-base").key)
    async with RegistryClient(ref.registry) as registry:
        manifest, _ = await registry.manifest(ref.repository, tag)
        lost = manifest["layers"][-1]["digest"]
        await registry.delete_blob(ref.repository, lost)
        assert await registry.missing_blobs(ref.repository, manifest) == [lost]
    report = await build(EXAMPLE, "vllm-runtime-base", cache_from=[cache_repo], cache_to=cache_repo)
    record = report.record("vllm-runtime-base")
    assert record.outcome == "exported"
    assert record.why.startswith(f"corrupt entry {cache_repo}:{tag}: blob {lost[:19]} missing")
    async with RegistryClient(ref.registry) as registry:
        manifest, _ = await registry.manifest(ref.repository, tag)
        assert await registry.missing_blobs(ref.repository, manifest) == []
    again = await build(EXAMPLE, "vllm-runtime-base", cache_from=[cache_repo])
    assert again.record("vllm-runtime-base").outcome == "hit"


async def test_an_executable_bit_moves_the_key_of_the_stages_that_read_that_file_only(
    client: None, example_dir: pathlib.Path
) -> None:
    async def keys() -> dict[str, str]:
        return {p.stage.name: p.key for p in await cache_for().plan(source_of(example_dir), "test")}

    before = await keys()
    (example_dir / "csrc" / "ops.c").chmod(0o755)
    after = await keys()
    assert {s for s in before if before[s] != after[s]} == {"csrc-build", "extension", "source-tree", "test"}


async def test_what_the_checkouts_dockerignore_excludes_moves_no_key_and_reaches_no_stage(
    client: None, example_dir: pathlib.Path, given
) -> None:
    async def plan() -> dict[str, PlannedStage]:
        return {p.stage.name: p for p in await cache_for().plan(given(example_dir), "test")}

    ignore = example_dir / ".dockerignore"
    ignore.write_text(ignore.read_text() + "vllm/*.tmp\n!vllm/keep.tmp\n")
    before = await plan()
    (example_dir / "vllm" / "scratch.tmp").write_text("a local scratch file\n")
    after = await plan()
    assert {s: p.key for s, p in after.items()} == {s: p.key for s, p in before.items()}
    assert "vllm/scratch.tmp" not in after["test"].files
    (example_dir / "vllm" / "keep.tmp").write_text("an exception to the ignore pattern\n")
    kept = await plan()
    assert "vllm/keep.tmp" in kept["test"].files
    # The stages that read all of vllm/: the package, and the checkout as test's ADD . lays it out.
    assert {s for s in kept if kept[s].key != after[s].key} == {"package", "source-tree", "test"}


async def test_a_build_shows_a_start_and_an_end_line_for_each_stage_that_runs(client: None, cache_repo: str) -> None:
    import io

    from stagecache.report import Progress

    stream = io.StringIO()
    cache = StageCache(stage_graph(example_build()), cache_to=ImageRef.parse(cache_repo), progress=Progress(stream))
    _, report = await cache.build(source_of(EXAMPLE), "test-deps")
    lines = stream.getvalue().splitlines()
    for stage in ("vllm-runtime-base", "test-deps"):
        [start] = [line for line in lines if line.startswith(f"stage {stage}: building")]
        [end] = [line for line in lines if line.startswith(f"stage {stage}: exported in ")]
        assert lines.index(start) < lines.index(end)
        record = report.record(stage)
        assert record.queued_at <= record.started_at <= record.built_at <= record.ended_at  # the timeline
    assert report.timeline().splitlines()[0].split() == ["stage", "queued", "running", "exporting", "critical"]


async def test_a_registry_answering_503_twice_is_retried_and_the_hit_still_found(client: None, warm_cache: str) -> None:
    from flaky_proxy import FlakyProxy

    ref = ImageRef.parse(warm_cache)
    with FlakyProxy(ref.registry, failures=2) as proxy:
        report = await build(EXAMPLE, "vllm-runtime-base", cache_from=[f"{proxy.addr}/{ref.repository}"])
    assert proxy.answered[:2] == [503, 503] and 200 in proxy.answered
    assert report.record("vllm-runtime-base").outcome == "hit"
    assert report.registry_retries == 2
    assert report.table().splitlines()[-1].endswith("; 2 registry requests retried")


async def test_an_unreachable_cache_is_summarised_in_the_first_line_and_strict_makes_it_fatal(client: None) -> None:
    report = await build(EXAMPLE, "vllm-runtime-base", cache_from=["127.0.0.1:5999/nobody/cache"])
    assert report.table().splitlines()[0] == (
        "0/1 stages from cache: registry 127.0.0.1:5999 unreachable: ConnectError "
        "(under `dagger call`, pass --registry-service=tcp://127.0.0.1:5999 to reach the host's loopback)"
    )
    with pytest.raises(StageError, match="^look-up: registry 127.0.0.1:5999 unreachable"):
        await build(EXAMPLE, "vllm-runtime-base", cache_from=["127.0.0.1:5999/nobody/cache"], strict=True)


async def test_an_ignore_file_that_excludes_a_file_a_stage_copies_is_refused_naming_the_file_pattern_and_stage(
    client: None, example_dir: pathlib.Path, given
) -> None:
    (example_dir / ".dockerignore").write_text("*\n")
    with pytest.raises(InputError) as refused:
        await cache_for().plan(given(example_dir), "base")
    line = str(refused.value)
    assert refused.value.exit_code == 2 and "\n" not in line
    assert line.startswith("plan: .dockerignore excludes ") and "which stage base reads (pattern *)" in line


async def test_an_ignore_pattern_buildkit_cannot_match_is_refused_naming_the_file_and_pattern(
    client: None, example_dir: pathlib.Path, given
) -> None:
    (example_dir / ".dockerignore").write_text("build\n[\n")
    with pytest.raises(
        InputError, match=r"^plan: \.dockerignore: pattern \[ cannot be matched: its \[ class is not closed$"
    ):
        await cache_for().plan(given(example_dir), "base")


async def test_a_plan_hashes_only_the_files_its_stages_read_not_a_large_file_beside_them(
    client: None, example_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stagecache.inputs

    hashed: list[str] = []
    files_of = stagecache.inputs.files_of
    monkeypatch.setattr(stagecache.inputs, "files_of", lambda root: hashed.extend(found := files_of(root)) or found)
    with open(example_dir / "weights.bin", "wb") as big:
        big.truncate(64 * 1024 * 1024)  # a checkpoint left in the checkout, read by no stage of base's
    planned = await cache_for().plan(source_of(example_dir), "base")
    assert hashed and "weights.bin" not in hashed
    assert set(planned[-1].files) <= set(hashed)
