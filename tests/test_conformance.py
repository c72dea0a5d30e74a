"""Conformance against vLLM's real docker/Dockerfile (the pinned release, from the package index) and edited copies
of it: each edit is named with its stage and line, and bad input is one line with exit 2."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess

import pytest

from conftest import REPO, VLLM_VERSION, vllm_source
from vllm_ci.conformance import CHANGED, DEVIATION, MISSING, REPRODUCED, ConformanceReport, Row, accept, check, refusal
from vllm_ci.declare import DECLARED
from vllm_ci.errors import UsageError
from vllm_ci.upstream_file import UpstreamFile

EXPECTED = REPO / "tests" / "expected" / f"conformance-vllm-{VLLM_VERSION}.json"
CLIENT = REPO / ".venv" / "bin" / "vllm-ci"


def report_on(text: str) -> ConformanceReport:
    """The conformance report of this project's stage functions on a Dockerfile's text, with diffs from
    the pinned release's file."""
    released = UpstreamFile.parse((vllm_source() / "docker" / "Dockerfile").read_text(), "release")
    return check(UpstreamFile.parse(text, "docker/Dockerfile"), DECLARED, released=released)


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


def line_of(text: str, needle: str) -> int:
    """The line of the file's instruction whose text holds the needle (the first one)."""
    file = UpstreamFile.parse(text, "docker/Dockerfile")
    return next(
        i.line
        for s in file.stages
        for i in (*s.instructions, s)
        if needle in getattr(i, "text", getattr(i, "from_text", ""))
    )


def new_rows(edited: ConformanceReport, baseline: ConformanceReport) -> list[Row]:
    """Rows of the edited file's report that the unedited file's report does not have (lines aside)."""
    seen = {(r.stage, r.status, r.instruction, r.declared) for r in baseline.rows}
    return [r for r in edited.rows if (r.stage, r.status, r.instruction, r.declared) not in seen]


def test_the_report_on_the_pinned_vllm_release_conforms_with_exactly_the_known_deviations(
    upstream_dockerfile: str,
) -> None:
    report = report_on(upstream_dockerfile)
    assert_matches_expectation(report, EXPECTED)
    assert report.ok() and report.counts()[MISSING] == report.counts()[CHANGED] == 0


def test_every_stage_of_the_real_file_has_its_function_with_the_same_from(upstream_dockerfile: str) -> None:
    report = report_on(upstream_dockerfile)
    froms = {r.stage: r.status for r in report.rows if r.instruction.startswith("FROM ")}
    assert len(froms) == 16 and set(froms.values()) == {REPRODUCED}
    assert set(froms) <= set(DECLARED)


def test_an_edited_instruction_no_deviation_claims_runs_as_written_and_conforms(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace("RUN gcc --version\n", "RUN gcc --version && g++ --version\n")
    edited = edited.replace("ARG max_jobs=2\nENV MAX_JOBS", "ARG max_jobs=16\nENV MAX_JOBS")
    report = report_on(edited)
    assert report.ok()
    assert [(r.stage, r.status) for r in report.rows if r.instruction == "RUN gcc --version && g++ --version"] == [
        ("base", REPRODUCED)
    ]


def test_a_changed_deviated_instruction_is_named_with_its_diff_and_the_function_that_holds_it(
    upstream_dockerfile: str,
) -> None:
    edited = upstream_dockerfile.replace("uv pip list", "uv pip list --verbose")
    report = report_on(edited)
    [row] = [r for r in report.rows if r.status == CHANGED]
    assert (row.stage, row.line, row.holder) == (
        "vllm-base",
        line_of(edited, "uv pip list"),
        "vllm_ci.stages.runtime:vllm_base",
    )
    assert "-RUN --mount=type=cache,target=/opt/uv/cache . /etc/environment && uv pip list" in row.diff.splitlines()
    assert "+RUN --mount=type=cache,target=/opt/uv/cache . /etc/environment && uv pip list --verbose" in row.diff
    refused = refusal(report)
    assert (
        str(refused)
        .splitlines()[-1]
        .startswith(
            f"docker/Dockerfile:{row.line}: stage vllm-base: deviated instruction changed since it was accepted"
        )
    )
    assert refused.output == row.diff


def test_the_accept_command_makes_a_changed_deviated_instruction_conform(upstream_dockerfile: str) -> None:
    edited = UpstreamFile.parse(upstream_dockerfile.replace("uv pip list", "uv pip list --verbose"), "Dockerfile")
    assert not check(edited, DECLARED).ok()
    assert check(edited, DECLARED, accepted=accept(edited, DECLARED)).ok()


def test_a_deviation_whose_anchor_names_no_instruction_is_named(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace("tools/check_repo.sh", "tools/check_repository.sh")
    [row] = [r for r in report_on(edited).rows if r.status == CHANGED]
    assert (row.stage, row.line) == ("build", None)
    assert row.reason == "deviation RUN …tools/check_repo.sh… must name one instruction, names none"


def test_a_new_arg_conforms_since_its_value_comes_from_the_file(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace("ARG BUILD_NIXL=false\n", "ARG BUILD_NIXL=false\nARG ENABLE_FP4=1\n")
    assert report_on(edited).ok()


def test_an_added_stage_is_named_as_a_new_stage(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace(
        "FROM base AS dev\n", "FROM base AS lint\nRUN ruff check .\n\nFROM base AS dev\n"
    )
    rows = new_rows(report_on(edited), report_on(upstream_dockerfile))
    line = line_of(edited, "FROM base AS lint")
    assert [(r.stage, r.line, r.status, r.instruction) for r in rows] == [
        ("lint", line, MISSING, "FROM base AS lint"),
        ("lint", line + 1, MISSING, "RUN ruff check ."),
    ]
    assert "new stage" in rows[0].reason


def test_a_changed_from_is_named_with_the_from_its_function_declares(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace("FROM base AS dev\n", "FROM build AS dev\n")
    [row] = [r for r in report_on(edited).rows if r.status == CHANGED]
    assert (row.stage, row.line, row.reason, row.declared) == (
        "dev",
        line_of(edited, "FROM build AS dev"),
        "FROM changed",
        "FROM base",
    )


def test_a_removed_stage_is_named(upstream_dockerfile: str) -> None:
    start = upstream_dockerfile.index("FROM vllm-openai-base AS vllm-openai\n")
    end = upstream_dockerfile.index("FROM vllm-openai AS vllm-openai-nonroot")
    edited = upstream_dockerfile[:start] + upstream_dockerfile[end:]
    report = report_on(edited)
    removed = [r for r in new_rows(report, report_on(upstream_dockerfile)) if r.stage == "vllm-openai"]
    assert [(r.line, r.status, r.reason) for r in removed] == [(None, CHANGED, "stage vllm-openai removed upstream")]


def test_an_instruction_the_runner_cannot_run_as_written_is_named(upstream_dockerfile: str) -> None:
    edited = upstream_dockerfile.replace("RUN gcc --version\n", "RUN --network=none gcc --version\nHEALTHCHECK NONE\n")
    rows = [r for r in report_on(edited).rows if r.status == MISSING]
    assert [(r.stage, r.reason) for r in rows] == [
        ("base", "RUN --network=none cannot be run as written"),
        ("base", "HEALTHCHECK cannot be run as written"),
    ]


def test_a_file_that_is_not_a_dockerfile_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown instruction"):
        report_on("this is not\na Dockerfile\n")
    with pytest.raises(UsageError, match="no FROM"):
        report_on("ARG A=1\n")


@pytest.mark.engine
def test_the_client_command_exits_0_on_the_real_file_and_1_with_the_summary_on_a_drifted_one(
    engine: None, tmp_path: pathlib.Path
) -> None:
    proc = conformance_of(vllm_source())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["stage", "line", "instruction", "status"]
    drifted = tmp_path / "docker" / "Dockerfile"
    drifted.parent.mkdir()
    drifted.write_text((vllm_source() / "docker" / "Dockerfile").read_text().replace("uv pip list", "uv pip list -v"))
    proc = conformance_of(tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert (
        "was:" not in proc.stdout  # the report, with the diff from the pinned release's text
        and "+RUN --mount=type=cache,target=/opt/uv/cache . /etc/environment && uv pip list -v" in proc.stdout
    )
    assert proc.stderr.strip().splitlines()[-1] == f"vllm-ci: error: {report_on(drifted.read_text()).summary()}"


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
    assert data["counts"][DEVIATION] == sum(r["status"] == DEVIATION for r in data["rows"]) > 0


def conformance_of(source: pathlib.Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """The client command's conformance check of a source, with constructor flags."""
    return subprocess.run(
        [CLIENT, *flags, "conformance", "--source", source], capture_output=True, text=True, timeout=300
    )


@pytest.mark.engine
def test_a_dockerfile_that_does_not_parse_is_one_line_and_exit_2(engine: None, tmp_path: pathlib.Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x AS y\nFETCH everything\n")
    proc = conformance_of(tmp_path, "--dockerfile", "Dockerfile")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "vllm-ci: error: Dockerfile:2: not a Dockerfile: unknown instruction FETCH"
    ]


@pytest.mark.engine
def test_a_dockerfile_path_the_source_does_not_have_is_one_line_and_exit_2(
    engine: None, tmp_path: pathlib.Path
) -> None:
    proc = conformance_of(tmp_path, "--dockerfile", "docker/nope")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["vllm-ci: error: --dockerfile docker/nope: no such file in the source"]
