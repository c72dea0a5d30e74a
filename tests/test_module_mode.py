"""Module mode: the real `dagger` CLI loads our module offline (builtin SDKs from ci/sdk-images),
gives what the client command gives (one code path), and another module builds on ours."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import uuid

import pytest

from conftest import (
    CLIENT,
    DAGGER,
    EXAMPLE,
    NEXT_DEV,
    REGISTRY,
    REPO,
    STATE,
    checkout,
    cli_env,
    example_flags,
    tagged_checkout,
)
from vllm_ci.options import module_functions

CONSUMER = REPO / "examples" / "consumer"
SDK_VARIABLES = ("DAGGER_GO_SDK_MANIFEST_DIGEST", "DAGGER_PYTHON_SDK_MANIFEST_DIGEST")


def run(args: list[str], cwd: pathlib.Path = REPO, timeout: float = 1800) -> str:
    """Run a command; its stdout, or a failure that shows the end of its stderr."""
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(f"{args[0]} exited {proc.returncode}: {' '.join(map(str, args[1:]))}\n{proc.stderr[-4000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def builtin_sdks(engine: None) -> None:
    """The engine runs with the builtin SDK images of ci/sdk-images."""
    env_file = STATE / "engine" / "env"
    pid = (STATE / "engine" / "pid").read_text().strip()
    running = pathlib.Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    for name in SDK_VARIABLES:
        if not any(line.startswith(f"{name}=sha256:") for line in running):
            pytest.fail(f"the engine runs without {name}: run ci/up (step sdk-images; see {env_file})")


def test_dagger_functions_lists_every_function_with_its_doc(builtin_sdks: None) -> None:
    out = run([DAGGER, "functions"])
    listed = {}
    for line in out.splitlines()[1:]:
        name, _, doc = line.strip().partition(" ")
        if name:
            listed[name] = doc.strip()
    expected = {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in module_functions().items()}
    assert listed == expected


def test_function_arguments_keep_their_docs_and_ignore_patterns(builtin_sdks: None) -> None:
    # Docs and Ignore() come from Annotated metadata, which the SDK reads only from evaluated
    # annotations: the module's source must not postpone them.
    out = run([DAGGER, "call", "plan", "--help"])
    assert "The vLLM checkout" in out
    assert "The stage to build" in out


def test_plan_gives_the_client_commands_keys(builtin_sdks: None) -> None:
    module = json.loads(run([DAGGER, "call", *example_flags(), "plan", "--source=examples/mini-vllm"]))
    client = json.loads(run([CLIENT, *example_flags(), "plan", "--source", "examples/mini-vllm"]))
    assert [(s["stage"], s["key"]) for s in module["stages"]] == [(s["stage"], s["key"]) for s in client["stages"]]
    assert module == client


def test_both_modes_key_the_version_a_checkouts_git_gives_and_nothing_else_of_it(
    builtin_sdks: None, example_dir: pathlib.Path
) -> None:
    tagged_checkout(example_dir)
    version_flags = run([sys.executable, "-m", "vllm_ci.version", example_dir]).split()
    assert version_flags[0].startswith("--git-version=" + NEXT_DEV)
    module = json.loads(run([DAGGER, "call", *example_flags(), *version_flags, "plan", f"--source={example_dir}"]))
    client = json.loads(run([CLIENT, *example_flags(), "plan", "--source", example_dir]))  # derives them itself
    plain = json.loads(run([CLIENT, *example_flags(), "plan", "--source", "examples/mini-vllm"]))
    keys = {
        mode: {s["stage"]: s["key"] for s in plan["stages"]}
        for mode, plan in (("module", module), ("client", client), ("plain", plain))
    }
    assert keys["module"] == keys["client"]
    assert keys["client"]["rust-build"] != keys["plain"]["rust-build"]  # the same rust files, another version
    assert keys["client"]["rust-build-cache"] == keys["plain"]["rust-build-cache"]


def test_build_in_module_mode_fills_the_cache_the_client_command_reads_to_the_same_image(builtin_sdks: None) -> None:
    # Same keys, same cache entries: what `dagger call build` exports, the client command imports.
    # (Two independent builds do not give byte-equal images: the engine namespaces a module's
    # cache volumes, so the module's pip/ccache mounts differ from the client's and its layers
    # are built anew. The shared stage cache is what makes the two modes one code path.)
    tag = uuid.uuid4().hex[:12]
    cache = f"{REGISTRY}/test/module-mode-{tag}"
    module = json.loads(
        run(
            [
                DAGGER,
                "call",
                *example_flags(),
                "build",
                "--source=examples/mini-vllm",
                f"--cache-to={cache}",
                f"--image={REGISTRY}/test/mm:module-{tag}",
                f"--registry-service=tcp://{REGISTRY}",  # the module reaches the host's loopback registry
            ]
        )
    )
    assert {s["outcome"] for s in module["stages"]} == {"exported"}, module["stages"]
    client = json.loads(
        run(
            [
                CLIENT,
                *example_flags(),
                "build",
                "--source",
                "examples/mini-vllm",
                "--cache-from",
                cache,
                "--image",
                f"{REGISTRY}/test/mm:client-{tag}",
            ]
        )
    )
    target = client["stages"][-1]
    assert target["outcome"] == "hit"
    assert target["ref"] == module["stages"][-1]["ref"]
    assert [s["key"] for s in client["stages"]] == [s["key"] for s in module["stages"]]
    # Both publish the target's cache entry as it is: one image, whichever mode built it.
    assert client["image"].partition("@")[2] == module["image"].partition("@")[2] == target["ref"].partition("@")[2]


def test_a_consumer_module_builds_on_vllm_base(builtin_sdks: None) -> None:
    # The consumer takes the build arguments it passes on to vllm-ci; the example's, here (its
    # mirrors and portability commands included). No flag of the example holds a comma.
    passed = ",".join(flag.removeprefix("--") for flag in example_flags())
    out = run([DAGGER, "call", f"--vllm-ci-args={passed}", "test"], cwd=CONSUMER)
    assert re.search(r"^test_entry_point_registers .* \.\.\. ok$", out, re.M), out
    assert re.search(r"^test_vllm_is_installed_with_its_extension .* \.\.\. ok$", out, re.M), out
    assert out.strip().splitlines()[-1] == "OK"


def test_checkouts_under_umask_002_and_022_by_other_owners_get_the_same_keys_in_both_modes(
    builtin_sdks: None, tmp_path: pathlib.Path
) -> None:

    laptop = checkout(EXAMPLE, tmp_path / "laptop", 0o002)
    agent = checkout(EXAMPLE, tmp_path / "agent", 0o022)
    for path in agent.rglob("*"):
        os.chown(path, 65534, 65534, follow_symlinks=False)
        os.utime(path, (86400, 86400), follow_symlinks=False)
    assert (laptop / "setup.py").stat().st_mode != (agent / "setup.py").stat().st_mode
    keys = {}
    for name, tree in (("laptop", laptop), ("agent", agent)):
        for mode, command in (("client", [CLIENT]), ("module", [DAGGER, "call"])):
            plan = json.loads(run([*command, *example_flags(), "plan", f"--source={tree}"]))
            keys[name, mode] = [(s["stage"], s["key"]) for s in plan["stages"]]
    assert len(set(map(tuple, keys.values()))) == 1, keys


def test_dagger_call_conformance_reports_on_the_real_dockerfile_and_conforms(builtin_sdks: None) -> None:
    from conftest import vllm_source

    proc = subprocess.run(
        [DAGGER, "call", "conformance", f"--source={vllm_source()}"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "conforms: stages 16/16 built, 0 missing" in proc.stdout + proc.stderr


def outcomes(report: dict) -> dict[str, str]:
    """Each stage's outcome in a build report."""
    return {s["stage"]: s["outcome"] for s in report["stages"]}


def fill_cache(cache: str, *credentials: str, env: dict[str, str] | None = None) -> dict:
    """Fill a cache repository with every stage of the example, by the client command."""
    proc = subprocess.run(
        [str(CLIENT), *example_flags(), "build", "--source", "examples/mini-vllm", "--cache-to", cache, *credentials],
        cwd=REPO,
        env={**cli_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert set(outcomes(report).values()) == {"exported"}, outcomes(report)
    return report


def test_dagger_call_hits_a_warm_cache_on_the_hosts_loopback_registry(builtin_sdks: None) -> None:
    cache = f"{REGISTRY}/test/module-warm-{uuid.uuid4().hex[:12]}"
    warm = fill_cache(cache)
    module = json.loads(
        run(
            [
                DAGGER,
                "call",
                *example_flags(),
                "build",
                "--source=examples/mini-vllm",
                f"--cache-from={cache}",
                f"--registry-service=tcp://{REGISTRY}",
            ]
        )
    )
    assert outcomes(module)["test"] == "hit"
    assert "built" not in outcomes(module).values() and "exported" not in outcomes(module).values()
    assert module["stages"][-1]["ref"] == warm["stages"][-1]["ref"]


def test_dagger_call_without_the_tunnel_says_how_to_reach_a_loopback_registry(builtin_sdks: None) -> None:
    cache = f"{REGISTRY}/test/module-no-tunnel-{uuid.uuid4().hex[:12]}"
    plan = json.loads(
        run([DAGGER, "call", *example_flags(), "plan", "--source=examples/mini-vllm", f"--cache-from={cache}"])
    )
    notes = {s["note"] for s in plan["stages"]}
    assert any(f"pass --registry-service=tcp://{REGISTRY}" in note for note in notes), notes


@pytest.fixture(scope="module")
def auth_cache(tmp_path_factory: pytest.TempPathFactory, builtin_sdks: None):
    """A registry that demands a password, holding a warm cache of the example: (cache, username, password)."""
    from local_registry import LocalRegistry

    password = uuid.uuid4().hex
    with LocalRegistry(tmp_path_factory.mktemp("auth-registry"), "bot", password) as registry:
        cache = f"{registry.addr}/test/auth-cache"
        fill_cache(
            cache,
            "--registry-username",
            "bot",
            "--registry-password",
            "env:REGISTRY_PASSWORD",
            env={"REGISTRY_PASSWORD": password},
        )
        yield cache, "bot", password


def test_dagger_call_with_registry_credentials_hits_a_warm_cache_that_needs_them(auth_cache) -> None:
    cache, username, password = auth_cache
    addr = cache.split("/")[0]
    proc = subprocess.run(
        [
            DAGGER,
            "call",
            *example_flags(),
            "build",
            "--source=examples/mini-vllm",
            f"--cache-from={cache}",
            f"--registry-service=tcp://{addr}",
            f"--registry-username={username}",
            "--registry-password=env:REGISTRY_PASSWORD",
        ],
        cwd=REPO,
        env={**cli_env(), "REGISTRY_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    module = json.loads(proc.stdout)
    assert outcomes(module)["test"] == "hit", module["stages"]
    assert "built" not in outcomes(module).values()
    assert password not in proc.stdout + proc.stderr


def test_the_client_command_uses_docker_logins_credential_helper_for_its_look_ups(
    auth_cache, tmp_path: pathlib.Path
) -> None:
    cache, username, password = auth_cache
    addr = cache.split("/")[0]
    # A credential helper as `docker login` leaves one configured; it answers `get` on stdin.
    helpers = tmp_path / "bin"
    helpers.mkdir()
    helper = helpers / "docker-credential-vllmcitest"
    helper.write_text(
        '#!/bin/sh\n[ "$1" = get ] || exit 1\nread server\n'
        f'printf \'{{"ServerURL":"%s","Username":"{username}","Secret":"%s"}}\' '
        '"$server" "$HELPER_SECRET"\n'
    )
    helper.chmod(0o755)
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credHelpers": {addr: "vllmcitest"}}))
    env = {
        **cli_env(),
        "DOCKER_CONFIG": str(config),
        "HELPER_SECRET": password,
        "PATH": f"{helpers}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        [str(CLIENT), *example_flags(), "build", "--source", "examples/mini-vllm", "--cache-from", cache],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert outcomes(report)["test"] == "hit", report["stages"]
    assert "built" not in outcomes(report).values()


def test_dagger_call_from_a_git_url_in_another_checkout_hits_the_client_commands_cache_entries(
    builtin_sdks: None, example_dir: pathlib.Path
) -> None:
    from git_server import GitServer

    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    checkout = example_dir  # a separate checkout of the example
    cache = f"{REGISTRY}/test/git-url-{uuid.uuid4().hex[:12]}"
    client = json.loads(run([CLIENT, *example_flags(), "build", "--source", ".", "--cache-to", cache], cwd=checkout))
    with GitServer() as server:
        url = server.publish(REPO, "vllm-ci.git")
        module = json.loads(
            run(
                [
                    DAGGER,
                    "call",
                    "-m",
                    f"{url}@{head}",
                    *example_flags(),
                    "build",
                    "--source=.",
                    f"--cache-from={cache}",
                    f"--registry-service=tcp://{REGISTRY}",
                ],
                cwd=checkout,
            )
        )
    assert [s["key"] for s in module["stages"]] == [s["key"] for s in client["stages"]]
    assert outcomes(module)["test"] == "hit"
    assert module["stages"][-1]["ref"] == client["stages"][-1]["ref"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["plan", "--source=examples/mini-vllm", "--target=tset"],
            "--target: no stage 'tset'; the stages of docker/Dockerfile: base, ",
        ),
        (
            ["build", "--source=examples/mini-vllm", "--cache-to=not-a-ref"],
            "--cache-to: not a fully qualified image reference",
        ),
    ],
    ids=["target", "cache-to"],
)
def test_dagger_call_refuses_a_bad_argument_in_the_function_before_any_stage(
    builtin_sdks: None, args: list[str], says: str
) -> None:
    proc = subprocess.run([DAGGER, "call", *args], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: FunctionError: ") and says in error, proc.stderr
    assert "stage base" not in proc.stderr  # refused before the source was read or a stage planned
