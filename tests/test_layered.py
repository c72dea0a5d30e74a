"""Layers in proportion to the change (stagecache.layered): which files a new layer holds, and which
previous entry a stage may build on, and what of the source a stage function is given. Pure logic, and one
engine test of the source given; the registry side is in test_python_only_floor."""

from __future__ import annotations

import json
import pathlib

import pytest
from dagger import dag

from stagecache.inputs import SourceFile
from stagecache.keys import KeyPreimage
from stagecache.layered import DEPTH_LABEL, MAX_DEPTH, Previous, builds_on, layers_for, literal, stage_source
from stagecache.refs import ImageRef

PREVIOUS_REF = ImageRef.parse("127.0.0.1:5000/cache:package-0123@sha256:" + "a" * 64)


def files(**digests: str) -> dict[str, SourceFile]:
    """Files as a stage context holds them, path -> entry (names with `_` for `/`)."""
    return {name.replace("_", "/") + ".py": SourceFile(f"file:{digest}", 1) for name, digest in digests.items()}


def previous(depth: int | str | None, **digests: str) -> Previous:
    """A previous entry holding these files, stacked `depth` layers deep (None: no depth label)."""
    labels = {} if depth is None else {DEPTH_LABEL: str(depth)}
    return Previous(PREVIOUS_REF, {path: f.entry for path, f in files(**digests).items()}, labels)


def test_a_stage_with_no_previous_entry_writes_all_its_files_in_one_layer() -> None:
    layers = layers_for(files(vllm_a="1", vllm_b="2"), None)
    assert (layers.paths, layers.depth, layers.previous) == (("vllm/a.py", "vllm/b.py"), 1, None)


def test_a_changed_and_a_new_file_are_all_the_next_layer_holds() -> None:
    layers = layers_for(files(vllm_a="1", vllm_b="3", vllm_c="4"), previous(1, vllm_a="1", vllm_b="2"))
    assert (layers.paths, layers.depth, layers.previous) == (("vllm/b.py", "vllm/c.py"), 2, PREVIOUS_REF)


def test_a_deleted_file_starts_over_with_all_the_files() -> None:
    layers = layers_for(files(vllm_a="1"), previous(3, vllm_a="1", vllm_b="2"))
    assert (layers.paths, layers.depth, layers.previous) == (("vllm/a.py",), 1, None)


def test_a_full_stack_or_an_entry_not_built_in_layers_starts_over() -> None:
    now = files(vllm_a="1", vllm_b="3")
    assert layers_for(now, previous(MAX_DEPTH - 1, vllm_a="1", vllm_b="2")).depth == MAX_DEPTH
    assert layers_for(now, previous(MAX_DEPTH, vllm_a="1", vllm_b="2")).depth == 1
    assert layers_for(now, previous(None, vllm_a="1", vllm_b="2")).depth == 1
    assert layers_for(now, previous("x", vllm_a="1", vllm_b="2")).depth == 1  # a broken label breaks no build


def test_only_an_entry_whose_key_differs_in_its_files_alone_is_built_on() -> None:
    base = KeyPreimage(
        stage="package", code="c1", args={"PYTHON_VERSION": "3.12"}, parents={"runtime": "k1"}, inputs="i1"
    )
    canonical = json.loads(base.canonical())
    for same, change in ((True, {"inputs": "i2"}), (False, {"code": "c2"}), (False, {"parents": {"runtime": "k2"}})):
        assert builds_on(canonical, {**canonical, **change}) is same, change
    other_args = KeyPreimage(**{**base.__dict__, "args": {"PYTHON_VERSION": "3.11"}})
    other_layers = KeyPreimage(**{**base.__dict__, "layers": "gzip"})
    assert not builds_on(canonical, json.loads(other_args.canonical()))
    assert not builds_on(canonical, json.loads(other_layers.canonical()))


def test_a_path_is_matched_literally_not_as_a_pattern() -> None:
    assert literal("vllm/a[1]*?.py") == "vllm/a\\[1\\]\\*\\?.py"


@pytest.mark.anyio
async def test_a_stage_built_on_its_previous_entry_is_given_the_changed_files_alone_and_others_what_they_read(
    client: None, tmp_path: pathlib.Path
) -> None:
    for path in ("vllm/a.py", "vllm/b.py", "vllm/c.py", "setup.py", "build/ignored.o"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(path)
    checkout = dag.host().directory(str(tmp_path), no_cache=True)
    context = checkout.filter(exclude=["build"])  # as an ignore file leaves it out
    now = files(vllm_a="1", vllm_b="3", vllm_c="4")

    async def given(reads: tuple[str, ...], before: Previous | None) -> list[str]:
        return sorted(await stage_source(reads, checkout, context, now, before).glob("**/*.*"))

    # Built on its previous entry: b changed and c is new; a, setup.py and the ignored file are not given.
    assert await given(("vllm/**",), previous(1, vllm_a="1", vllm_b="2")) == ["vllm/b.py", "vllm/c.py"]
    # Without one, or starting over: what its reads select of the context.
    assert await given(("vllm/**",), None) == ["vllm/a.py", "vllm/b.py", "vllm/c.py"]
    assert await given(("vllm/**",), previous(MAX_DEPTH, vllm_a="1")) == ["vllm/a.py", "vllm/b.py", "vllm/c.py"]
    assert await given(("**",), None) == ["setup.py", "vllm/a.py", "vllm/b.py", "vllm/c.py"]
    assert await given((), None) == []
