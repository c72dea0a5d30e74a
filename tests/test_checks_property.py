"""Generated bad and odd input against the real client command: whatever is given, the command ends
with 0, 1, 2 or 130 and at most one `vllm-ci: error:` line, never a traceback or exit 3 (a bug of
ours), never echoes a secret, and writes nothing but where `-o` points.

hypothesis (pinned in pyproject.toml) generates the inputs; a fixed seed and a bounded number of
examples keep the run the same on every CI run. The many cases run with an engine address that
cannot answer, so whatever passes the input checks ends at the engine check (exit 1) and no
container work is done; a few cases run `plan` on the real engine."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
from collections.abc import Iterator

import dagger
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from conftest import EXAMPLE
from vllm_ci import cli

SECRET = "s3cr3t-Value-never-shown"
SANDBOX_FILES = {
    "secret.txt": SECRET.encode(),
    "binary.bin": b"\xff\xfe\x00\x80",
    "empty.txt": b"",
    "report.json": b'{"target": "test", "stages": []}',
}
NO_ENGINE = "unix:///nonexistent/engine.sock"
FAST_EXAMPLES = 500
ENGINE_EXAMPLES = 4


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """A folder of odd files for the inputs to name, and the secret's variable set."""
    root = tmp_path_factory.mktemp("bad-input")
    for name, content in SANDBOX_FILES.items():
        (root / name).write_bytes(content)
    (root / "folder").mkdir()
    os.environ["VLLM_CI_PROPERTY_SECRET"] = SECRET
    yield root
    os.environ.pop("VLLM_CI_PROPERTY_SECRET", None)


def snapshot(root: pathlib.Path) -> dict[str, bytes]:
    """Every file under a folder with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


ODD_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
WORDS = st.sampled_from(
    [
        "",
        " ",
        "-",
        "--",
        "test",
        "base",
        "nope",
        "${CUDA_VERSION}",
        "$(touch /tmp/x)",
        "a\nb",
        "NaN",
        "inf",
        "-5",
        "0",
        "1e309",
        "x" * 300,
    ]
)


def paths(root: pathlib.Path) -> st.SearchStrategy[str]:
    """Paths: the example, missing ones, a file where a folder is wanted, odd names."""
    return (
        st.sampled_from(
            [
                str(EXAMPLE),
                str(root / "missing"),
                str(root / "secret.txt"),
                str(root / "folder"),
                str(root / "missing" / "x"),
                "",
                ".",
            ]
        )
        | ODD_TEXT
    )


def refs() -> st.SearchStrategy[str]:
    """Image and repository references, good and bad."""
    return (
        st.sampled_from(
            [
                "127.0.0.1:5000/test/ok",
                "127.0.0.1:5000/test/ok:tag",
                "UPPER/Case",
                "a b",
                "host:port/x",
                "127.0.0.1:5000/x@sha256:abc",
                "127.0.0.1:5000/",
                "127.0.0.1:5000/test/ok,,",
            ]
        )
        | ODD_TEXT
    )


def secrets(root: pathlib.Path) -> st.SearchStrategy[str]:
    """Secret references: good, unset, missing, binary, empty, and the secret typed as is."""
    return st.sampled_from(
        [
            f"file:{root / 'secret.txt'}",
            f"file:{root / 'binary.bin'}",
            f"file:{root / 'empty.txt'}",
            f"file:{root / 'missing'}",
            "env:VLLM_CI_PROPERTY_SECRET",
            "env:VLLM_CI_UNSET",
            "env:",
            SECRET,
            "file:",
        ]
    )


def reports() -> st.SearchStrategy[str]:
    """Build reports, whole and mangled."""
    value = st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | ODD_TEXT,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
        max_leaves=6,
    )
    stage = st.fixed_dictionaries({"stage": value, "key": value, "outcome": value}, optional={"build_seconds": value})
    whole = st.fixed_dictionaries({"target": value, "stages": st.lists(stage, max_size=2) | value})
    return whole.map(json.dumps) | ODD_TEXT


# --build-arg NAME=VALUE: names the example's Dockerfile declares (in its spelling), one it does not, one
# spelled in the wrong case, GIT_REPO_CHECK (only 0 is supported), names that are no names; and no `=` at all.
ARG_NAMES = st.sampled_from(
    [
        "max_jobs",
        "PIP_INDEX_URL",
        "TIMM_VERSION",
        "NCCL_VERSION",
        "CUDA_VERSION",
        "torch_cuda_arch_list",
        "GIT_REPO_CHECK",
        "MAX_JOBS",
        "NO_SUCH_ARG",
        "",
        "1x",
        "a b",
        "--max-jobs",
    ]
)
BUILD_ARGS = st.tuples(ARG_NAMES, WORDS | ODD_TEXT).map("=".join) | WORDS | ODD_TEXT

NUMBERS = st.sampled_from(["-5", "0", "2", "NaN", "inf", "-inf", "1e309", "3.5", "", "x"]) | st.integers().map(str)


def values_for(option: cli.Option, root: pathlib.Path) -> st.SearchStrategy[str]:
    """Values for one option of the command line, by its type and name."""
    if option.kind is dagger.Directory or option.kind is dagger.File:
        return st.just(str(EXAMPLE)) | paths(root)
    if option.kind is dagger.Secret:
        return secrets(root)
    if option.kind in (int, float):
        return NUMBERS
    if option.python_name == "build_arg":
        return BUILD_ARGS
    if "report" in option.python_name:
        return st.just(SANDBOX_FILES["report.json"].decode()) | reports()
    if any(word in option.python_name for word in ("cache", "image", "repo")):
        return refs()
    return WORDS | ODD_TEXT


def argv_for(root: pathlib.Path) -> st.SearchStrategy[list[str]]:
    """A command line from the module's own functions: maybe some constructor flags, a function with
    its required flags, some of its other flags, maybe -o; each as --flag=value, so a value may start
    with a dash."""
    _, per_function = cli.build_parser()
    constructor = st.lists(
        st.sampled_from(
            [
                o
                for o in cli.constructor_options()
                if o.python_name in ("build_arg", "cache_compression", "openai_extras")
            ]
        ).flatmap(lambda o: st.tuples(st.just(o.flag), values_for(o, root))),
        max_size=3,
    )
    output = st.sampled_from(
        [[], [f"-o={root / 'missing' / 'out'}"], [f"-o={root / 'folder'}"], [f"-o={root / 'out.txt'}"]]
    )

    def call(name: str) -> st.SearchStrategy[list[tuple[str, str]]]:
        options = per_function[name]
        needed = [st.tuples(st.just(o.flag), values_for(o, root)) for o in options if o.required]
        optional = [o for o in options if not o.required]
        more = (
            st.lists(
                st.sampled_from(optional).flatmap(lambda o: st.tuples(st.just(o.flag), values_for(o, root))), max_size=3
            )
            if optional
            else st.just([])
        )
        return st.tuples(st.tuples(*needed), more).map(lambda parts: [*parts[0], *parts[1]])

    def line(parts: tuple[list[tuple[str, str]], list[str], str, list[tuple[str, str]]]) -> list[str]:
        ctor, out, name, flags = parts
        return [f"{f}={v}" for f, v in ctor] + out + [name] + [f"{f}={v}" for f, v in flags]

    names = st.sampled_from(sorted(per_function))
    return names.flatmap(lambda name: st.tuples(constructor, output, st.just(name), call(name))).map(line)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """cli.main in this process, its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse's --help
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def held(argv: list[str], code: int, stderr: str) -> None:
    """What every case must hold, whatever the input."""
    errors = [line for line in stderr.splitlines() if line.startswith("vllm-ci: error:")]
    assert code in (0, 1, 2, 130), (argv, code, stderr)
    assert len(errors) <= 1 and "Traceback" not in stderr, (argv, stderr)
    assert code == 0 or len(stderr.strip().splitlines()) == 1, (argv, stderr)
    assert SECRET not in stderr, argv


def test_generated_bad_input_ends_in_one_line_and_a_documented_code_and_writes_nothing_else(
    sandbox: pathlib.Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_RUNNER_HOST", NO_ENGINE)
    before = snapshot(sandbox)
    example_before = snapshot(EXAMPLE)
    tried: list[list[str]] = []

    @seed(31)
    @settings(
        max_examples=FAST_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(argv_for(sandbox))
    def case(argv: list[str]) -> None:
        tried.append(argv)
        (sandbox / "out.txt").unlink(missing_ok=True)
        code, _, stderr = run_main(argv)
        held(argv, code, stderr)
        assert snapshot(sandbox) == before | (
            {"out.txt": (sandbox / "out.txt").read_bytes()} if (sandbox / "out.txt").exists() and "-o" in argv else {}
        ), argv

    case()
    assert snapshot(EXAMPLE) == example_before
    request.config.pluginmanager.get_plugin("terminalreporter").write_line(
        f"bad-input property: {len(tried)} generated command lines, none with exit 3, a traceback or two error lines"
    )


@pytest.mark.engine
def test_generated_build_arguments_plan_on_the_real_engine_or_are_refused_in_one_line(
    engine: None, sandbox: pathlib.Path
) -> None:
    tried = 0

    @seed(31)
    @settings(
        max_examples=ENGINE_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.sampled_from(["PIP_INDEX_URL", "max_jobs", "TIMM_VERSION", "CUDA_VERSION"]), WORDS | ODD_TEXT)
    def case(name: str, value: str) -> None:
        nonlocal tried
        tried += 1
        argv = [f"--build-arg={name}={value}", "plan", "--source", str(EXAMPLE), "--target", "base"]
        code, stdout, stderr = run_main(argv)
        held(argv, code, stderr)
        assert code in (0, 2), stderr
        if code == 0:
            assert json.loads(stdout)["stages"][0]["stage"] == "base"

    case()
    assert tried == ENGINE_EXAMPLES
