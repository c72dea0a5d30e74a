"""`.buildkite/pipeline.yml` against Buildkite's own schema, our extra rules, and the real agent's parser."""

import os
import shutil
from pathlib import Path

import pytest
import yaml
from buildkite_schema import dry_run, rule_violations, steps, validator

REPO = Path(__file__).resolve().parent.parent
PIPELINE = REPO / ".buildkite" / "pipeline.yml"


@pytest.fixture(scope="module")
def pipeline() -> dict:
    """The pipeline file as data."""
    return yaml.safe_load(PIPELINE.read_text())


def test_the_pipeline_validates_against_buildkites_schema(schema, pipeline):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(schema).iter_errors(pipeline)]
    assert errors == []


@pytest.mark.parametrize(
    "bad_step",
    [
        {"label": "x", "comand": "true"},
        {"command": "true", "agent": {"queue": "q"}},
        {"command": "true", "retry": {"automatic": {"limit": 11}}},
        {"command": "true", "timeout_in_minutes": "soon"},
    ],
)
def test_the_schema_catches_typos_so_the_validation_means_something(schema, bad_step):
    assert not validator(schema).is_valid({"steps": [bad_step]})


def test_the_pipeline_breaks_none_of_the_rules_the_schema_misses(pipeline):
    assert rule_violations(pipeline) == []


def test_the_extra_rules_catch_what_they_are_for(schema):
    bad = {
        "steps": [
            {
                "group": "g",
                "steps": [
                    {"command": "a", "key": "a", "concurrency": 1},
                    {"command": "b", "key": "b", "if": "build.branch == 'main'", "branches": "main"},
                ],
            }
        ]
    }
    assert validator(schema).is_valid(bad)  # the schema lets both through
    assert rule_violations(bad) == ["a: concurrency without concurrency_group", "b: both if and branches"]


def test_the_image_step_is_what_a_buildkite_user_expects(pipeline):
    (step,) = list(steps(pipeline))
    assert step["label"].startswith(":docker:") and step["key"] == "image-build"
    assert step["command"] == "ci/buildkite-step" and (REPO / "ci/buildkite-step").stat().st_mode & 0o111
    assert step["agents"]["queue"] and step["timeout_in_minutes"] > 0
    assert step["artifact_paths"] == ["vllm-ci-out/*"]  # the step script's default VLLM_CI_OUT
    assert sorted(r["exit_status"] for r in step["retry"]["automatic"]) == [-1, 255]
    assert step["concurrency"] == 1 and "${BUILDKITE_BRANCH}" in step["concurrency_group"]
    assert not {"password", "token", "secret"} & {k.lower().rsplit("_", 1)[-1] for k in step.get("env", {})}


def test_the_real_agent_parses_the_pipeline_and_its_output_still_validates(schema):
    agent = shutil.which("buildkite-agent")
    if agent is None:
        pytest.skip("buildkite-agent is not installed: run ci/install-buildkite")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "BUILDKITE_AGENT_ACCESS_TOKEN": "dummy",
        "BUILDKITE_BRANCH": "feature/x",
        "BUILDKITE_PIPELINE_SLUG": "vllm",
    }
    uploaded = dry_run(agent, PIPELINE, env)
    assert list(validator(schema).iter_errors(uploaded)) == []
    (step,) = uploaded["steps"]
    assert step["concurrency_group"] == "vllm-ci-image/feature/x"
    assert step["env"]["VLLM_CI_SOURCE"] == "examples/mini-vllm"
    assert step["env"]["VLLM_CI_ARGS_FILE"] == "examples/mini-vllm/vllm-ci.args"  # the flags ci/example passes
    assert (REPO / step["env"]["VLLM_CI_ARGS_FILE"]).is_file()
