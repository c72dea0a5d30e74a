"""vLLM's image-build group end to end: `bk local run` of .buildkite/image_build/image_build.yaml with the real agent
on the example, offline: both images built and tagged as upstream's scripts tag them, the smoke test as upstream
writes it (through ci/docker-shim), then a Python-only commit through the same group."""

import json
import shutil
import uuid
from pathlib import Path

from conftest import REGISTRY, edit
from local_registry import RegistryAPI
from test_buildkite_e2e import SOURCE, bk_run, commit, head, homes, make_checkout, timings, tools  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
GROUP = ".buildkite/image_build/image_build.yaml"


def group_env(namespace: str, sha: str) -> dict[str, str]:
    """What vLLM's pipeline sets for the group on main (the upload interpolates it), and the example's flags."""
    image = f"{REGISTRY}/{namespace}/vllm-ci-test-repo"
    return {
        "REGISTRY": f"{REGISTRY}/{namespace}",  # upstream's has a path too (public.ecr.aws/q9t5s3a7)
        "REPO": "vllm-ci-test-repo",
        "BRANCH": "main",
        "IMAGE_TAG": f"{image}:{sha}",
        "IMAGE_TAG_LATEST": f"{image}:latest",
        "VLLM_CI_SOURCE": SOURCE,
        "VLLM_CI_ARGS_FILE": f"{SOURCE}/vllm-ci.args",
        "VLLM_CI_CPU_ARGS_FILE": f"{SOURCE}/vllm-ci-cpu.args",
    }


def reports(home: Path) -> dict[str, dict]:
    """The jobs' uploaded report.json artifacts, by the image each names."""
    found = [json.loads(p.read_text()) for p in (home / ".buildkite" / "local" / "artifacts").rglob("report.json")]
    return {r["image"].split("@")[0]: r for r in found}


def test_bk_local_run_of_the_group_pushes_upstreams_tags_passes_the_smoke_test_and_rebuilds_a_python_change(
    tmp_path: Path,
    homes: Path,  # noqa: F811
) -> None:
    checkout = make_checkout(tmp_path)
    cpu_file = Path(SOURCE) / "docker" / "Dockerfile.cpu"  # placed by ci/up, never committed here
    shutil.copy2(REPO / cpu_file, checkout / cpu_file)
    sha = head(commit(checkout, "with Dockerfile.cpu"))
    namespace = f"e2e-group-{uuid.uuid4().hex[:10]}"
    local, repo = RegistryAPI(REGISTRY), f"{namespace}/vllm-ci-test-repo"
    shim = str(checkout / "ci" / "docker-shim")

    first = bk_run(checkout, homes / "home-1", group_env(namespace, sha), "group, first", GROUP, shim)
    assert first.returncode == 0, first.log
    assert local.digest(repo, "latest") == local.digest(repo, sha) is not None  # on main: $IMAGE_TAG_LATEST
    assert local.digest(repo, f"{sha}-cpu") is not None
    assert "non-root invariants OK" in first.lines()  # upstream's smoke test, against our image
    assert set(reports(homes / "home-1")) == {f"{REGISTRY}/{repo}:{sha}", f"{REGISTRY}/{repo}:{sha}-cpu"}

    # A Python-only commit through the same group: a new image, its heavy stages from the cache.
    edit(checkout / SOURCE / "vllm" / "layers.py", "CHANGED_BY_TEST = 1")
    changed = head(commit(checkout, "a Python-only change"))
    second = bk_run(checkout, homes / "home-2", group_env(namespace, changed), "group, python-only", GROUP, shim)
    assert second.returncode == 0, second.log
    assert local.digest(repo, "latest") == local.digest(repo, changed) != local.digest(repo, sha)
    report = reports(homes / "home-2")[f"{REGISTRY}/{repo}:{changed}"]
    outcomes = {s["stage"]: s["outcome"] for s in report["stages"]}
    assert {outcomes[s] for s in ("base", "csrc-build", "test-deps") if s in outcomes} <= {"hit", "unused"}, outcomes
    assert "non-root invariants OK" in second.lines()
