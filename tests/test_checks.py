"""Every bad input is refused in one line with exit 2 before any container work: the client command
checks before it contacts the engine, and the module's functions check first under `dagger call`."""

from __future__ import annotations

import os
import re
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
        (["plan", *SOURCE, "--target", "tset"], "--target: no stage 'tset'; the stages of docker/Dockerfile: base, "),
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
            ["--build-arg", "PIP_INDEX_URL=" + "x" * 100_000, "plan", *SOURCE],
            "--build-arg PIP_INDEX_URL: the value is 100000 bytes; an ARG value may hold at most 65536",
        ),
        (["--build-arg", "max_jobs", "plan", *SOURCE], "--build-arg 'max_jobs': expected NAME=VALUE"),
        (["--build-arg", "=4", "plan", *SOURCE], "--build-arg '=4': expected NAME=VALUE"),
        (
            ["--build-arg", "GIT_REPO_CHECK=1", "build", *SOURCE],
            "--build-arg GIT_REPO_CHECK: tools/check_repo.sh asks git whether the checkout is clean",
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
        "build-arg without a value",
        "build-arg without a name",
        "repository check",
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
    with pytest.raises(UsageError, match=r"^--openai-extras: the value is 70000 bytes; .* at most 65536 "):
        VllmCi(openai_extras="a" * 70_000)
    # A --build-arg value is measured as the RUN's preamble holds it: shell-quoted.
    with pytest.raises(UsageError, match=r"^--build-arg TIMM_VERSION: the value is 70002 bytes; .* at most 65536 "):
        VllmCi(build_arg=["PYTHON_VERSION=3.12", "TIMM_VERSION=" + "a b" * 23_333 + "c"])
    VllmCi(build_arg=["TIMM_VERSION=" + "a" * 65_536])  # at the limit: taken


def test_a_build_arg_that_is_not_name_equals_value_is_refused_by_the_module_object() -> None:
    for pair in ("max_jobs", "=4", "1max_jobs=4", "max-jobs=4"):
        with pytest.raises(UsageError, match=rf"^--build-arg {re.escape(repr(pair))}: expected NAME=VALUE$"):
            VllmCi(build_arg=[pair])
    # The value is used exactly as given: empty, or holding `=` and spaces (the last of a name wins).
    passed = VllmCi(build_arg=["torch_cuda_arch_list=", "X=a=b c", "X=d"]).passed()
    assert passed == {"torch_cuda_arch_list": "", "X": "d"}


def test_a_build_arg_the_dockerfile_does_not_declare_is_refused_when_the_file_is_read() -> None:
    from conftest import example_build

    with pytest.raises(UsageError, match=r"^--build-arg NO_SUCH_ARG: docker/Dockerfile declares no ARG NO_SUCH_ARG$"):
        example_build(build_arg=["NO_SUCH_ARG=1"])
    # ARG names are the file's own spelling: case matters, as in BuildKit.
    with pytest.raises(UsageError, match=r"declares no ARG MAX_JOBS$"):
        example_build(build_arg=["MAX_JOBS=4"])
    assert example_build(build_arg=["max_jobs=4"]).passed["max_jobs"] == "4"


def test_a_repository_check_that_could_only_fail_is_refused_by_the_module_object() -> None:
    # build's RUN runs tools/check_repo.sh against an empty .git (the upload leaves .git out): "Repo is dirty".
    with pytest.raises(
        UsageError, match=r"--build-arg GIT_REPO_CHECK: tools/check_repo.sh .* only 0 is supported"
    ) as refused:
        VllmCi(build_arg=["GIT_REPO_CHECK=1"])
    assert refused.value.exit_code == 2
    VllmCi(build_arg=["GIT_REPO_CHECK=0"])
    VllmCi(build_arg=["GIT_REPO_CHECK="])


@pytest.mark.parametrize(
    "instruction", ["COPY --chmod=755 tools/x.py /x.py", "RUN --network=none true", "ADD --chown=1:1 a b"]
)
def test_an_instruction_flag_the_runner_does_not_apply_is_refused_naming_its_line(instruction: str) -> None:
    from conftest import walk_of
    from stagecache import StageContext
    from vllm_ci.instructions import unrunnable

    # Line 2 of the file: line 1 is the stage's FROM.
    ctx = StageContext(source=None, parents={})  # type: ignore[arg-type]  # nothing is run
    upstream = walk_of(f"{instruction}\nCOPY --link tools/x.py /x.py", ctx)
    refused, linked = upstream.stage.instructions
    kind, flag = instruction.split()[:2]
    assert unrunnable(refused) == f"{kind} {flag} cannot be run as written"
    with pytest.raises(UsageError, match=rf"^Dockerfile:2: {kind} {flag} cannot be run as written$"):
        upstream.step_of(refused)
    assert unrunnable(linked) == ""
    upstream.step_of(linked)  # the same files, only layered apart: run
