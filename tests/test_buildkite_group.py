"""vLLM's image-build group as a drop-in: .buildkite/image_build/ held against the pinned release's own files
(read from its unpacked sdist, never copied here), and its scripts run with a stand-in CLI, registry and agent."""

import csv
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import yaml
from buildkite_fakes import SHA
from buildkite_schema import dry_run, rule_violations, steps, validator

from conftest import EXAMPLE, cli_env, example_flags, vllm_source
from local_registry import LocalRegistry
from stagecache.registry import OCI_MANIFEST, RegistryClient
from vllm_ci.buildkite import SettingsError
from vllm_ci.buildkite_group import CPU, CUDA, IMAGES_CONTEXT, GroupJob, push_extra_tags
from vllm_ci.docker_shim import cli_args
from vllm_ci.group_pipeline import FUNCTION, OUR_SCRIPTS, step_function
from vllm_ci.group_pipeline import drop_in as group_drop_in
from vllm_ci.options import build_parser

REPO = Path(__file__).resolve().parent.parent
MODULE = "http://127.0.0.1/cgi-bin/git/vllm-ci.git@" + "0123456789abcdef" * 2 + "01234567"  # pinned: a commit
KEYS = ["image-build", "image-build-smoke-test", "image-build-cpu"]
NS = "127.0.0.1:5000/vllm-ci-test-repo"  # the cache lanes' namespace: $REGISTRY/$REPO


@pytest.fixture(scope="module")
def upstream() -> Path:
    """The pinned release's .buildkite/image_build/ (fetched by version and hash if not here yet, never skipped)."""
    return vllm_source() / ".buildkite" / "image_build"


@pytest.fixture(scope="module")
def drop_in(upstream: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our drop-in, as the real command prints it from the release's own group file."""
    done = subprocess.run(
        [sys.executable, "-P", "-m", "vllm_ci.group_pipeline", "--module", MODULE, str(upstream / "image_build.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    path = tmp_path_factory.mktemp("drop-in") / "image_build.yaml"
    path.write_text(done.stdout)
    return path


def by_key(path: Path) -> tuple[dict, dict]:
    """A group file, and its steps by key."""
    group = yaml.safe_load(path.read_text())
    return group, {s["key"]: s for s in group["steps"]}


def script_arguments(command: str) -> list[list[str]]:
    """Each call of a .buildkite/image_build script in a step command: the script, then its arguments."""
    words = shlex.split(command.replace(";", " ; "))
    starts = [i for i, w in enumerate(words) if w.startswith(".buildkite/image_build/") or w == FUNCTION]
    calls = []
    for i in starts:
        end = next((j for j in range(i + 1, len(words)) if words[j] in (";", "fi", "then", "else")), len(words))
        calls.append(words[i:end])
    return calls


def test_the_drop_in_is_upstreams_group_with_its_three_steps_and_only_the_build_scripts_swapped(upstream, drop_in):
    up_group, up = by_key(upstream / "image_build.yaml")
    group, ours = by_key(drop_in)
    assert {k: v for k, v in group.items() if k != "steps"} == {k: v for k, v in up_group.items() if k != "steps"}
    assert list(ours) == KEYS and set(KEYS) < set(up)  # the HPU and arm64 steps are not ours to build
    for key in KEYS:  # label, depends_on, retry (-1, -10), timeout, env: all of it; commands but for the script
        ours_commands = ours[key]["commands"]
        if key in OUR_SCRIPTS:  # ours first: the definition of the function the swapped command calls
            assert ours_commands[0] == step_function(MODULE)
            ours_commands = ours_commands[1:]
        commands = [
            c.replace(f"{FUNCTION} image-build-cpu", ".buildkite/image_build/image_build_cpu.sh").replace(
                f"{FUNCTION} image-build", ".buildkite/image_build/image_build.sh"
            )
            for c in ours_commands
        ]
        assert {**ours[key], "commands": commands} == up[key], key


def test_the_build_commands_call_our_step_with_upstreams_positional_arguments(drop_in):
    _, ours = by_key(drop_in)
    main_call, other_call = script_arguments(ours["image-build"]["commands"][1])
    common = ["$REGISTRY", "$REPO", "$BUILDKITE_COMMIT", "$BRANCH", "$IMAGE_TAG"]
    assert main_call == [FUNCTION, "image-build", *common, "$IMAGE_TAG_LATEST"]
    assert other_call == [FUNCTION, "image-build", *common]
    (cpu_call,) = script_arguments(ours["image-build-cpu"]["commands"][1])
    assert cpu_call == [FUNCTION, "image-build-cpu", "$REGISTRY", "$REPO", "$BUILDKITE_COMMIT"]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda text: text.replace("key: image-build-cpu", "key: image-build-cpu-x86"), "has no step image-build-cpu"),
        (lambda text: text.replace("image_build_cpu.sh", "build_cpu.sh"), "no longer calls .buildkite/image_build/"),
        (lambda text: text + "\n  - [unclosed", "is not YAML"),
    ],
)
def test_a_group_file_the_drop_in_cannot_follow_is_refused_in_one_line(upstream, tmp_path, edit, says):
    edited = tmp_path / "image_build.yaml"
    edited.write_text(edit((upstream / "image_build.yaml").read_text()))
    done = subprocess.run(
        [sys.executable, "-P", "-m", "vllm_ci.group_pipeline", "--module", MODULE, str(edited)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith("vllm-ci: error: ") and says in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("module", "says"),
    [
        (MODULE.rsplit("@", 1)[0] + "@main", "not pinned"),  # a branch moves
        (MODULE.rsplit("@", 1)[0], "not pinned"),  # no ref: the default branch
        (MODULE[:-33], "not pinned"),  # a short sha: ambiguous, resolved by the remote
        (MODULE.rsplit("@", 1)[0] + "@v1.2", "not pinned"),  # not a semver tag
        (None, "the following arguments are required: --module"),
    ],
    ids=["branch", "none", "short-sha", "not-semver", "absent"],
)
def test_an_unpinned_module_reference_is_refused_in_one_line(upstream, module, says):
    flags = ["--module", module] if module else []
    done = subprocess.run(
        [sys.executable, "-P", "-m", "vllm_ci.group_pipeline", *flags, str(upstream / "image_build.yaml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith("vllm-ci: error: ") and says in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_release_tag_is_a_pinned_reference(upstream):
    tagged = MODULE.rsplit("@", 1)[0] + "@v0.3.1"
    group = group_drop_in((upstream / "image_build.yaml").read_text(), tagged)
    assert f"call -m '{tagged}' group-job" in group["steps"][0]["commands"][0]


def test_the_group_validates_against_buildkites_schema_and_breaks_no_extra_rule(schema, drop_in):
    pipeline = {"steps": [yaml.safe_load(drop_in.read_text())]}
    assert [e.message for e in validator(schema).iter_errors(pipeline)] == []
    assert rule_violations(pipeline) == []
    assert [s.get("key") for s in steps(pipeline)][1:] == KEYS


def test_the_real_agent_parses_the_group_and_its_output_still_validates(schema, drop_in):
    agent = shutil.which("buildkite-agent")
    if agent is None:
        pytest.skip("buildkite-agent is not installed: run ci/install-buildkite")
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "BUILDKITE_AGENT_ACCESS_TOKEN": "dummy"}
    env |= {
        "REGISTRY": "127.0.0.1:5000",
        "REPO": "r",
        "BRANCH": "main",
        "IMAGE_TAG": "127.0.0.1:5000/r:c",
        "BUILDKITE_COMMIT": SHA,
    }
    uploaded = dry_run(agent, drop_in, env)
    assert list(validator(schema).iter_errors({"steps": [uploaded]})) == []
    cpu = next(s for s in uploaded["steps"] if s["key"] == "image-build-cpu")
    definition, call = cpu["command"].split("\n}\n")
    assert call == f"{FUNCTION} image-build-cpu 127.0.0.1:5000 r " + SHA
    # Ours reaches the job as written: every `$` the job's, none interpolated by the upload; the module as pinned.
    assert definition + "\n}" == step_function(MODULE).replace("$$", "$")
    assert f"dagger --progress=plain call -m '{MODULE}' group-job " in definition
    assert "ci/buildkite-step" not in cpu["command"]


# The lanes: upstream's prepare_cache_tags (run from its script) against ours, both named as lanes.
LANE_CASES = [
    pytest.param({"BUILDKITE_PULL_REQUEST": "false", "BUILDKITE_BRANCH": "main"}, id="main"),
    pytest.param({"BUILDKITE_PULL_REQUEST": "false", "BUILDKITE_BRANCH": "rel/0.34"}, id="branch"),
    pytest.param(
        {"BUILDKITE_PULL_REQUEST": "12", "BUILDKITE_BRANCH": "feat/x", "BUILDKITE_PULL_REQUEST_BASE_BRANCH": "main"},
        id="pr-on-main",
    ),
    pytest.param(
        {"BUILDKITE_PULL_REQUEST": "34", "BUILDKITE_BRANCH": "fix", "BUILDKITE_PULL_REQUEST_BASE_BRANCH": "rel/0.34"},
        id="pr-on-branch",
    ),
]


def upstream_lanes(script: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    """The lane upstream's script writes and those it reads (in order, once each): its own function, run."""
    functions = r"^(clean_docker_tag|prepare_cache_tags)\(\) \{.*?^\}"
    defs = "\n".join(m[0] for m in re.finditer(functions, script.read_text(), re.M | re.S))
    shell = f'{defs}\nprepare_cache_tags\necho "$CACHE_TO $CACHE_FROM $CACHE_FROM_BASE_BRANCH $CACHE_FROM_MAIN"'
    done = subprocess.run(["bash", "-c", shell], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True)
    write, *reads = done.stdout.split()
    branches = [env.get("BUILDKITE_BRANCH", ""), env.get("BUILDKITE_PULL_REQUEST_BASE_BRANCH", "")]

    def lane(ref: str) -> str:
        """main / pr-N / branch:NAME for one of upstream's cache refs (its CPU suffix taken off)."""
        tag = ref.rsplit(":", 1)[1].removesuffix("-x86_cpu")
        if "postmerge" in ref and tag == "latest":
            return "main"
        if re.fullmatch(r"pr-[0-9]+", tag):
            return tag
        (name,) = [b for b in branches if b and re.sub(r"[^a-zA-Z0-9._-]", "_", b)[:128] == tag]
        return f"branch:{name}"

    return lane(write), list(dict.fromkeys(lane(r) for r in reads))


def our_lanes(job: GroupJob, env: dict[str, str]) -> tuple[str, list[str]]:
    """The lane our job writes and those it reads (its own first: the cache's rule), named as above."""
    s = job.settings
    names = {s.cache_repo("main"): "main"}
    names |= {s.cache_repo(b): f"branch:{b}" for b in (env["BUILDKITE_BRANCH"], s.base_branch) if b and b != "main"}
    if s.pull_request is not None:
        names[f"{NS}/cache-pr-{s.pull_request}"] = f"pr-{s.pull_request}"
    return names[s.cache_to], [names[r] for r in (s.cache_to, *s.cache_from)]


@pytest.mark.parametrize("case", LANE_CASES)
@pytest.mark.parametrize(("kind", "script"), [(CUDA, "image_build.sh"), (CPU, "image_build_cpu.sh")])
def test_each_job_writes_and_reads_the_cache_lanes_upstreams_script_does(upstream, case, kind, script):
    args = ["127.0.0.1:5000", "vllm-ci-test-repo", SHA, "b", f"127.0.0.1:5000/vllm-ci-test-repo:{SHA}"]
    job = GroupJob.parse([kind, *args], case)
    written, read = our_lanes(job, case)
    assert (written, read) == upstream_lanes(upstream / script, case)
    assert case["BUILDKITE_BRANCH"] == "main" or written != "main"  # never a PR or a branch writing main's


def test_on_main_the_image_is_pushed_as_image_tag_and_image_tag_latest_and_elsewhere_as_image_tag_only():
    args = ["127.0.0.1:5000", "r", SHA, "main", f"127.0.0.1:5000/r:{SHA}"]
    on_main = GroupJob.parse([CUDA, *args, "127.0.0.1:5000/r:latest"], {"BUILDKITE_BRANCH": "main"})
    assert on_main.tags == (f"127.0.0.1:5000/r:{SHA}", "127.0.0.1:5000/r:latest")
    build = on_main.settings.build_args("out.json")
    assert build[build.index("--image") + 1] == f"127.0.0.1:5000/r:{SHA}"
    assert "--registry-username" not in build  # the agent's docker login, not credentials in the pipeline
    elsewhere = GroupJob.parse([CUDA, *args], {"BUILDKITE_BRANCH": "feat"})
    assert elsewhere.tags == (f"127.0.0.1:5000/r:{SHA}",)


@pytest.mark.parametrize(("nightly", "suffix"), [("0", "cpu"), ("1", "torch-nightly-cpu")])
def test_the_cpu_job_builds_dockerfile_cpu_and_tags_it_as_upstreams_script(nightly, suffix):
    job = GroupJob.parse([CPU, "127.0.0.1:5000", "r", SHA], {"BUILDKITE_BRANCH": "main", "TORCH_NIGHTLY": nightly})
    assert job.tags == (f"127.0.0.1:5000/r:{SHA}-{suffix}",)
    build = job.settings.build_args("out.json")
    assert build[: build.index("build")][:2] == ["--dockerfile=docker/Dockerfile.cpu", "--build-arg=VLLM_CPU_X86=true"]
    assert ("--build-arg=PYTORCH_NIGHTLY=1" in build) == (nightly == "1")


def test_the_kernel_symbol_map_is_built_and_exported_only_when_asked():
    args = [CUDA, "127.0.0.1:5000", "r", SHA, "main", f"127.0.0.1:5000/r:{SHA}"]
    asked = GroupJob.parse(args, {"BUILDKITE_BRANCH": "main", "VLLM_KERNEL_SYMBOL_MAP": "1"})
    assert asked.symbol_map and "--build-arg=VLLM_KERNEL_SYMBOL_MAP=1" in asked.settings.build_args("o")
    assert f"--build-arg=buildkite_commit={SHA}" in asked.settings.build_args("o")  # the commit the map names
    not_asked = GroupJob.parse(args, {"BUILDKITE_BRANCH": "main"})
    assert not not_asked.symbol_map and "--build-arg=VLLM_KERNEL_SYMBOL_MAP=1" not in not_asked.settings.build_args("o")


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        ([CUDA, "127.0.0.1:5000", "r", SHA, "main"], {}, "usage: image-build <registry>"),
        ([CPU, "127.0.0.1:5000", "r"], {}, "usage: image-build-cpu <registry> <repo> <commit>"),
        ([CUDA, "127.0.0.1:5000", "r", SHA, "main", "r:x"], {}, "not a fully qualified image reference"),
        ([CUDA, "127.0.0.1:5000", "r", SHA, "main", "127.0.0.1:5000/r:x"], {"TORCH_NIGHTLY": "1"}, "out of scope"),
    ],
)
def test_a_bad_call_is_refused_in_one_line(argv, env, says):
    with pytest.raises(SettingsError, match=re.escape(says)):
        GroupJob.parse(argv, {"BUILDKITE_BRANCH": "main", **env})


AGENT = """#!/bin/sh
{ echo "ARGS $*"; echo "CWD $PWD"; [ "$1" = annotate ] && cat; echo END; } >>"$FAKE_AGENT_LOG"
"""


def test_the_images_annotation_is_the_one_upstreams_annotate_script_posts(upstream, tmp_path):
    image, latest = f"127.0.0.1:5000/vllm-ci-test-repo:{SHA}", "127.0.0.1:5000/vllm-ci-test-repo:latest"
    env = {"BUILDKITE_BRANCH": "main", "BUILDKITE_LABEL": "Build"}
    job = GroupJob.parse([CUDA, "127.0.0.1:5000", "vllm-ci-test-repo", SHA, "main", image, latest], env)
    (tmp_path / "buildkite-agent").write_text(AGENT)
    (tmp_path / "buildkite-agent").chmod(0o755)
    theirs = subprocess.run(
        ["bash", str(upstream.parent / "scripts" / "annotate-image-build.sh"), image, latest],
        env={**env, "PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE_AGENT_LOG": str(tmp_path / "theirs.log")},
        capture_output=True,
        text=True,
    )
    assert theirs.returncode == 0, theirs.stderr
    call, cwd, *body = (tmp_path / "theirs.log").read_text().removesuffix("END\n").splitlines(keepends=True)
    # The same call as the drop-in's step makes (its shell test), with our job's body on its input.
    assert call == f"ARGS annotate --append --style info --context {IMAGES_CONTEXT}\n"
    assert "".join(body) == job.images_annotation(env)


async def tag_with_a_client_of(addr: str, job: GroupJob) -> None:
    """push_extra_tags, as the job runs it, with a client of the registry."""
    async with RegistryClient(addr) as client:
        await push_extra_tags(client, job)


@pytest.mark.parametrize("latest_repo", ["vllm-ci-test-repo", "elsewhere"])
def test_on_main_image_tag_latest_names_the_very_manifest_pushed_as_image_tag(tmp_path, latest_repo):
    async def push(addr: str) -> None:
        """A one-layer image under vllm-ci-test-repo:SHA, as the build would have pushed it."""
        async with RegistryClient(addr) as client:
            config = await client.put_blob("vllm-ci-test-repo", b'{"architecture":"amd64","os":"linux"}')
            layer = await client.put_blob("vllm-ci-test-repo", b"not really a tarball")
            blobs = [{"mediaType": "application/octet-stream", "digest": d, "size": 1} for d in (config, layer)]
            manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blobs[0], "layers": blobs[1:]}
            await client.put_manifest("vllm-ci-test-repo", SHA, json.dumps(manifest).encode(), OCI_MANIFEST)

    with LocalRegistry(tmp_path / "registry") as registry:
        anyio.run(push, registry.addr)
        image, latest = f"{registry.addr}/vllm-ci-test-repo:{SHA}", f"{registry.addr}/{latest_repo}:latest"
        job = GroupJob.parse(
            [CUDA, registry.addr, "vllm-ci-test-repo", SHA, "main", image, latest], {"BUILDKITE_BRANCH": "main"}
        )
        anyio.run(tag_with_a_client_of, registry.addr, job)
        assert registry.digest(latest_repo, "latest") == registry.digest("vllm-ci-test-repo", SHA) is not None
        assert registry.manifest_raw(latest_repo, "latest") == registry.manifest_raw("vllm-ci-test-repo", SHA)


# The smoke-test step offline: its `docker run` commands through ci/docker-shim/docker and the module's run-image.
def smoke_commands(upstream: Path, image: str) -> list[list[str]]:
    """Upstream's smoke-test commands as the agent's shell would split them, $IMAGE_TAG set to ``image``."""
    _, up = by_key(upstream / "image_build.yaml")
    return [
        shlex.split(c.replace('"$IMAGE_TAG"', shlex.quote(image))) for c in up["image-build-smoke-test"]["commands"]
    ]


def test_the_docker_shim_passes_upstreams_smoke_commands_on_to_run_image_word_for_word(upstream):
    image = f"127.0.0.1:5000/vllm-ci-test-repo:{SHA}"
    commands = smoke_commands(upstream, image)
    assert len(commands) == 2
    parser, _ = build_parser()
    for docker, run, *words in commands:
        assert (docker, run) == ("docker", "run")
        called = parser.parse_args(cli_args([run, *words]))
        at = words.index(image)
        assert called.function == "run-image" and called.image == image
        assert ["--rm", "--user", called.user, "--entrypoint", called.entrypoint] == words[:at]
        assert called.args == words[at + 1 :]  # the shell script with its quotes, line breaks and commas


@pytest.mark.parametrize(
    "argv", [["ps"], ["run", "-v", "/:/host", "img"], ["run", "--privileged", "img"], ["run", "img", "echo", ""]]
)
def test_the_docker_shim_refuses_what_it_does_not_do_with_dockers_exit_125(argv, capsys):
    with pytest.raises(SystemExit) as refused:
        cli_args(argv)
    assert refused.value.code == 125
    assert capsys.readouterr().err.startswith("vllm-ci docker shim: error: ")


def test_the_docker_shim_runs_an_image_as_the_user_it_names_and_fails_as_its_command_does(engine):
    docker = [str(REPO / "ci" / "docker-shim" / "docker"), "run", "--rm", "--user", "2000:0", "--entrypoint", "/bin/sh"]
    image = "127.0.0.1:5000/library/vllm-ci-runtime:bookworm"
    env = {**os.environ, "VLLM_CI_PYTHON": sys.executable}
    ran = subprocess.run([*docker, image, "-ec", "id -u; id -g"], env=env, capture_output=True, text=True)
    assert (ran.returncode, ran.stdout.split()) == (0, ["2000", "0"]), ran.stderr
    failed = subprocess.run(
        [*docker, image, "-ec", "echo FAIL: wrapper missing; exit 1"], env=env, capture_output=True, text=True
    )
    assert failed.returncode == 1 and "FAIL: wrapper missing" in failed.stderr, failed.stderr


def test_the_kernel_symbol_map_function_writes_the_map_the_build_made_naming_its_commit(engine, tmp_path):
    out = tmp_path / "kernel_symbol_map.json.gz"
    flags = [*example_flags(), "--build-arg=VLLM_KERNEL_SYMBOL_MAP=1", f"--build-arg=buildkite_commit={SHA}"]
    done = subprocess.run(
        [sys.executable, "-P", "-m", "vllm_ci", *flags, "-o", str(out), "kernel-symbol-map", "--source", str(EXAMPLE)],
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(gzip.decompress(out.read_bytes()))["commit"] == SHA


FAKE_DAGGER = """#!/bin/sh
printf '%s\\n' "$@" >"$FAKE_DAGGER_ARGS"
for arg; do case $arg in --path=*) out=${arg#--path=} ;; esac; done
mkdir -p "$out" && printf -- '- **L**: `i`\\n' >"$out/images.md"
[ -n "$FAKE_BUILT" ] && echo '| test | hit |' >"$out/annotation.md" && echo success >"$out/annotation.style" && echo '{}' >"$out/report.json"
[ -n "$FAKE_BUILT" ] && echo map >"$out/kernel_symbol_map.json.gz"
[ -n "$FAKE_DAGGER_HANG" ] && echo building && exec sleep 60
exit "${FAKE_DAGGER_EXIT:-0}"
"""


def cpu_step(drop_in: Path, tmp_path: Path, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The CPU build step as the real agent uploads it, as a bash -e command line, and its environment: a stand-in
    dagger and agent first on the PATH."""
    agent = shutil.which("buildkite-agent")
    if agent is None:
        pytest.skip("buildkite-agent is not installed: run ci/install-buildkite")
    upload_env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "BUILDKITE_AGENT_ACCESS_TOKEN": "dummy"}
    upload_env |= {"REGISTRY": "127.0.0.1:5000", "REPO": "r", "BUILDKITE_COMMIT": SHA}
    cpu = next(s for s in dry_run(agent, drop_in, upload_env)["steps"] if s["key"] == "image-build-cpu")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("dagger", FAKE_DAGGER), ("buildkite-agent", AGENT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    job_env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_DAGGER_ARGS": str(tmp_path / "dagger-args"),
        "FAKE_AGENT_LOG": str(tmp_path / "agent-log"),
        **env,
    }
    return ["bash", "-e", "-c", cpu["command"]], job_env


def run_cpu_step(drop_in: Path, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The CPU build step, run to its end."""
    command, job_env = cpu_step(drop_in, tmp_path, env)
    return subprocess.run(command, cwd=tmp_path, env=job_env, text=True, capture_output=True)


@pytest.mark.parametrize("built", [True, False], ids=["built", "skipped"])
def test_the_steps_shell_passes_the_job_to_the_pinned_module_and_posts_the_folder_it_returns(drop_in, tmp_path, built):
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text("{}")
    env = {
        "FAKE_BUILT": "1" if built else "",
        "BUILDKITE_BRANCH": "feat/x",
        "BUILDKITE_LABEL": 'Build "CPU", x86',  # a quote and a comma survive the CSV
        "VLLM_CI_CPU_ARGS_FILE": "examples/mini-vllm/vllm-ci-cpu.args",
        "VLLM_CI_REGISTRY_PASSWORD": "never-passed",
    }
    done = run_cpu_step(drop_in, tmp_path, env)
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "dagger-args").read_text().splitlines()
    assert args[:5] == ["--progress=plain", "call", "-m", MODULE, "group-job"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in args[5:] if arg.startswith("--"))
    assert next(csv.reader([flags["job"]])) == ["image-build-cpu", "127.0.0.1:5000", "r", SHA]
    assert next(csv.reader([flags["env"]])) == ["BUILDKITE_BRANCH=feat/x", 'BUILDKITE_LABEL=Build "CPU", x86']
    assert flags["args-file"] == "examples/mini-vllm/vllm-ci-cpu.args" and flags["source"] == "."
    assert flags["docker-config"] == f"file:{tmp_path}/.docker/config.json"  # the agent's docker login, as a Secret
    assert args[-2:] == ["export", "--path=vllm-ci-out/image-build-cpu"]
    assert "never-passed" not in "\n".join(args)
    log = (tmp_path / "agent-log").read_text()
    assert "ARGS annotate --append --style info --context docker-images\n" in log and "- **L**: `i`" in log
    posted = "ARGS annotate --context vllm-ci-image-image-build-cpu --style success\n"
    assert (posted in log) == built and ("| test | hit |" in log) == built
    assert ("ARGS artifact upload vllm-ci-out/image-build-cpu/report.json;" in log) == built
    # The kernel symbol map (the module returns it when asked): upstream's artifact name, uploaded from its folder.
    symbol_map = f"ARGS artifact upload kernel_symbol_map.json.gz\nCWD {tmp_path}/vllm-ci-out/image-build-cpu\n"
    assert (symbol_map in log) == built


def test_a_failed_module_call_fails_the_step_with_its_exit_code_and_posts_nothing(drop_in, tmp_path):
    done = run_cpu_step(drop_in, tmp_path, {"FAKE_DAGGER_EXIT": "1"})
    assert done.returncode == 1
    assert "docker-config" not in (tmp_path / "dagger-args").read_text()  # no docker login: none passed
    assert not (tmp_path / "agent-log").exists()


def test_a_cancel_while_the_module_runs_ends_the_step_at_once_and_posts_nothing(drop_in, tmp_path):
    # The agent cancels by SIGTERM to the job's process group: the shell and `dagger call` both get it. Measured on
    # the real engine: `dagger call group-job` exits 143 within milliseconds and its session's work stops.
    command, job_env = cpu_step(drop_in, tmp_path, {"FAKE_DAGGER_HANG": "1", "FAKE_BUILT": "1"})
    with subprocess.Popen(
        command, cwd=tmp_path, env=job_env, stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as run:
        assert run.stdout is not None and run.stdout.readline() == "building\n"
        os.killpg(run.pid, signal.SIGTERM)
        run.communicate(timeout=10)
    assert (
        run.returncode == -signal.SIGTERM
    )  # ended by the signal, as upstream's script's shell is: no exit 255 of ours
    assert not (tmp_path / "agent-log").exists()  # nothing posted for a cancelled job
