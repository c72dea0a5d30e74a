"""The Buildkite environment -> vllm-ci arguments mapping, and the report annotation."""

import re

import pytest

from vllm_ci.args import read_args_file
from vllm_ci.buildkite import (
    SettingsError,
    StepSettings,
    failure_phase,
    render_annotation,
    report_style,
    sanitise_component,
    sanitise_tag,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
REG = "127.0.0.1:5000/vllm-ci"
PASSWORD = "s3cr3t-Pa55word!"


def env(**extra: str) -> dict[str, str]:
    """A branch build's agent environment, with overrides."""
    base = {
        "BUILDKITE_BRANCH": "main",
        "BUILDKITE_PULL_REQUEST": "false",
        "BUILDKITE_PULL_REQUEST_BASE_BRANCH": "",
        "BUILDKITE_COMMIT": SHA,
        "VLLM_CI_REGISTRY": REG,
    }
    return {**base, **extra}


def flag(args: list[str], name: str) -> str:
    """The value after a flag in an argument list."""
    return args[args.index(name) + 1]


def test_a_main_build_writes_and_reads_only_mains_cache():
    s = StepSettings.from_env(env())
    args = s.build_args("out/report.json")
    assert args == [
        "-o",
        "out/report.json",
        "build",
        "--source",
        ".",
        "--image",
        f"{REG}/test:{SHA}",
        "--cache-to",
        f"{REG}/cache-main",
    ]  # what a build writes it reads first (stagecache.refs.read_order): main reads nothing else


def test_a_branch_build_writes_its_own_cache_and_reads_its_own_then_mains():
    s = StepSettings.from_env(env(BUILDKITE_BRANCH="fix-cuda"))
    args = s.build_args("r.json")
    assert flag(args, "--cache-to") == f"{REG}/cache-fix-cuda"
    assert flag(args, "--cache-from") == f"{REG}/cache-main"  # after its own, which the cache reads first
    assert flag(args, "--image") == f"{REG}/test:{SHA}"


def test_a_pr_build_writes_its_pr_cache_and_reads_base_and_main_after_its_own():
    s = StepSettings.from_env(
        env(
            BUILDKITE_BRANCH="alice:feature/Fast_Path",
            BUILDKITE_PULL_REQUEST="1234",
            BUILDKITE_PULL_REQUEST_BASE_BRANCH="release/v0.9",
        )
    )
    assert s.cache_to == f"{REG}/cache-pr-1234"
    assert len(s.cache_from) == 2  # its own is read first by the cache's rule (read_order), not restated here
    assert re.fullmatch(rf"{re.escape(REG)}/cache-release-v0\.9-[0-9a-f]{{8}}", s.cache_from[0])
    assert s.cache_from[1] == f"{REG}/cache-main"


def test_a_pr_against_main_reads_mains_cache_once():
    s = StepSettings.from_env(
        env(BUILDKITE_BRANCH="feat", BUILDKITE_PULL_REQUEST="7", BUILDKITE_PULL_REQUEST_BASE_BRANCH="main")
    )
    assert s.cache_from == (f"{REG}/cache-main",)


@pytest.mark.parametrize("branch", ["main", "Main", "MAIN", "main/", "feature", "pr-1"])
def test_a_pr_never_writes_mains_cache_whatever_its_branch(branch):
    pr = env(BUILDKITE_BRANCH=branch, BUILDKITE_PULL_REQUEST="42", BUILDKITE_PULL_REQUEST_BASE_BRANCH="main")
    s = StepSettings.from_env(pr)
    assert s.cache_to == f"{REG}/cache-pr-42"
    assert flag(s.build_args("r.json"), "--cache-to") != f"{REG}/cache-main"


@pytest.mark.parametrize("branch", ["Main", "MAIN", "main/", "main.", "pr-42"])
def test_a_branch_that_sanitises_to_main_or_a_pr_name_gets_its_own_cache(branch):
    s = StepSettings.from_env(env(BUILDKITE_BRANCH=branch))
    assert s.cache_to not in (f"{REG}/cache-main", f"{REG}/cache-pr-42")
    assert re.fullmatch(r"cache-[a-z0-9._-]+-[0-9a-f]{8}", s.cache_to.rsplit("/", 1)[1])


def test_a_custom_main_branch_writes_cache_main():
    s = StepSettings.from_env(env(BUILDKITE_BRANCH="master", VLLM_CI_MAIN_BRANCH="master"))
    assert s.cache_to == f"{REG}/cache-main"
    assert (
        StepSettings.from_env(env(BUILDKITE_BRANCH="main", VLLM_CI_MAIN_BRANCH="master")).cache_to
        != f"{REG}/cache-main"
    )


def test_sanitised_names_are_valid_and_at_most_128_characters():
    weird = "Feature/ÜBER--weird..name__x___y@{hash}~1 " + "z" * 300
    tag = sanitise_tag(weird)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag)
    comp = sanitise_component(weird)
    assert len(comp) <= 128
    assert re.fullmatch(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*", comp)
    repo = StepSettings.from_env(env(BUILDKITE_BRANCH=weird)).cache_to.rsplit("/", 1)[1]
    assert len(repo) <= 128
    assert re.fullmatch(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*", repo)
    assert sanitise_tag("..-") == "_"


def test_distinct_branches_that_sanitise_alike_get_distinct_caches():
    a = StepSettings.from_env(env(BUILDKITE_BRANCH="feature/x")).cache_to
    b = StepSettings.from_env(env(BUILDKITE_BRANCH="feature-x")).cache_to
    c = StepSettings.from_env(env(BUILDKITE_BRANCH="Feature/X")).cache_to
    assert len({a, b, c}) == 3


def test_a_registry_without_namespace_gets_the_default_one():
    s = StepSettings.from_env(env(VLLM_CI_REGISTRY="127.0.0.1:5000"))
    assert s.image_ref == f"127.0.0.1:5000/vllm-ci/test:{SHA}"


def test_a_missing_registry_gives_one_clear_error():
    bad = env()
    del bad["VLLM_CI_REGISTRY"]
    with pytest.raises(SettingsError) as err:
        StepSettings.from_env(bad)
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert "VLLM_CI_REGISTRY is not set" in message and "\n" not in message


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("VLLM_CI_REGISTRY", "https://ghcr.io/x", "scheme"),
        ("VLLM_CI_REGISTRY", "127.0.0.1:5000/Upper", "path component"),
        ("BUILDKITE_COMMIT", "HEAD", "BUILDKITE_COMMIT"),
        ("BUILDKITE_PULL_REQUEST", "abc", "BUILDKITE_PULL_REQUEST"),
        ("BUILDKITE_BRANCH", "", "BUILDKITE_BRANCH"),
        ("VLLM_CI_REGISTRY_USERNAME", "bot", "VLLM_CI_REGISTRY_PASSWORD is not"),
        ("VLLM_CI_REGISTRY_PASSWORD", PASSWORD, "VLLM_CI_REGISTRY_USERNAME is not"),
    ],
)
def test_invalid_settings_give_one_line_errors_naming_the_setting(key, value, needle):
    with pytest.raises(SettingsError, match=re.escape(needle)) as err:
        StepSettings.from_env(env(**{key: value}))
    assert "\n" not in str(err.value)
    assert PASSWORD not in str(err.value)


def test_the_password_value_never_appears_in_the_arguments_only_its_env_reference():
    s = StepSettings.from_env(
        env(BUILDKITE_BRANCH="dev", VLLM_CI_REGISTRY_USERNAME="bot", VLLM_CI_REGISTRY_PASSWORD=PASSWORD)
    )
    args = s.build_args("r.json")
    assert not any(PASSWORD in a for a in args)
    assert flag(args, "--registry-username") == "bot"
    assert flag(args, "--registry-password") == "env:VLLM_CI_REGISTRY_PASSWORD"
    assert PASSWORD not in repr(s)


def test_sccache_keys_go_to_the_build_as_env_references_only_when_both_are_set():
    keys = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY": "aws-secret-value-xyz"}
    args = StepSettings.from_env(env(**keys)).build_args("r.json")
    assert flag(args, "--aws-access-key-id") == "env:AWS_ACCESS_KEY_ID"
    assert flag(args, "--aws-secret-access-key") == "env:AWS_SECRET_ACCESS_KEY"
    assert not any(v in a for v in keys.values() for a in args)
    assert "--aws-access-key-id" not in StepSettings.from_env(env()).build_args("r.json")
    with pytest.raises(SettingsError, match="only one of"):
        StepSettings.from_env(env(AWS_ACCESS_KEY_ID="AKIAEXAMPLEKEY"))


def test_constructor_flags_and_verbosity_go_before_the_function_name():
    s = StepSettings.from_env(
        env(VLLM_CI_FLAGS="--build-arg USE_SCCACHE=1 --build-arg 'SCCACHE_BUCKET_NAME=vllm cache'", VLLM_CI_VERBOSE="1")
    )
    args = s.build_args("r.json")
    assert args[: args.index("build")] == [
        "--build-arg",
        "USE_SCCACHE=1",
        "--build-arg",
        "SCCACHE_BUCKET_NAME=vllm cache",
        "-o",
        "r.json",
        "-v",
    ]
    with pytest.raises(SettingsError, match="VLLM_CI_FLAGS"):
        StepSettings.from_env(env(VLLM_CI_FLAGS="-o elsewhere.json"))


def test_an_args_file_gives_one_flag_per_line_before_the_extra_flags(tmp_path):
    args_file = tmp_path / "vllm-ci.args"
    args_file.write_text(
        "--build-arg=BUILD_BASE_IMAGE=127.0.0.1:5000/library/b:x\n\n"
        "--build-arg=torch_cuda_arch_list=\n--openai-extras=a b\n"
    )
    s = StepSettings.from_env(env(VLLM_CI_ARGS_FILE=str(args_file), VLLM_CI_FLAGS="--build-arg max_jobs=4"))
    args = s.build_args("r.json")
    assert args[: args.index("build")] == [
        "--build-arg=BUILD_BASE_IMAGE=127.0.0.1:5000/library/b:x",
        "--build-arg=torch_cuda_arch_list=",
        "--openai-extras=a b",
        "--build-arg",
        "max_jobs=4",
        "-o",
        "r.json",
    ]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read"),
        ("-o\nx.json\n", "must not set the output"),
        ("--output=x.json\n", "must not set the output"),
    ],
)
def test_a_bad_args_file_gives_one_line_naming_it(tmp_path, content, needle):
    args_file = tmp_path / "vllm-ci.args"
    if content is not None:
        args_file.write_text(content)
    with pytest.raises(SettingsError, match=needle) as err:
        StepSettings.from_env(env(VLLM_CI_ARGS_FILE=str(args_file)))
    assert "VLLM_CI_ARGS_FILE" in str(err.value) and "\n" not in str(err.value)


def test_the_examples_args_file_parses_with_the_real_cli():
    cli = pytest.importorskip("vllm_ci.cli", reason="the client command is not importable")
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    s = StepSettings.from_env(env(VLLM_CI_ARGS_FILE=str(repo / "examples/mini-vllm/vllm-ci.args")))
    parsed = vars(cli.build_parser()[0].parse_args(s.build_args("r.json")))
    # One --build-arg per line, in the file's order, each exactly as written (an empty value kept).
    assert "BUILD_BASE_IMAGE=127.0.0.1:5000/library/vllm-ci-build:bookworm" in parsed["build_arg"]
    assert "torch_cuda_arch_list=" in parsed["build_arg"] and "PYTHON_VERSION=3.11" in parsed["build_arg"]
    assert parsed["build_arg"] == read_args_file((repo / "examples/mini-vllm/vllm-ci.args").read_text())["build_arg"]


def test_cache_strict_is_passed_on_when_asked():
    assert "--cache-strict" in StepSettings.from_env(env(VLLM_CI_CACHE_STRICT="true")).build_args("r")
    assert "--cache-strict" not in StepSettings.from_env(env()).build_args("r")


def step_failure(args: list[str], tmp_path, **env: str):  # type: ignore[no-untyped-def]
    """How the Buildkite step reports the real client command failing on these arguments (run_cli)."""
    import os

    from vllm_ci.buildkite_step import StepFailed, run_cli

    with pytest.raises(StepFailed) as failed:
        run_cli("build", args, {**os.environ, **env}, tmp_path / "error.json")
    return failed.value


def test_a_refused_argument_is_the_usage_phase_as_the_cli_itself_names_it(tmp_path):
    failed = step_failure(["build", "--source", str(tmp_path / "missing")], tmp_path)
    assert (failed.phase, failed.message) == ("usage", f"--source: no such directory: {tmp_path / 'missing'}")


def test_an_engine_that_does_not_answer_is_the_engine_phase_not_build(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "mini-vllm"
    nowhere = f"unix://{tmp_path / 'no-engine.sock'}"
    failed = step_failure(["build", "--source", str(example)], tmp_path, _EXPERIMENTAL_DAGGER_RUNNER_HOST=nowhere)
    assert failed.phase == "engine" and failed.message.startswith(f"the Dagger engine at {nowhere} does not answer")


def test_a_cli_that_died_before_saying_is_the_commands_phase():
    assert failure_phase("build", None) == "build"


REPORT = {  # as BuildReport.to_dict gives it
    "target": "test",
    "image": f"127.0.0.1:5000/vllm-ci/test:{SHA}@sha256:" + "a" * 64,
    "stages": [
        {
            "stage": "base",
            "key": "k1",
            "outcome": "hit",
            "ref": f"{REG}/cache-main:base-k1",
            "build_seconds": 0.04,
            "export_seconds": 0,
            "bytes_pushed": None,
            "bytes_pulled": 1000,
        },
        {
            "stage": "build",
            "key": "k2",
            "outcome": "exported",
            "ref": f"{REG}/cache-pr-7:build-k2",
            "build_seconds": 61.25,
            "export_seconds": 3.5,
            "bytes_pushed": 5 * 1024 * 1024,
            "bytes_pulled": 0,
            "why": "files ~vllm/envs.py",
        },
        {
            "stage": "test",
            "key": "k3",
            "outcome": "export-failed",
            "ref": "",
            "build_seconds": 2,
            "export_seconds": 0.0,
            "bytes_pushed": None,
            "bytes_pulled": None,
        },
    ],
    "total_seconds": 70.1,
}


def test_the_report_renders_as_a_markdown_table_with_one_row_per_stage():
    body = render_annotation(REPORT)
    lines = body.splitlines()
    assert REPORT["image"] in lines[0]
    assert lines[2] == "1/3 stages from cache"
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| stage | outcome | ref | build s | export s | pulled | pushed | why built; note |"
    # The log's renderer, units included: decimal, as `report` and the live view print them.
    assert table[2:] == [
        "| base | hit | vllm-ci/cache-main:base-k1 | 0.0 | 0.0 | 1.0 kB | - |  |",
        "| build | exported | vllm-ci/cache-pr-7:build-k2 | 61.2 | 3.5 | 0 B | 5.2 MB | files ~vllm/envs.py |",
        "| test | export-failed |  | 2.0 | 0.0 | - | - |  |",
    ]
    assert lines[-1].startswith("total 70.1 s, 1/3 stages from cache")


def test_the_annotation_style_follows_the_outcomes():
    assert report_style(REPORT) == "warning"
    assert report_style({"stages": [{"outcome": "hit"}, {"outcome": "exported"}]}) == "success"


def test_the_arguments_parse_with_the_real_cli():
    cli = pytest.importorskip("vllm_ci.cli", reason="the client command is not importable")
    full = env(
        BUILDKITE_BRANCH="feat",
        BUILDKITE_PULL_REQUEST="12",
        BUILDKITE_PULL_REQUEST_BASE_BRANCH="main",
        VLLM_CI_REGISTRY_USERNAME="bot",
        VLLM_CI_REGISTRY_PASSWORD=PASSWORD,
        AWS_ACCESS_KEY_ID="a",
        AWS_SECRET_ACCESS_KEY="b",
        VLLM_CI_CACHE_STRICT="1",
        VLLM_CI_VERBOSE="1",
        VLLM_CI_FLAGS="--build-arg max_jobs=2 --build-arg USE_SCCACHE=1,SCCACHE_REGION_NAME=eu-west-1",
    )
    s = StepSettings.from_env(full)
    parser, _ = cli.build_parser()
    build = vars(parser.parse_args(s.build_args("r.json")))
    assert (build["function"], build["output"], build["image"], build["cache_to"]) == (
        "build",
        "r.json",
        s.image_ref,
        s.cache_to,
    )
    assert build["cache_from"] == list(s.cache_from) and build["cache_strict"] is True
    assert build["aws_secret_access_key"] == "env:AWS_SECRET_ACCESS_KEY"
    # Repeated and comma-separated --build-arg values add up, each a string as given (buildx's --build-arg).
    assert build["build_arg"] == ["max_jobs=2", "USE_SCCACHE=1", "SCCACHE_REGION_NAME=eu-west-1"]
