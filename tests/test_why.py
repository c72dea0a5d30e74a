"""Why a stage missed (stagecache.why.explain), in one line from two preimages: pure logic, no engine; and the
input manifest it reads, on the registry."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from conftest import PREIMAGE, REGISTRY_LOG
from stagecache.refs import ImageRef
from stagecache.registry import RegistryClient
from stagecache.traffic import RegistryLog
from stagecache.why import explain, inputs_tag, load_inputs, store_inputs


def test_a_miss_names_the_arg_with_its_old_and_new_value_in_one_line() -> None:

    from stagecache.why import explain

    old = json.loads(PREIMAGE.canonical())
    new = json.loads(dataclasses.replace(PREIMAGE, args={"max_jobs": "16", "cuda_version": "13.0.3"}).canonical())
    assert explain(old, new, {}, {}) == "ARG max_jobs: '2' -> '16'"


def test_a_miss_names_a_change_of_layer_compression() -> None:

    from stagecache.why import explain

    gzip = json.loads(dataclasses.replace(PREIMAGE, layers="gzip").canonical())
    assert explain(json.loads(PREIMAGE.canonical()), gzip, {}, {}) == "layer compression: zstd -> gzip"


def test_a_miss_names_the_files_changed_added_and_removed_the_parent_and_the_code() -> None:

    from stagecache.why import explain

    changed = dataclasses.replace(
        PREIMAGE, parents={"base": "d" * 64}, code="sha256:" + "e" * 64, inputs="sha256:" + "f" * 64
    )
    line = explain(
        json.loads(PREIMAGE.canonical()),
        json.loads(changed.canonical()),
        {"csrc/ops.c": "file:1", "csrc/old.c": "file:2"},
        {"csrc/ops.c": "file:3", "csrc/new.c": "file:4"},
    )
    assert line == "parent base changed; the stage's code changed; files ~csrc/ops.c, +csrc/new.c, -csrc/old.c"


def test_a_file_name_with_a_newline_stays_on_one_line_of_a_miss() -> None:
    line = explain({"schema": 3, "inputs": "a"}, {"schema": 3, "inputs": "b"}, {}, {"vllm/evil\nstage base: hit": "x"})
    assert "\n" not in line and line == "files +'vllm/evil\\nstage base: hit'"


@pytest.mark.anyio
async def test_an_input_manifest_is_stored_gzipped_and_read_from_the_registry_once_per_run(cache_repo: str) -> None:
    """vLLM's 9,108 files make a 1.17 MB manifest, pushed beside every entry that reads them, and read back by
    the look-ups of a plan and a build, a stage's previous entry and the explanation of its miss."""
    inputs = {
        f"vllm/model_executor/module_{n}.py": "sha256:" + hashlib.sha256(bytes(n)).hexdigest() for n in range(3000)
    }
    ref = ImageRef.parse(cache_repo)
    async with RegistryClient(ref.registry) as client:
        subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "0" * 64, "size": 2}
        await store_inputs(client, ref.repository, "base-key", inputs, subject)
        found = await client.manifest(ref.repository, inputs_tag("base-key"))
        assert found is not None
        stored = found[0]["layers"][0]["size"]
        assert stored < len(json.dumps(inputs, separators=(",", ":"))) / 2
        log = RegistryLog(REGISTRY_LOG)
        mark = log.mark()
        for _ in range(3):
            assert await load_inputs(client, ref.repository, "base-key") == inputs
        assert log.since(mark, repositories=(ref.repository,)).pulled == {found[0]["layers"][0]["digest"]: stored}
