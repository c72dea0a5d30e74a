"""Credentials never leave as text: a URL's user-info is blanked in every line, key, label and report, and the
private-index netrc reaches the RUNs as a secret file only (issue 31)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import uuid

import anyio
import pytest

from conftest import EXAMPLE, REGISTRY, example_build, example_flags
from imagefs import layer_tar
from stagecache.keys import PREIMAGE_LABEL
from stagecache.registry import ImageRef, RegistryClient
from stagecache.stages import stage_preimages
from stagecache.why import INPUTS_SUFFIX, load_inputs
from vllm_ci.graph import stage_graph
from vllm_ci.instructions import NETRC_PATH

USER = "usr-Zk2"
TOKEN = "tok-Qv9-never-shown"
NETRC = "machine idx.example login bot password netrc-Pw4-never-shown"  # no newline: read_secret strips it
NETRC_PASSWORD = NETRC.rsplit(" ", 1)[1]
# A URL the base stage reads (in every RUN's ARGs and in its key) that no install goes to while USE_SCCACHE
# is off; with it on, the first RUN that reads it fails: port 9 of the loopback answers nothing.
SCCACHE_URL = f"https://{USER}:{TOKEN}@127.0.0.1:9/sccache.tar.gz"
BUILD_BASE = f"{REGISTRY}/library/vllm-ci-build:bookworm"


def vllm_ci(*args: str) -> subprocess.CompletedProcess[str]:
    """The client command as a user runs it (this checkout's sources first on the path)."""
    return subprocess.run(
        [sys.executable, "-m", "vllm_ci", *example_flags(), *args],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=1800,
    )


@pytest.mark.parametrize(
    ("stage", "arg"),
    # A stage's key holds the ARGs it declares: base's SCCACHE_DOWNLOAD_URL; csrc-build's PIP_INDEX_URL, and
    # UV_INDEX_URL, whose default is ${PIP_INDEX_URL} (the token would be in its value too).
    [("base", "SCCACHE_DOWNLOAD_URL"), ("csrc-build", "PIP_INDEX_URL")],
)
def test_a_url_user_info_is_no_part_of_a_key_and_no_part_of_its_preimage(stage: str, arg: str) -> None:
    def preimage(url: str) -> str:
        graph = stage_graph(example_build(build_arg=[f"{arg}={url}"]))
        return next(p for p in stage_preimages(graph, {}) if p.stage == stage).canonical()

    with_token = preimage(f"https://bot:{TOKEN}@idx.example/simple")
    assert "https://idx.example/simple" in with_token  # the ARG's value is part of it, without the user-info
    assert preimage("https://idx.example/simple") == with_token  # the same key, since the same preimage
    assert TOKEN not in with_token and "bot" not in with_token
    assert preimage("https://other.example/simple") != with_token  # the host is part of it


@pytest.mark.engine
def test_a_failing_run_with_a_credentialed_index_url_prints_one_error_line_without_the_token(engine: None) -> None:
    failed = vllm_ci(
        f"--build-arg=PIP_INDEX_URL=https://bot:{TOKEN}@127.0.0.1:9/simple",
        f"--build-arg=SCCACHE_DOWNLOAD_URL={SCCACHE_URL}",
        "--build-arg=USE_SCCACHE=1",
        "build",
        "--source",
        str(EXAMPLE),
        "--target",
        "base",
    )
    assert failed.returncode == 1, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("vllm-ci: error:")]
    assert len(errors) == 1 and "curl -L -o sccache.tar.gz ${SCCACHE_DOWNLOAD_URL}" in errors[0]  # the script
    assert '+set}" ] || export' not in errors[0]  # not the ARG values the RUN is given
    assert TOKEN not in failed.stderr + failed.stdout


async def registry_texts(repo: str) -> tuple[list[str], list[str], list[bytes]]:
    """A repository's every manifest and JSON blob (configs, records) as text; the layer paths and the files'
    bytes of the layers its images add to the build base image."""
    ref = ImageRef.parse(repo)
    texts, paths, contents = [], [], []
    async with RegistryClient(ref.registry) as client:
        base_manifest, _ = await client.manifest("library/vllm-ci-build", "bookworm") or ({}, "")
        base_layers = set((await client.image_config("library/vllm-ci-build", base_manifest))["rootfs"]["diff_ids"])
        for tag in await client.tags(ref.repository):
            raw, _ = await client.raw_manifest(ref.repository, tag) or (b"", "")
            texts.append(raw.decode())
            manifest = json.loads(raw)
            config = await client.blob(ref.repository, manifest["config"]["digest"])
            texts.append(config.decode())
            layers = manifest.get("layers", [])
            if manifest.get("artifactType"):  # the .inputs record: gzipped JSON, read as the cache reads it
                texts.append(json.dumps(await load_inputs(client, ref.repository, tag.removesuffix(INPUTS_SUFFIX))))
                continue
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
            for layer, diff_id in zip(layers, diff_ids):
                with tempfile.TemporaryDirectory() as tmp:
                    blob = pathlib.Path(tmp) / "layer"
                    await client.download_blob(ref.repository, layer["digest"], blob)
                    with layer_tar(blob, layer["mediaType"]) as archive:
                        for member in archive:
                            paths.append("/" + member.name.lstrip("./"))
                            if diff_id not in base_layers and member.isfile():
                                contents.append(archive.extractfile(member).read())  # type: ignore[union-attr]
    return texts, paths, contents


@pytest.mark.engine
def test_a_build_with_credentials_leaves_them_in_no_label_config_manifest_layer_or_report(
    engine: None, tmp_path: pathlib.Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(NETRC)
    repo = f"{REGISTRY}/test/creds-{uuid.uuid4().hex[:12]}"
    # The first RUN of base checks that it sees the netrc as given, by digest (no secret in the command).
    sees_netrc = f'echo "{hashlib.sha256(NETRC.encode()).hexdigest()}  $NETRC" | sha256sum -c -'
    report = tmp_path / "report.json"
    done = vllm_ci(
        f"--build-arg=SCCACHE_DOWNLOAD_URL={SCCACHE_URL}",
        f"--manylinux-packages-command={sees_netrc}",
        "-o",
        str(report),
        "build",
        "--source",
        str(EXAMPLE),
        "--target",
        "base",
        "--cache-to",
        f"{repo}-cache",
        "--image",
        f"{repo}:image",
        "--index-netrc",
        f"file:{netrc}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for text in (report.read_text(), done.stdout, done.stderr):
        assert TOKEN not in text and NETRC_PASSWORD not in text
    for repository in (f"{repo}-cache", repo):
        texts, paths, contents = anyio.run(registry_texts, repository)
        assert any(PREIMAGE_LABEL in text and "https://127.0.0.1:9/sccache.tar.gz" in text for text in texts)
        assert not [text for text in texts if TOKEN in text or NETRC_PASSWORD in text or USER in text]
        assert paths and not [path for path in paths if path.startswith(NETRC_PATH)]  # no mount left behind
        assert contents and not [data for data in contents if TOKEN.encode() in data or NETRC_PASSWORD.encode() in data]
        assert not [text for text in texts if '"NETRC=' in text]  # the image config sets no NETRC
