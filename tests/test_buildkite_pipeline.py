"""`.buildkite/pipeline.yml` against Buildkite's own schema, our extra rules, and the real agent's parser."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PIPELINE = REPO / ".buildkite" / "pipeline.yml"
SDK_VERSION = "0.12.0"
SDK_WHEEL = f"buildkite_sdk-{SDK_VERSION}-py3-none-any.whl"
SDK_WHEEL_SHA256 = (
    "58cfd0901f5f04c6d08f76ec57e8ad959e7eff8dbbadbe2daaa5c7403dc34b01"  # same pin as ci/install-buildkite
)
CACHE = Path(os.environ.get("VLLM_CI_CACHE", "/var/cache/vllm-ci")) / f"buildkite-sdk-{SDK_VERSION}"


@pytest.fixture(scope="module")
def schema() -> dict:
    """Buildkite's pipeline schema from the pinned buildkite-sdk wheel (downloaded by ci/install-buildkite)."""
    wheel = CACHE / SDK_WHEEL
    if not wheel.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
                str(CACHE),
                f"buildkite-sdk=={SDK_VERSION}",
            ],
            check=True,
            timeout=300,
        )
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == SDK_WHEEL_SHA256, f"{wheel} does not match its pin"
    with zipfile.ZipFile(wheel) as zf:
        return json.loads(zf.read("buildkite_sdk/schema.json"))


@pytest.fixture(scope="module")
def pipeline() -> dict:
    """The pipeline file as data."""
    return yaml.safe_load(PIPELINE.read_text())


def steps(pipeline: dict) -> Iterator[dict]:
    """Every step of a pipeline, group steps' children included."""
    for step in pipeline.get("steps", []):
        if isinstance(step, dict):
            yield step
            yield from steps(step) if "group" in step else ()


def rule_violations(pipeline: dict) -> list[str]:
    """What the schema lets through but Buildkite rejects or ignores."""
    found = []
    for step in steps(pipeline):
        name = step.get("key") or step.get("label") or "?"
        if "concurrency" in step and "concurrency_group" not in step:
            found.append(f"{name}: concurrency without concurrency_group")
        if "if" in step and "branches" in step:
            found.append(f"{name}: both if and branches")
    return found


def validator(schema: dict) -> jsonschema.Draft7Validator:
    """A Draft 7 validator of the schema (which must itself be valid)."""
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


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


def dry_run(agent: str, pipeline: Path, env: dict[str, str]) -> dict:
    """The real agent's parse of a pipeline file (interpolated with env), as data; it must succeed."""
    done = subprocess.run(
        [agent, "pipeline", "upload", "--dry-run", "--format", "json", str(pipeline)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


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
