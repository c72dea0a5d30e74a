"""vLLM's Dockerfile stages, built from the bundled example on the real engine."""

from __future__ import annotations

import inspect
import pathlib
import re

import dockerfile
import pytest

from conftest import EXAMPLE, NEXT_DEV, edit, example_build, example_module, source_of, tagged_checkout, vllm_source
from vllm_ci.checks import check_target
from vllm_ci.declare import DECLARED, STAGE_SETS
from vllm_ci.errors import UsageError
from vllm_ci.graph import stage_graph
from vllm_ci.options import module_functions, options_of
from vllm_ci.stages.common import DIST
from vllm_ci.version import git_versions

pytestmark = pytest.mark.anyio


async def test_every_stage_builds_the_example(client: None) -> None:
    module, source = example_module(), source_of(EXAMPLE)
    # The venv the base stage makes is the Python on PATH, and the build requirements are in it.
    where = (
        await (await module.base(source))
        .with_exec(["python3", "-c", "import sys, idna; print(sys.prefix, idna.__file__)"])
        .stdout()
    )
    prefix, idna = where.split()
    assert prefix == "/opt/venv" and idna.startswith("/opt/venv/lib/")
    assert await (await module.csrc_build(source)).directory("/workspace/dist").glob("*.whl")
    assert "ca-certificates" in await (await module.runtime_base(source)).with_exec(["dpkg", "-l"]).stdout()
    assert "pytest" in await (await module.test_deps(source)).with_exec(["python3", "-m", "pip", "list"]).stdout()
    assert "0.1.0" in await (await module.vllm_base(source)).with_exec(["vllm", "--version"]).stdout()
    openai = await module.openai(source)
    assert await openai.entrypoint() == ["vllm", "serve"]
    assert "serving m" in await openai.with_exec(["m"], use_entrypoint=True).stdout()


async def test_the_stages_the_test_image_does_not_need_build_the_example_too(client: None) -> None:
    module, source = (
        example_module(build_arg=["VLLM_KERNEL_SYMBOL_MAP=1", "buildkite_commit=abc123"]),
        source_of(EXAMPLE),
    )
    dev = await module._stage(source, "dev")
    assert "pycodestyle" in await dev.with_exec(["uv", "pip", "list"]).stdout()  # lint.txt, through dev.txt
    assert await (await module._stage(source, "rust-build")).directory("/workspace/vllm").entries() == ["vllm-rs"]
    assert await (await module._stage(source, "kernel-symbol-map")).exists("/kernel_symbol_map.json.gz")
    sagemaker = await module._stage(source, "vllm-sagemaker")
    assert await sagemaker.entrypoint() == ["./sagemaker-entrypoint.sh"]
    nonroot = await module._stage(source, "vllm-openai-nonroot")
    assert (await nonroot.user(), await nonroot.workdir(), await nonroot.entrypoint()) == (
        "vllm",
        "/home/vllm",
        ["/usr/local/bin/vllm-nonroot-entrypoint.sh"],
    )
    labels = {await label.name(): await label.value() for label in await nonroot.labels()}
    assert labels["ai.vllm.image.tag"] == "local/vllm-openai:dev"  # VLLM_IMAGE_TAG's default, as upstream's LABEL
    # The user exists, vllm-rs is on PATH, and the second extension wheel (extensions-build's) imports.
    out = await nonroot.with_exec(
        ["sh", "-c", "id -u && vllm-rs --version && python3 -c 'import mini_ep_kernels as ep; print(ep.world_size())'"]
    ).stdout()
    uid, binary, version, world_size = out.split()
    # The relink takes the version the client derived (outside git, the example's fallback_version, as an
    # sdist's PKG-INFO gives vLLM's), not its crate's (0.0.1).
    assert (uid, binary, version, world_size) == ("2000", "vllm-rs", "0.1.0", "1")


async def test_runtime_python_holds_of_the_standard_library_only_what_the_compile_reads(client: None) -> None:
    # Each file is a cost of every pull, and runtime-python's pull is on a Python-only change's critical path.
    module, source = example_module(), source_of(EXAMPLE)
    python, runtime = await module._stage(source, "runtime-python"), await module._stage(source, "vllm-runtime-base")
    [compileall] = await python.rootfs().glob("**/compileall.py")
    stdlib = "/" + compileall.rpartition("/")[0]
    kept, whole = (
        set(await python.directory(stdlib).glob("**/*.py")),
        set(await runtime.directory(stdlib).glob("**/*.py")),
    )
    assert {"compileall.py", "py_compile.py", "concurrent/futures/process.py", "encodings/latin_1.py"} <= kept < whole
    assert "email/__init__.py" in whole - kept  # a package the compile never imports
    assert len(kept) < len(whole) / 3


async def test_the_test_image_runs_the_examples_tests_green(client: None) -> None:
    out = await example_module().run_tests(source_of(EXAMPLE))
    assert " passed" in out and "failed" not in out and "error" not in out.lower()


async def test_the_test_image_is_what_installing_the_wheel_gives(client: None) -> None:
    image = await example_module().test_image(source_of(EXAMPLE))
    script = (
        "import importlib.metadata as m, vllm, vllm._C;print(m.version('mini-vllm'), vllm._C.add(2, 3), vllm.__file__)"
    )
    out = await (
        image.with_workdir("/")
        .with_exec(["python3", "-c", script])
        .with_exec(["sh", "-c", "python3 -m pip show mini-vllm && { python3 -m pip check || true; } && vllm --version"])
        .stdout()
    )
    # pip check may name Debian's own python3-gi (software-properties-common's), never vLLM.
    assert (
        "Name: mini-vllm" in out and "mini-vllm" not in out.split("Required-by:")[1] and out.strip().endswith("0.1.0")
    )


async def test_vllms_metadata_record_and_launcher_are_what_uv_writes_installing_builds_wheel(client: None) -> None:
    # Upstream's own install (uv pip install --system dist/*.whl from /vllm-workspace) of build's wheel,
    # on the runtime base, against the test image's file layers. uv_cache.json holds the installed
    # wheel's mtime, so only its fields are compared, and RECORD's row for it is left out. Bytecode
    # (UV_COMPILE_BYTECODE=1 in the runtime base) records each file's mtime: compared by the files
    # compiled, and by Python finding every one up to date (compileall recompiles none).
    module, source = example_module(), source_of(EXAMPLE)
    wheel, ours = await module.wheel(source), await module.test_image(source)
    theirs = (
        (await module.runtime_base(source))
        .with_file(f"/vllm-workspace/dist/{await wheel.name()}", wheel)
        .with_workdir("/vllm-workspace")
        .with_exec(["sh", "-c", "uv pip install --system --no-deps dist/*.whl"])
    )
    show = (
        "cd $(python3 -c 'import sysconfig; print(sysconfig.get_path(\"platlib\"))')/mini_vllm-*.dist-info && "
        'for f in INSTALLER REQUESTED direct_url.json METADATA WHEEL entry_points.txt; do echo "== $f"; cat $f; '
        "echo; done && grep -v '/uv_cache.json,' RECORD && python3 -c 'import json; print(sorted(json.load(open(\"uv_cache.json\"))))' && "
        "stat -c '%a' /usr/local/bin/vllm && cat /usr/local/bin/vllm && "
        "cd ../vllm && cat _version.py && find . -name '*.pyc' | sort && { python3 -m compileall . | grep -c '^Compiling' || true; }"
    )
    expected, got = [await image.with_exec(["sh", "-c", show]).stdout() for image in (theirs, ours)]
    assert got == expected
    assert "== INSTALLER\nuv\n" in got and '"url":"file:///vllm-workspace/dist/mini_vllm-0.1.0-' in got
    assert "#!/usr/bin/python3\n" in got
    # build's version (setuptools-scm's), not csrc-build's pretend one, in the dist-info and _version.py.
    assert "\nVersion: 0.1.0\n" in got and "__version__ = version = '0.1.0'" in got and "csrc.build" not in got
    assert "./__pycache__/layers.cpython-" in got and got.endswith("\n0\n")  # compiled, and all up to date
    # RECORD lists the package layer's files (not in csrc-build's wheel) and vllm-rs, with their hashes.
    assert "\nvllm/layers.py,sha256=" in got and "\nvllm/vllm-rs,sha256=" in got


async def test_the_wheel_contains_the_compiled_extension_and_imports(client: None) -> None:
    module, source = example_module(), source_of(EXAMPLE)
    wheel = await module.wheel(source)
    name = await wheel.name()
    runtime = await module.runtime_base(source)
    out = await (
        runtime.with_file(f"/tmp/{name}", wheel)
        .with_exec(["python3", "-m", "zipfile", "-l", f"/tmp/{name}"])
        .with_exec(
            [
                "sh",
                "-c",
                f"PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q /tmp/{name} && cd / && "
                "python3 -c 'import vllm._C as c; print(\"sum\", c.add(1, 2))'",
            ]
        )
        .stdout()
    )
    assert "sum 3" in out


async def _keys(path: pathlib.Path, **overrides: object) -> dict[str, str]:
    """Stage keys of a checkout for the test target."""
    source = source_of(path)
    cache = await example_module(**overrides).stage_cache(source)
    return {p.stage.name: p.key for p in await cache.plan(source, "test")}


async def test_a_python_only_change_leaves_csrc_build_identical_and_changes_the_test_image(
    client: None, example_dir: pathlib.Path
) -> None:
    # What csrc-build gives its children is its wheel; the test image's vLLM is its installed package
    # (digests of those folders: hashing whole root filesystems took minutes and proved no more).
    module = example_module()
    installed = f"{example_build().site_packages()}/vllm"
    before_keys = await _keys(example_dir)
    before_csrc = await (await module.csrc_build(source_of(example_dir))).directory(DIST).digest()
    before_test = await (await module.test_image(source_of(example_dir))).directory(installed).digest()
    edit(example_dir / "vllm" / "layers.py", "CHANGED_BY_TEST = True")
    after_keys = await _keys(example_dir)
    assert after_keys["csrc-build"] == before_keys["csrc-build"]
    assert await (await module.csrc_build(source_of(example_dir))).directory(DIST).digest() == before_csrc
    assert after_keys["test"] != before_keys["test"]
    assert await (await module.test_image(source_of(example_dir))).directory(installed).digest() != before_test


async def test_a_csrc_change_changes_csrc_build(client: None, example_dir: pathlib.Path) -> None:
    module = example_module()
    before_keys = await _keys(example_dir)
    before = await (await module.csrc_build(source_of(example_dir))).directory(DIST).digest()
    edit(example_dir / "csrc" / "ops.c", "int changed_by_a_test(void) { return 42; }")
    assert (await _keys(example_dir))["csrc-build"] != before_keys["csrc-build"]
    assert await (await module.csrc_build(source_of(example_dir))).directory(DIST).digest() != before


async def test_docs_and_git_never_enter_a_key(client: None, example_dir: pathlib.Path) -> None:
    before = await _keys(example_dir)
    edit(example_dir / "docs" / "README.md", "more docs")
    (example_dir / ".git").mkdir()
    (example_dir / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert await _keys(example_dir) == before


async def test_the_version_derived_from_git_moves_only_the_stages_that_bind_git_and_is_what_vllm_rs_reports(
    client: None, example_dir: pathlib.Path
) -> None:
    tagged_checkout(example_dir)
    version, clean = git_versions(example_dir)
    assert clean.startswith(NEXT_DEV)
    plain = await _keys(example_dir)
    versioned = await _keys(example_dir, git_version=version, git_version_clean=clean)
    moved = {name for name in plain if plain[name] != versioned[name]}
    assert moved == {"rust-build", "rust-installed", "test"}  # not build-cache, base, csrc-build: they never bind .git
    image = await example_module(git_version=version, git_version_clean=clean).vllm_base(source_of(example_dir))
    assert (await image.with_exec(["vllm-rs", "--version"]).stdout()).strip() == f"vllm-rs {clean}"
    # The installed vLLM is build's version too: its metadata and _version.py (setuptools-scm's dev version).
    script = "import importlib.metadata as m, vllm; print(m.version('mini-vllm'), vllm.__version__)"
    assert (await image.with_exec(["python3", "-c", script]).stdout()).split() == [version, version]


# The stages this project adds to vLLM's file, each a fast path of its own (a stage function with from_=None).
FAST_PATH_STAGES = {"rust-installed", "extension", "runtime-python", "openai-deps", "package", "source-tree"}
CPU_FAST_PATH_STAGES = {"compile", "extension", "test-base", "runtime-python", "package"}


def stage_names(text: str) -> set[str]:
    """The stages BuildKit's own parser finds in a Dockerfile's text (FROM … AS name)."""
    return {c.value[2] for c in dockerfile.parse_string(text) if c.cmd == "FROM" and len(c.value) == 3}


def listed(text: str, file: str) -> set[str]:
    """The stages a help text or refusal lists for one Dockerfile (`…docker/Dockerfile: a, b; …`)."""
    return set(text.split(f"{file}: ")[1].split(";")[0].split(", "))


def test_the_module_lists_every_stage_of_the_pinned_dockerfiles_and_each_fast_path_stage(
    upstream_dockerfile: str,
) -> None:
    # The truth, read independently of the registry the @stage decorators fill: the stage names BuildKit's own
    # parser finds in the pinned release's docker/Dockerfile and docker/Dockerfile.cpu, and the fast-path
    # stages this project adds (to the CUDA set).
    upstream = stage_names(upstream_dockerfile)
    assert {"base", "csrc-build", "test", "vllm-sagemaker", "vllm-openai-nonroot"} <= upstream
    truth = upstream | FAST_PATH_STAGES
    cpu = stage_names((vllm_source() / "docker" / "Dockerfile.cpu").read_text())
    assert {"base", "base-arch", "vllm-src", "vllm-test", "vllm-openai"} <= cpu
    cpu_truth = cpu | CPU_FAST_PATH_STAGES
    # What the module lists: the stages `build` and `plan` offer in their --target help (as `dagger call` and
    # the client read it), the ones a bad --target's refusal names, and the example's stage graph.
    functions = module_functions()
    for name in ("build", "plan"):
        (target,) = [o for o in options_of(functions[name]) if o.python_name == "target"]
        assert listed(target.doc, "docker/Dockerfile") == truth, name
        assert listed(target.doc, "docker/Dockerfile.cpu") == cpu_truth, name
    with pytest.raises(UsageError) as refused:
        check_target("--target", "no-such-stage")
    assert listed(str(refused.value), "docker/Dockerfile") == truth
    assert listed(str(refused.value), "docker/Dockerfile.cpu") == cpu_truth
    assert {s.name for s in stage_graph(example_build())} == truth
    cpu_declared = STAGE_SETS["cpu"].declared
    assert {name for name, decl in cpu_declared.items() if decl.upstream} == cpu
    assert {name for name, decl in cpu_declared.items() if not decl.upstream} == CPU_FAST_PATH_STAGES
    # Each stage has its function, and the fast-path stages are the ones declared with no FROM of the file.
    assert {name: inspect.iscoroutinefunction(decl.function) for name, decl in DECLARED.items()} == dict.fromkeys(
        truth, True
    )
    assert {name for name, decl in DECLARED.items() if not decl.upstream} == FAST_PATH_STAGES
    # The module's own stage functions each build a stage it lists: the `(stage `x`)` each one's doc names.
    named = {
        name: m[1]
        for name, method in functions.items()
        if (m := re.search(r"\(stage `([a-z-]+)`\)", method.__doc__ or ""))
    }
    assert named == {
        "base": "base",
        "csrc-build": "csrc-build",
        "kernel-symbol-map": "kernel-symbol-map",
        "wheel": "build",
        "runtime-base": "vllm-runtime-base",
        "test-deps": "test-deps",
        "vllm-base": "vllm-base",
        "test-image": "test",
        "openai": "vllm-openai",
    }
    assert set(named.values()) <= truth
