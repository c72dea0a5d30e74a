"""Conformance against vLLM's real docker/Dockerfile (0.33.0 from the package index) and edited copies
of it: each edit is named with its stage and line, and bad input is one line with exit 2."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess

import pytest

from conftest import REPO
from vllm_ci.args import PROJECT_ARGS, arg_defaults
from vllm_ci.conformance import CHANGED, MISSING, REPRODUCED, ConformanceReport, Row, check
from vllm_ci.declare import DECLARED
from vllm_ci.errors import UsageError
from vllm_ci.upstream import VLLM_VERSION, vllm_source

EXPECTED = REPO / "tests" / "expected" / f"conformance-vllm-{VLLM_VERSION}.json"
CLIENT = REPO / ".venv" / "bin" / "vllm-ci"


@pytest.fixture(scope="module")
def upstream_dockerfile() -> str:
    """The text of vLLM's real docker/Dockerfile."""
    return (vllm_source() / "docker" / "Dockerfile").read_text()


def report_on(text: str) -> ConformanceReport:
    """The conformance report of this project's stage functions on a Dockerfile's text."""
    return check(text, "docker/Dockerfile", DECLARED, arg_defaults(), PROJECT_ARGS)


def gaps(report: ConformanceReport) -> list[list[object]]:
    """What is not reproduced, as [stage, line, status, instruction kind, digest of its text] rows
    (a digest, so that none of vLLM's text is committed here)."""
    return [
        [
            r.stage,
            r.line,
            r.status,
            r.instruction.split(" ", 1)[0],
            hashlib.sha256(r.instruction.encode()).hexdigest()[:12],
        ]
        for r in report.rows
        if r.status != REPRODUCED
    ]


def assert_matches_expectation(report: ConformanceReport, path: pathlib.Path) -> None:
    """The report's summary and gaps equal the checked-in ones (UPDATE_EXPECTED=1 rewrites them)."""
    if os.environ.get("UPDATE_EXPECTED") == "1":
        lines = ",\n".join("  " + json.dumps(gap) for gap in gaps(report))
        path.write_text(f'{{"summary": {json.dumps(report.summary())},\n "gaps": [\n{lines}\n]}}\n')
    expected = json.loads(path.read_text())
    assert (report.summary(), gaps(report)) == (expected["summary"], expected["gaps"])


def new_rows(edited: ConformanceReport, baseline: ConformanceReport) -> list[Row]:
    """Rows of the edited file's report that the unedited file's report does not have (lines aside)."""
    seen = {(r.stage, r.status, r.instruction, r.declared) for r in baseline.rows}
    return [r for r in edited.rows if (r.stage, r.status, r.instruction, r.declared) not in seen]


def test_the_report_on_vllm_0_33_0_conforms_with_exactly_the_known_deviations(upstream_dockerfile: str) -> None:
    report = report_on(upstream_dockerfile)
    assert_matches_expectation(report, EXPECTED)
    assert report.ok() and report.counts()[MISSING] == report.counts()[CHANGED] == 0


def test_every_stage_of_the_real_file_has_its_function_with_the_same_from(upstream_dockerfile: str) -> None:
    report = report_on(upstream_dockerfile)
    froms = {r.stage: r.status for r in report.rows if r.instruction.startswith("FROM ")}
    assert len(froms) == 16 and set(froms.values()) == {REPRODUCED}
    assert set(froms) <= set(DECLARED)


def test_a_changed_run_is_named_with_its_stage_line_and_the_text_it_was_written_for(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace("RUN gcc --version\n", "RUN gcc --version && g++ --version\n")
    [row] = new_rows(report_on(edited), report_on(upstream_dockerfile))
    assert (row.stage, row.line, row.status) == ("base", 191, CHANGED)
    assert (row.declared, row.instruction) == ("RUN gcc --version", "RUN gcc --version && g++ --version")
    assert "was: RUN gcc --version" in report_on(edited).table()


def test_a_changed_arg_default_is_named_with_the_old_and_new_default(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace("ARG max_jobs=2\nENV MAX_JOBS", "ARG max_jobs=16\nENV MAX_JOBS")
    [row] = new_rows(report_on(edited), report_on(upstream_dockerfile))
    assert (row.stage, row.line, row.status, row.instruction, row.declared) == (
        "csrc-build",
        388,
        CHANGED,
        "ARG max_jobs=16",
        "ARG max_jobs=2",
    )


def test_a_changed_global_arg_default_is_named_at_its_line_and_in_every_stage_that_reads_it(
    upstream_dockerfile: str,
) -> None:
    edited = upstream_dockerfile.replace("ARG CUDA_VERSION=13.0.3", "ARG CUDA_VERSION=13.1.0")
    rows = new_rows(report_on(edited), report_on(upstream_dockerfile))
    assert [(r.stage, r.line, r.status, r.declared) for r in rows] == [
        ("(global)", 25, CHANGED, "ARG CUDA_VERSION=13.0.3"),
        ("base", 107, CHANGED, "ARG CUDA_VERSION=13.0.3"),
        ("extensions-build", 479, CHANGED, "ARG CUDA_VERSION=13.0.3"),
        ("vllm-runtime-base", 746, CHANGED, "ARG CUDA_VERSION=13.0.3"),
        ("vllm-openai-base", 1190, CHANGED, "ARG CUDA_VERSION=13.0.3"),
    ]


def test_a_new_arg_is_named_as_missing(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace("ARG BUILD_NIXL=false\n", "ARG BUILD_NIXL=false\nARG ENABLE_FP4=1\n")
    [row] = new_rows(report_on(edited), report_on(upstream_dockerfile))
    assert (row.stage, row.line, row.status, row.instruction) == ("(global)", 100, MISSING, "ARG ENABLE_FP4=1")


def test_an_added_stage_is_named_as_a_new_stage(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace(
        "FROM base AS dev\n", "FROM base AS lint\nRUN ruff check .\n\nFROM base AS dev\n"
    )
    rows = new_rows(report_on(edited), report_on(upstream_dockerfile))
    assert [(r.stage, r.line, r.status, r.instruction) for r in rows] == [
        ("lint", 690, MISSING, "FROM base AS lint"),
        ("lint", 691, MISSING, "RUN ruff check ."),
    ]
    assert "new stage" in rows[0].reason


def test_a_removed_stage_is_named(upstream_dockerfile: str) -> None:
    start = upstream_dockerfile.index("FROM vllm-openai-base AS vllm-openai\n")
    end = upstream_dockerfile.index("FROM vllm-openai AS vllm-openai-nonroot")
    edited = upstream_dockerfile[:start] + upstream_dockerfile[end:]
    report = report_on(edited)
    removed = [r for r in new_rows(report, report_on(upstream_dockerfile)) if r.stage == "vllm-openai"]
    assert [(r.line, r.status, r.reason) for r in removed] == [(None, CHANGED, "stage vllm-openai removed upstream")]


def test_a_copy_with_a_source_added_is_named_with_the_text_it_was_written_for(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace(
        "COPY pyproject.toml setup.py CMakeLists.txt ./", "COPY pyproject.toml setup.py CMakeLists.txt MANIFEST.in ./"
    )
    [row] = new_rows(report_on(edited), report_on(upstream_dockerfile))
    assert (row.stage, row.line, row.status) == ("csrc-build", 380, CHANGED)
    assert row.declared == "COPY pyproject.toml setup.py CMakeLists.txt ./"
    assert row.instruction == "COPY pyproject.toml setup.py CMakeLists.txt MANIFEST.in ./"


def test_a_mount_option_is_part_of_the_instruction_it_belongs_to() -> None:
    text = "FROM x AS test\nRUN --mount=type=cache,target=/opt/uv/cache echo hi\n"
    with_mount = report_on(text)
    without = report_on(text.replace("--mount=type=cache,target=/opt/uv/cache ", ""))
    assert [r.instruction for r in with_mount.rows if r.line == 2] == [
        "RUN --mount=type=cache,target=/opt/uv/cache echo hi"
    ]
    assert [r.instruction for r in without.rows if r.line == 2] == ["RUN echo hi"]


def test_a_file_that_is_not_a_dockerfile_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown instruction"):
        report_on("this is not\na Dockerfile\n")
    with pytest.raises(UsageError, match="no FROM"):
        report_on("ARG A=1\n")


def test_a_dockerfile_path_that_does_not_exist_is_one_line_and_exit_2_before_any_work(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run(
        [CLIENT, "conformance", "--source", tmp_path, "--dockerfile", tmp_path / "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///nonexistent.sock"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"vllm-ci: error: --dockerfile: no such file: {tmp_path / 'nope'}"]


@pytest.mark.engine
def test_the_client_command_exits_0_on_the_real_file_and_1_with_the_summary_on_a_drifted_one(
    engine: None, tmp_path: pathlib.Path
) -> None:
    real = (vllm_source() / "docker" / "Dockerfile").read_text()
    proc = subprocess.run(
        [CLIENT, "conformance", "--source", vllm_source()], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["stage", "line", "instruction", "status"]
    drifted = tmp_path / "Dockerfile"
    drifted.write_text(real.replace("ARG BUILD_NIXL=false\n", "ARG BUILD_NIXL=false\nARG ENABLE_FP4=1\n"))
    proc = subprocess.run(
        [CLIENT, "conformance", "--source", vllm_source(), "--dockerfile", drifted],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert (
        line
        == f"vllm-ci: error: {check(drifted.read_text(), 'Dockerfile', DECLARED, arg_defaults(), PROJECT_ARGS).summary()}"
    )


@pytest.mark.engine
def test_the_client_command_writes_json_for_ci(engine: None, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "conformance.json"
    proc = subprocess.run(
        [CLIENT, "-o", out, "conformance", "--source", vllm_source(), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["counts"][MISSING] == 0
    assert data["counts"]["deviation"] == sum(r["status"] == "deviation" for r in data["rows"]) > 0


@pytest.mark.engine
def test_a_dockerfile_that_does_not_parse_is_one_line_and_exit_2(engine: None, tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM x AS y\nFETCH everything\n")
    proc = subprocess.run(
        [CLIENT, "conformance", "--source", tmp_path, "--dockerfile", bad], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "vllm-ci: error: Dockerfile:2: not a Dockerfile: unknown instruction FETCH"
    ]


def test_a_stage_declared_as_not_built_is_a_deviation_with_its_reason_not_missing(upstream_dockerfile: str) -> None:
    report = check(
        upstream_dockerfile,
        "docker/Dockerfile",
        DECLARED,
        arg_defaults(),
        PROJECT_ARGS,
        not_built={"vllm-sagemaker": "SageMaker images are built elsewhere"},
    )
    rows = [r for r in report.rows if r.stage == "vllm-sagemaker"]
    assert [r.line for r in rows] == [1330, 1332, 1333, 1334]
    assert {(r.status, r.reason) for r in rows} == {
        ("deviation", "stage not built: SageMaker images are built elsewhere")
    }
