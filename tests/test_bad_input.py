"""Every bad input is refused in one line with exit 2 before any container work: the client command
checks before it contacts the engine, and the module's functions check first under `dagger call`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from conftest import EXAMPLE, REGISTRY
from vllm_ci.errors import UsageError
from vllm_ci.main import VllmCi

# An engine address nothing answers on: a refusal after the engine check would be exit 1, not 2.
NO_ENGINE = {**os.environ, "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///nonexistent/engine.sock", "EMPTY_SECRET": ""}
SOURCE = ["--source", str(EXAMPLE)]
LOGIN = ["--registry-username", "bot", "--registry-password"]
STAGE = '{"stage": "base", "key": "k", "outcome": "hit"'


def report(stages: str, extra: str = "") -> list[str]:
    """`report --report-json` of a report with these stages (JSON text) and extra top-level fields."""
    return ["report", "--report-json", f'{{"target": "test", {extra}"stages": {stages}}}']


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["-o", "{tmp}/missing/report.json", "build", *SOURCE, "--image", f"{REGISTRY}/x/y:z"],
            "-o: no such folder: {tmp}/missing",
        ),
        (
            ["-o", "{tmp}", "build", *SOURCE, "--image", f"{REGISTRY}/x/y:z"],
            "-o: {tmp} is a folder; build returns text",
        ),
        (["-o", "{tmp}", "wheel", *SOURCE], "-o: {tmp} is a folder; wheel returns a file"),
        (["-o", "{tmp}", "base", *SOURCE], "-o: {tmp} is a folder; base returns an image tarball"),
        (
            report('"abc"'),
            "--report-json: not a build report (ValueError: invalid value for type, expected list @ $.stages)",
        ),
        (report("[null]"), "expected StageRecord @ $.stages[0]"),
        (report("[]", '"total_seconds": NaN, '), "expected float @ $.total_seconds"),
        (report(f'[{STAGE}, "ended_at": Infinity}}]'), "expected float | None @ $.stages[0].ended_at"),
        (report(f'[{STAGE}, "build_seconds": "3"}}]'), "expected float @ $.stages[0].build_seconds"),
        (report("[]", '"registry_retries": "2", '), "expected int @ $.registry_retries"),
        (["build", *SOURCE, *LOGIN, "file:{tmp}/binary"], "--registry-password: {tmp}/binary is not text (UTF-8)"),
        (["build", *SOURCE, *LOGIN, "file:{tmp}/empty"], "--registry-password: the secret in {tmp}/empty is empty"),
        (["build", *SOURCE, *LOGIN, "env:EMPTY_SECRET"], "--registry-password: the secret in EMPTY_SECRET is empty"),
        (
            ["build", *SOURCE, "--registry-password", "file:{tmp}/password"],
            "--registry-password: given without --registry-username",
        ),
        (["build", *SOURCE, "--cache-to", "not a ref"], "--cache-to: not a fully qualified image reference"),
        (
            ["plan", *SOURCE, "--cache-from", f"{REGISTRY}/ok,no-registry/cache"],
            "--cache-from: not a fully qualified image reference (registry/repository[:tag]): 'no-registry/cache'",
        ),
        (["build", *SOURCE, "--image", "vllm/test:tag"], "--image: not a fully qualified image reference"),
        (["plan", *SOURCE, "--target", "tset"], "--target: no stage 'tset'; the stages: base, "),
        (["build", *SOURCE, "--target", "tset"], "--target: no stage 'tset'"),
        (
            ["prune", "--cache-repo", f"{REGISTRY}/c", "--keep-last", "-5", "--keep-days", "1"],
            "--keep-last: a finite number, 0 or more, not -5",
        ),
        (
            ["prune", "--cache-repo", f"{REGISTRY}/c", "--keep-days", "-1"],
            "--keep-days: a finite number, 0 or more, not -1.0",
        ),
        (
            ["prune", "--cache-repo", f"{REGISTRY}/c", "--keep-days", "nan"],
            "--keep-days: a finite number, 0 or more, not nan",
        ),
        (
            ["prune", "--cache-repo", f"{REGISTRY}/c", "--keep-days", "inf"],
            "--keep-days: a finite number, 0 or more, not inf",
        ),
        # 100 kB: a value past 128 kB cannot even reach the client command (exec refuses its own argument).
        (
            ["--pip-index-url", "x" * 100_000, "plan", *SOURCE],
            "--pip-index-url: PIP_INDEX_URL is 100000 bytes; an ARG value may hold at most 65536",
        ),
    ],
    ids=[
        "-o to a missing folder",
        "-o a folder for build's report",
        "-o a folder for a wheel",
        "-o a folder for an image",
        "report stages not a list",
        "report stage null",
        "report NaN",
        "report Infinity",
        "report number as text",
        "report count as text",
        "binary password file",
        "empty password file",
        "empty password variable",
        "password without username",
        "bad cache-to",
        "bad cache-from",
        "bad image",
        "plan target no stage",
        "build target no stage",
        "negative keep-last",
        "negative keep-days",
        "NaN keep-days",
        "infinite keep-days",
        "ARG value too long",
    ],
)
def test_a_bad_input_is_refused_with_exit_2_in_one_line_before_the_engine_is_contacted(
    tmp_path: Path, args: list[str], says: str
) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00\x81password")
    (tmp_path / "empty").write_text("")
    (tmp_path / "password").write_text("pw-never-shown")
    before = sorted(tmp_path.rglob("*"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "vllm_ci", *argv], capture_output=True, text=True, env=NO_ENGINE, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("vllm-ci: error: ") and says.replace("{tmp}", str(tmp_path)) in line, line
    assert "pw-never-shown" not in result.stderr + result.stdout
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, -o included


@pytest.mark.parametrize(
    ("function", "kwargs", "says"),
    [
        ("build", {"source": None, "cache_to": "not a ref"}, "--cache-to: not a fully qualified image reference"),
        ("build", {"source": None, "image": "vllm/test"}, "--image: not a fully qualified image reference"),
        ("test_image", {"source": None, "cache_from": ["no-registry/cache"]}, "--cache-from: not a fully qualified"),
        ("plan", {"source": None, "target": "tset"}, "--target: no stage 'tset'"),
        ("prune", {"cache_repo": f"{REGISTRY}/c", "keep_last": -5}, "--keep-last: a finite number, 0 or more"),
        (
            "prune",
            {"cache_repo": f"{REGISTRY}/c", "keep_days": float("nan")},
            "--keep-days: a finite number, 0 or more",
        ),
        ("report", {"report_json": '{"target": "t", "stages": [null]}'}, "expected StageRecord @ $.stages[0]"),
    ],
    ids=["cache-to", "image", "cache-from", "target", "keep-last", "keep-days", "report"],
)
def test_a_module_function_refuses_its_bad_arguments_first_as_under_dagger_call(
    function: str, kwargs: dict[str, object], says: str
) -> None:
    # Under `dagger call` the function is the entry: the same checks run before its body touches
    # the source or the registry (here no engine is connected at all).
    with pytest.raises(UsageError) as refused:
        anyio.run(lambda: getattr(VllmCi(), function)(**kwargs))
    assert says in str(refused.value) and refused.value.exit_code == 2


def test_an_arg_value_too_long_for_a_run_is_refused_by_the_module_object() -> None:
    with pytest.raises(UsageError, match=r"--openai-extras: OPENAI_EXTRAS is 70000 bytes; .* at most 65536"):
        VllmCi(openai_extras="a" * 70_000)


def test_a_repository_check_that_could_only_fail_is_refused_by_the_module_object() -> None:
    # build's RUN runs tools/check_repo.sh against an empty .git (the upload leaves .git out): "Repo is dirty".
    with pytest.raises(UsageError, match=r"--git-repo-check: tools/check_repo.sh .* only 0 is supported") as refused:
        VllmCi(git_repo_check="1")
    assert refused.value.exit_code == 2
    VllmCi(git_repo_check="0")


@pytest.mark.parametrize(
    "instruction", ["COPY --chmod=755 tools/x.py /x.py", "RUN --network=none true", "ADD --chown=1:1 a b"]
)
def test_an_instruction_flag_the_runner_does_not_apply_is_refused_naming_its_line(instruction: str) -> None:
    from stagecache import StageContext
    from vllm_ci.args import BuildArgs
    from vllm_ci.instructions import AsWritten

    upstream = AsWritten(BuildArgs(), StageContext(source=None, parents={}), ())  # type: ignore[arg-type]
    flag = instruction.split()[1]
    with pytest.raises(UsageError, match=rf"line 1: {instruction.split()[0]} {flag} cannot be run as written"):
        upstream.step(instruction)
    upstream.step("COPY --link tools/x.py /x.py")  # the same files, only layered apart: run
