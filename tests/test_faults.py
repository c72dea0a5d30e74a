"""Fault injection on the real engine and registry. Each test breaks one thing, then checks the
build's outcome and that what the cache holds afterwards is valid: every blob of the entry present
with bytes that match its digest, and sealed by its record (README: "A broken cache never breaks a build")."""

from __future__ import annotations

import json
import os
import pathlib
import uuid

import anyio
import dagger
import pytest
from dagger import dag

from conftest import (
    CLIENT,
    EXAMPLE,
    REGISTRY,
    REPO,
    STATE,
    assert_valid_entry,
    build,
    cache_for,
    cli_env,
    entry_tags_of,
    example_flags,
    fresh_agent,
    source_of,
)
from local_registry import LocalRegistry, RegistryAPI
from stagecache.keys import cache_tag
from stagecache.registry import ImageRef, RegistryClient
from stagecache.report import BuildReport, StageRecord

# The build base and a child that runs commands on it: the smallest pair that pulls a parent's layers
# (the runtime base would add minutes of apt and pip for nothing the faults need).
BASE = "base"
CHILD = "extensions-build"
REPO_ENGINE = REPO / "ci" / "engine"


def build_on_its_own_connection(target: str, **cache: object) -> BuildReport:
    """A build on a connection of its own (for tests that restart the engine between builds)."""

    async def run() -> BuildReport:
        with open(os.devnull, "w") as log:
            async with dagger.connection(dagger.Config(log_output=log)):
                return await build(EXAMPLE, target, **cache)

    return anyio.run(run)


def engine_pid() -> str:
    """The pid of the running engine."""
    return (STATE / "engine" / "pid").read_text().strip()


@pytest.mark.wipes_engine
def test_a_layer_blob_whose_bytes_are_corrupt_is_rebuilt_and_never_reaches_a_command(
    engine: None, tmp_path: pathlib.Path
) -> None:
    with LocalRegistry(tmp_path / "registry") as registry:  # its own storage: the corruption stays in it
        repo = f"{registry.addr}/faults/cache"
        first = build_on_its_own_connection(BASE, cache_to=repo)
        tag = cache_tag(BASE, first.record(BASE).key)
        top = registry.layers("faults/cache", tag)[-1]
        data = registry.dir / "data/docker/registry/v2/blobs/sha256" / top[7:9] / top[7:] / "data"
        content = bytearray(data.read_bytes())
        content[len(content) // 2] ^= 0xFF
        data.write_bytes(bytes(content))
        fresh_agent()  # an agent that must pull the layer: its child runs commands on it
        pid = engine_pid()
        report = build_on_its_own_connection(CHILD, cache_from=[repo], cache_to=repo)
        assert engine_pid() == pid and pathlib.Path(f"/proc/{pid}").exists()  # the engine lived
        assert report.record(BASE).outcome == "exported"
        assert report.record(BASE).why == (
            f"unusable entry {repo}:{tag}@{(first.record(BASE).ref.digest or '')[:19]}: "
            f"layer {top[:19]} is corrupt (its bytes do not match its digest); rebuilt"
        )
        assert report.record(CHILD).outcome == "exported"
        assert_valid_entry(registry, "faults/cache", tag)


async def an_entry_of_the_base(cache_repo: str) -> tuple[ImageRef, str, RegistryAPI]:
    """A fresh cache entry of the runtime base: its repository, its tag, and a client of that registry."""
    first = await build(EXAMPLE, BASE, cache_to=cache_repo)
    ref = ImageRef.parse(cache_repo)
    return ref, cache_tag(BASE, first.record(BASE).key), RegistryAPI(ref.registry)


async def rebuilt_and_repaired(cache_repo: str, ref: ImageRef, tag: str, registry: RegistryAPI) -> StageRecord:
    """Build the base through the broken cache: it is rebuilt and exported, the entry left is whole,
    and the next build hits it. The rebuilt stage's record, for what it says of the fault."""
    report = await build(EXAMPLE, BASE, cache_from=[cache_repo], cache_to=cache_repo)
    assert report.record(BASE).outcome == "exported"
    assert_valid_entry(registry, ref.repository, tag)
    assert (await build(EXAMPLE, BASE, cache_from=[cache_repo])).record(BASE).outcome == "hit"
    return report.record(BASE)


@pytest.mark.anyio
async def test_a_manifest_whose_config_the_repository_does_not_hold_is_rebuilt(client: None, cache_repo: str) -> None:
    ref, tag, registry = await an_entry_of_the_base(cache_repo)
    config = registry.manifest(ref.repository, tag)["config"]["digest"]
    async with RegistryClient(ref.registry) as client_:
        await client_.delete_blob(ref.repository, config)
    record = await rebuilt_and_repaired(cache_repo, ref, tag, registry)
    assert record.why.startswith(f"corrupt entry {cache_repo}:{tag}: blob {config[:19]} missing")


@pytest.mark.anyio
async def test_a_foreign_image_under_an_entrys_tag_with_its_labels_is_not_used(client: None, cache_repo: str) -> None:
    ref, tag, registry = await an_entry_of_the_base(cache_repo)
    labels = registry.config(ref.repository, tag)["config"]["Labels"]
    foreign = dag.container().from_(f"{REGISTRY}/library/debian:bookworm")
    for name, value in labels.items():
        foreign = foreign.with_label(name, value)
    await foreign.publish(f"{cache_repo}:{tag}")  # same tag, same labels, someone else's image
    record = await rebuilt_and_repaired(cache_repo, ref, tag, registry)
    assert "not the image this cache exported" in record.note


@pytest.mark.anyio
async def test_an_entry_pruned_between_look_up_and_use_is_rebuilt_not_a_failure(client: None, cache_repo: str) -> None:
    first = await build(EXAMPLE, "test-deps", cache_to=cache_repo)
    ref, tag = ImageRef.parse(cache_repo), cache_tag("test-deps", first.record("test-deps").key)
    registry = RegistryAPI(ref.registry)
    cache = cache_for(cache_from=[cache_repo], cache_to=cache_repo)
    planned = cache.planner.plan  # the look-ups, on the filtered context

    async def plan_then_prune(checkout: dagger.Directory, source: dagger.Directory, target: str, **options: bool):  # type: ignore[no-untyped-def]
        found = await planned(checkout, source, target, **options)
        assert [p.hit for p in found if p.stage.name == "test-deps"][0] is not None  # looked up: a hit
        async with RegistryClient(ref.registry) as client_:  # what a prune run does, right then
            await client_.delete_manifest(ref.repository, registry.digest(ref.repository, tag))
        return found

    cache.planner.plan = plan_then_prune  # type: ignore[method-assign]
    _, report = await cache.build(source_of(EXAMPLE), "test-deps")
    assert report.record("test-deps").outcome == "exported"
    assert report.record("test-deps").why.startswith(f"unusable entry {cache_repo}:{tag}@")
    # The plan asked only for the hit target; its parents were looked up when it had to be rebuilt.
    assert [report.record(parent).outcome for parent in ("base", "vllm-runtime-base")] == ["hit", "hit"]
    assert_valid_entry(registry, ref.repository, tag)


@pytest.mark.wipes_engine
def test_an_engine_killed_mid_stage_fails_the_build_in_one_line_and_the_next_run_works(engine: None) -> None:
    import signal
    import subprocess

    cache = f"{REGISTRY}/test/killed-{uuid.uuid4().hex[:12]}"
    # Target csrc-build: the compile is where the engine dies; the runtime stages would only add minutes.
    command = [
        str(CLIENT),
        *example_flags(),
        "build",
        "--source",
        str(EXAMPLE),
        "--target",
        "csrc-build",
        "--cache-to",
        cache,
    ]
    fresh_agent()  # cold: csrc-build compiles for a while
    with subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as build_:
        assert build_.stderr is not None
        seen = []
        for line in build_.stderr:
            seen.append(line)
            if line.startswith("stage csrc-build: building"):
                os.kill(int(engine_pid()), signal.SIGKILL)  # the engine ci/up started, by its pid
                break
        rest = build_.communicate(timeout=600)[1]
    lines = rest.strip().splitlines()
    assert build_.returncode == 1, "".join(seen) + rest
    assert lines[-1].startswith("vllm-ci: error: engine: the Dagger engine stopped answering while building stage ")
    assert "csrc-build" in lines[-1] and "Traceback" not in rest
    subprocess.run([REPO_ENGINE, "start"], check=True, capture_output=True)
    again = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    ref = ImageRef.parse(cache)
    registry = RegistryAPI(ref.registry)
    for tag in entry_tags_of(registry, ref.repository):
        assert_valid_entry(registry, ref.repository, tag)
    assert {s["outcome"] for s in json.loads(again.stdout)["stages"]} <= {"hit", "exported"}


@pytest.mark.wipes_engine
def test_a_registry_stopped_mid_export_fails_that_export_only_and_leaves_no_invalid_entry(
    engine: None, tmp_path: pathlib.Path
) -> None:
    import threading

    registry = LocalRegistry(tmp_path / "registry").start()
    try:
        repo = f"{registry.addr}/faults/cache"

        async def run() -> BuildReport:
            with open(os.devnull, "w") as log:
                async with dagger.connection(dagger.Config(log_output=log)):
                    cache = cache_for(cache_to=repo)
                    publish = cache.publisher.publish

                    async def publish_while_the_registry_stops(ctr: dagger.Container, ref: ImageRef) -> ImageRef:
                        if str(ref).startswith(f"{repo}:{BASE}-"):  # the first big export: stop the registry mid-way
                            threading.Timer(0.5, registry.stop).start()
                        return await publish(ctr, ref)

                    cache.publisher.publish = publish_while_the_registry_stops  # type: ignore[method-assign]
                    _, report = await cache.build(source_of(EXAMPLE), CHILD)
                    return report

        fresh_agent()  # the layers are not in the engine: the export uploads them
        report = anyio.run(run)
        assert report.record(BASE).outcome == "export-failed"
        assert report.record(CHILD).outcome == "export-failed"  # the registry is still down
        registry.start()  # same storage, same port
        again = build_on_its_own_connection(CHILD, cache_from=[repo], cache_to=repo)
        outcomes = again.outcomes()
        assert (outcomes[BASE], outcomes[CHILD]) == ("exported", "exported")  # nothing half-written was used
        for tag in entry_tags_of(registry, "faults/cache"):
            assert_valid_entry(registry, "faults/cache", tag)
        assert build_on_its_own_connection(CHILD, cache_from=[repo]).record(CHILD).outcome == "hit"
    finally:
        registry.stop()


@pytest.fixture
def second_engine(engine: None, tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    """A second engine beside the first: its own state directory, socket and container network
    (ci/engine with VLLM_CI_* overrides), stopped by its pid afterwards. Yields its runner host."""
    import shutil
    import subprocess

    sock = pathlib.Path(f"/run/dagger-{uuid.uuid4().hex[:8]}/engine.sock")
    env = {
        **os.environ,
        "VLLM_CI_STATE": str(tmp_path / "agent-2"),
        "VLLM_CI_ENGINE_SOCK": str(sock),
        "VLLM_CI_ENGINE_NETWORK": "daggertwo 10.89.0.0/16",
    }
    started = subprocess.run([REPO_ENGINE, "start"], env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"unix://{sock}"
    finally:
        subprocess.run([REPO_ENGINE, "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(sock.parent, ignore_errors=True)
        shutil.rmtree(tmp_path / "agent-2", ignore_errors=True)  # its state: GBs of snapshots


@pytest.mark.wipes_engine
def test_two_engines_racing_on_one_cold_key_both_succeed_and_leave_a_whole_entry(second_engine: str) -> None:
    import subprocess

    cache = f"{REGISTRY}/test/race-{uuid.uuid4().hex[:12]}"
    # Target csrc-build: two stages, both cold on both engines, are the race; the runtime adds only minutes.
    command = [
        str(CLIENT),
        *example_flags(),
        "build",
        "--source",
        str(EXAMPLE),
        "--target",
        "csrc-build",
        "--cache-to",
        cache,
    ]
    agents = [cli_env(), {**cli_env(), "_EXPERIMENTAL_DAGGER_RUNNER_HOST": second_engine}]
    fresh_agent()  # the first agent cold too: both build every stage at the same moment
    builds = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for env in agents
    ]
    results = [b.communicate(timeout=1800) for b in builds]
    for build_, (out, err) in zip(builds, results):
        assert build_.returncode == 0, err[-3000:]
        assert {s["outcome"] for s in json.loads(out)["stages"]} <= {"exported", "hit"}
    ref = ImageRef.parse(cache)
    registry = RegistryAPI(ref.registry)
    for tag in entry_tags_of(registry, ref.repository):
        assert_valid_entry(registry, ref.repository, tag)
    again = subprocess.run(
        command[:-2] + ["--cache-from", cache], env=agents[1], capture_output=True, text=True, timeout=1800
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["stages"][-1]["outcome"] == "hit"
