"""Buildkite's pipeline schema (from the pinned buildkite-sdk wheel), the rules it misses, and the real agent's
parse of a pipeline file: what the pipeline tests share (test_buildkite_pipeline.py, test_buildkite_group.py)."""

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

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
