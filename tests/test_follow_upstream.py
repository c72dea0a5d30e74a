"""A vLLM PR that edits docker/Dockerfile is built as written: the checkout's file is the only copy of
upstream's instructions. On the real engine and registry, against main's warm cache."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

from conftest import CLIENT, cache_for, cli_env, example_flags, source_of
from vllm_ci.upstream_file import UpstreamFile

pytestmark = [pytest.mark.anyio, pytest.mark.engine]


def edit_dockerfile(checkout: pathlib.Path, old: str, new: str) -> int:
    """Replace one text of the checkout's Dockerfile, as a PR would; the line the new text starts on."""
    path = checkout / "docker" / "Dockerfile"
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    return text[: text.index(old)].count("\n") + 1


async def test_a_prs_edits_to_the_dockerfile_are_in_the_image_and_only_their_stages_rebuild(
    client: None, warm_cache: str, example_dir: pathlib.Path
) -> None:
    # One row each: a changed RUN in vllm-runtime-base, a changed ARG default, a new ARG with a default
    # used by a new RUN in test-deps, and a new COPY of a new source file. No Python edit.
    line = edit_dockerfile(
        example_dir,
        "RUN python3 -m pip install uv\n",
        "RUN python3 -m pip install uv && echo runtime-pr > /runtime-pr.txt\n",
    )
    edit_dockerfile(example_dir, "ARG GDRCOPY_OS_VERSION=Ubuntu24_04\n", "ARG GDRCOPY_OS_VERSION=Ubuntu22_04\n")
    (example_dir / "tools" / "pr_tool.sh").write_text("#!/bin/sh\necho a PR's tool\n")
    edit_dockerfile(
        example_dir,
        "FROM test-deps AS test\n",
        'ARG PR_GREETING="hello from a PR"\nRUN echo "$PR_GREETING" > /greeting.txt\n'
        "COPY tools/pr_tool.sh /usr/local/bin/pr_tool.sh\n\nFROM test-deps AS test\n",
    )
    image, report = await cache_for(folder=example_dir, cache_from=[warm_cache]).build(source_of(example_dir), "test")
    outcomes = report.outcomes()
    # Nothing below the edits is rebuilt (a hit, or not even needed because its child hit).
    assert {outcomes[s] for s in ("base", "csrc-build", "rust-build", "extension")} <= {"hit", "unused"}
    assert {outcomes[s] for s in ("vllm-runtime-base", "runtime-python", "test-deps", "test")} == {"built"}
    assert "line" in report.record("test-deps").why
    why = report.record("vllm-runtime-base").why
    assert f"(line {line})" in why and "ARG GDRCOPY_OS_VERSION: 'Ubuntu24_04' -> 'Ubuntu22_04'" in why
    assert await image.file("/runtime-pr.txt").contents() == "runtime-pr\n"
    assert "gdrcopy for Ubuntu22_04" in await image.file("/etc/gdrcopy-request").contents()
    assert await image.file("/greeting.txt").contents() == "hello from a PR\n"
    assert await image.file("/usr/local/bin/pr_tool.sh").contents() == "#!/bin/sh\necho a PR's tool\n"


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("uv pip list", "uv pip list -v", "stage vllm-base: deviated instruction changed since it was accepted"),
        ("FROM base AS dev\n", "FROM base AS lint\nRUN true\n\nFROM base AS dev\n", "stage lint: new stage"),
        ("FROM base AS dev\n", "FROM csrc-build AS dev\n", "stage dev: FROM changed"),
    ],
)
def test_an_edit_that_needs_a_person_is_refused_in_one_line_before_any_container_work(
    engine: None, example_dir: pathlib.Path, old: str, new: str, says: str
) -> None:
    edit_dockerfile(example_dir, old, new)
    edited = UpstreamFile.parse((example_dir / "docker" / "Dockerfile").read_text(), "docker/Dockerfile")
    stage = edited.stage(says.split()[1].rstrip(":"))
    named = [i.line for i in stage.instructions if "uv pip list -v" in i.text]  # the deviated RUN, if edited
    line = named[0] if named else stage.line
    proc = subprocess.run(
        [CLIENT, *example_flags(), "plan", "--source", example_dir],
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(),
    )
    assert proc.returncode == 2, proc.stderr
    [error] = proc.stderr.strip().splitlines()
    assert error.startswith(f"vllm-ci: error: docker/Dockerfile:{line}: {says}")
    diff = proc.stdout.splitlines()  # the detail, shown before the line
    if "deviated" in says:
        assert diff[-2:] == [
            "-RUN --mount=type=cache,target=/opt/uv/cache . /etc/environment && uv pip list",
            "+RUN --mount=type=cache,target=/opt/uv/cache . /etc/environment && uv pip list -v",
        ]
    else:
        assert diff == []
