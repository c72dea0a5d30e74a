"""group-job's pure parts (vllm_ci.group_job): the job environment it accepts and the docker login it reads."""

import base64
import json

import pytest

from vllm_ci.errors import UsageError
from vllm_ci.group_job import ENV_NAMES, docker_login, job_env

HOST = "registry.example:5000"


def test_the_job_environment_is_the_names_the_job_reads_and_no_secret():
    assert job_env(["BUILDKITE_BRANCH=feat/x", "BUILDKITE_LABEL=a=b, c"]) == {
        "BUILDKITE_BRANCH": "feat/x",
        "BUILDKITE_LABEL": "a=b, c",
    }
    with pytest.raises(UsageError, match="credentials come from --docker-config"):
        job_env(["VLLM_CI_REGISTRY_PASSWORD=x"])
    with pytest.raises(UsageError, match="not NAME=VALUE"):
        job_env(["BUILDKITE_BRANCH"])
    assert not any("PASSWORD" in name or "SECRET" in name or "NETRC" in name for name in ENV_NAMES)


@pytest.mark.parametrize(
    "config",
    [
        {"auths": {HOST: {"auth": base64.b64encode(b"bot:pw:with:colons").decode()}}},
        {"auths": {f"https://{HOST}": {"auth": base64.b64encode(b"bot:pw:with:colons").decode()}}},
        {"auths": {HOST: {"username": "bot", "password": "pw:with:colons"}}},
    ],
    ids=["auth", "https-key", "username"],
)
def test_the_docker_login_for_the_host_is_read_from_config_json(config):
    assert docker_login(json.dumps(config), HOST) == ("bot", "pw:with:colons")


def test_no_login_for_the_host_is_anonymous_and_a_helper_is_refused_naming_no_value():
    assert docker_login("", HOST) == ("", "")
    assert docker_login(json.dumps({"auths": {"other:5000": {"auth": "eDp5"}}}), HOST) == ("", "")
    for config in ({"credsStore": "desktop"}, {"credHelpers": {HOST: "ecr-login"}}):
        with pytest.raises(UsageError, match="credential helper docker-credential-"):
            docker_login(json.dumps(config), HOST)
    with pytest.raises(UsageError, match="not JSON") as refused:
        docker_login('{"auths": secret-value', HOST)
    assert "secret-value" not in str(refused.value)
