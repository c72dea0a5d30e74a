"""The foundation: a real engine, a real registry, PyPI from containers, and the client command."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import uuid

import pytest
from dagger import dag

from conftest import EXAMPLE, REGISTRY, REPO
from vllm_ci.options import build_parser, module_functions

pytestmark = pytest.mark.anyio
DEBIAN = f"{REGISTRY}/library/debian:bookworm"


async def test_a_container_from_the_local_registry_runs_a_command(client: None) -> None:
    out = (
        await dag.container()
        .from_(DEBIAN)
        .with_exec(["sh", "-c", "echo hello from $(cat /etc/debian_version)"])
        .stdout()
    )
    assert out.startswith("hello from 12.")


async def test_publish_then_from_gives_the_same_file_and_digest(client: None) -> None:
    marker = uuid.uuid4().hex
    ref = f"{REGISTRY}/test/roundtrip:{marker}"
    published = await dag.container().from_(DEBIAN).with_new_file("/marker", marker).publish(ref)
    back = dag.container().from_(published)
    assert await back.file("/marker").contents() == marker
    assert (await back.publish(ref)).split("@")[1] == published.split("@")[1]


async def test_a_container_downloads_a_package_from_pypi(client: None) -> None:
    build = f"{REGISTRY}/library/vllm-ci-build:bookworm"
    out = await (
        dag.container()
        .from_(build)
        .with_exec(["python3", "-m", "pip", "download", "--no-deps", "-d", "/tmp/dl", "six==1.16.0"])
        .with_exec(["ls", "/tmp/dl"])
        .stdout()
    )
    assert "six-1.16.0-py2.py3-none-any.whl" in out


async def test_an_exec_sees_no_certificate_the_engine_would_install_around_it(client: None) -> None:
    # library/debian has no certificates of its own: an engine that saw the machine's CA folder
    # would copy them in for every exec (two extra containers each; ci/engine hides the folder).
    listing = await (
        dag.container()
        .from_(DEBIAN)
        .with_exec(["sh", "-c", f": {uuid.uuid4().hex}; ls -A /usr/local/share/ca-certificates 2>/dev/null; echo end"])
        .stdout()
    )
    assert listing == "end\n"


async def test_the_engine_version_equals_the_sdk_version(client: None) -> None:
    from importlib.metadata import version

    assert await dag.version() == f"v{version('dagger-io')}"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The client command as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "vllm_ci", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_the_client_help_lists_every_module_function_with_its_doc() -> None:
    help_text = " ".join(run_cli("--help").stdout.split())
    for name, method in module_functions().items():
        assert name in help_text
        assert " ".join(method.__doc__.split())[:40] in help_text


def test_the_client_imports_the_sdk_without_its_type_checks_leaves_the_environment_and_freezes_what_it_made() -> None:
    """beartype's wrapping of the SDK's methods is 0.4 s of every command, the collector's walks over what the import
    made 0.17 s (vllm_ci.entry.client_import)."""
    probe = (
        "import gc, os; from vllm_ci.entry import main; code = main(); import dagger; "
        "print(hasattr(dagger.Container.with_exec, '__beartype_wrapper'), os.environ.get('PYTHONOPTIMIZE'), code, "
        "gc.get_freeze_count() > 10_000)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONOPTIMIZE"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    # unwrapped; unset again; help shown; the import's objects frozen
    assert done.stdout.splitlines()[-1] == "False None 2 True", done.stderr


def test_a_function_added_to_the_module_needs_no_other_change() -> None:
    # Every @function in main.py's source, found independently of the SDK, is a sub-command of the
    # client command with the same arguments: nothing else lists them.
    tree = ast.parse((REPO / "src" / "vllm_ci" / "main.py").read_text())
    declared = {
        node.name.rstrip("_").replace("_", "-"): [a.arg for a in node.args.args[1:]]
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef)
        and any(isinstance(d, ast.Name) and d.id == "function" for d in node.decorator_list)
    }
    parser, per_function = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subcommands) == set(declared) == set(module_functions())
    assert {name: [o.python_name for o in opts] for name, opts in per_function.items()} == declared


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["no-such-function"], "no-such-function"),
        (["plan"], "--source"),
        (["plan", "--source", "/no/such/dir"], "/no/such/dir"),
        (["build", "--source", str(EXAMPLE), "--registry-password", "plain-text-value"], "--registry-password"),
        (
            ["build", "--source", str(EXAMPLE), "--registry-password", "env:VLLM_CI_UNSET_VARIABLE"],
            "VLLM_CI_UNSET_VARIABLE",
        ),
    ],
    ids=["unknown function", "missing argument", "missing path", "malformed secret", "unset secret variable"],
)
def test_bad_input_exits_with_one_line_before_any_container_work(args: list[str], names: str) -> None:
    # An engine address that cannot answer: any attempt at container work would fail differently.
    env = {**os.environ, "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///nonexistent/engine.sock"}
    result = run_cli(*args, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vllm-ci: error:") and names in lines[0]
    assert "plain-text-value" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (
            ["prune", "--cache-repo", "not a ref"],
            2,
            "vllm-ci: error: --cache-repo: not a fully qualified image reference",
        ),
        (["report", "--report-json", "{bad"], 2, "vllm-ci: error: --report-json: not a build report (JSONDecodeError"),
        (
            ["prune", "--cache-repo", "127.0.0.1:5999/nobody/cache"],
            1,
            "vllm-ci: error: prune: registry 127.0.0.1:5999 unreachable: ConnectError (under `dagger call`, pass "
            "--registry-service=tcp://127.0.0.1:5999 to reach the host's loopback) (127.0.0.1:5999/nobody/cache)",
        ),
    ],
    ids=["malformed prune repository", "malformed report", "unreachable registry"],
)
def test_a_failure_is_one_line_with_its_exit_code_not_a_traceback(
    engine: None, args: list[str], code: int, says: str
) -> None:
    result = run_cli(*args)
    assert result.returncode == code
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(says), line


def test_an_engine_that_does_not_answer_is_one_line_that_says_how_to_start_it() -> None:
    env = {**os.environ, "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///nonexistent/engine.sock"}
    result = run_cli("plan", "--source", str(EXAMPLE), env=env)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        "vllm-ci: error: engine: the Dagger engine at unix:///nonexistent/engine.sock does not answer"
    )
    assert "ci/up" in line


@pytest.mark.parametrize(
    ("raised", "code", "says"),
    [
        (
            RuntimeError("boom\nsecond line"),
            3,
            "vllm-ci: error: unexpected RuntimeError: boom (run with -v for the traceback)",
        ),
        (KeyboardInterrupt(), 130, "vllm-ci: error: interrupted"),
    ],
    ids=["unexpected", "interrupt"],
)
def test_the_unexpected_and_an_interrupt_have_their_own_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raised: BaseException, code: int, says: str
) -> None:
    from vllm_ci import cli

    async def fails(*_: object) -> None:
        raise raised

    monkeypatch.setattr(cli, "check_engine", lambda: None)
    monkeypatch.setattr(cli, "run_unwrapped", fails)
    report = '{"target": "test", "stages": []}'  # a valid one: the checks before the call pass
    assert cli.main(["report", "--report-json", report]) == code
    assert capsys.readouterr().err.strip().splitlines() == [says]
    assert cli.main(["-v", "report", "--report-json", report]) == code
    assert ("Traceback" in capsys.readouterr().err) is (code == 3)
