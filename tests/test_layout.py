"""The source's layout: the stage cache stays generic, and every module stays small enough to read."""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
MAX_LINES = 400
OURS = ("stagecache", "vllm_ci")
# What only tests and the bench import: test frameworks and mocks, pip's internals, and the helper modules
# of tests/ and bench/ (the pinned release's download, an image's files read back).
TEST_ONLY = (
    "pytest",
    "_pytest",
    "hypothesis",
    "unittest",
    "pip",
    "conftest",
    "local_registry",
    "flaky_proxy",
    "git_server",
    "cache_mount_holder",
    "vllm_release",
    "imagefs",
    "jsonschema",
    "matplotlib",
)


def imported_modules(path: pathlib.Path) -> set[str]:
    """The modules a Python file imports, wherever in the file (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def string_constants(path: pathlib.Path) -> list[str]:
    """The string constants of a Python file, as Python reads them (escapes undone); none of another file."""
    if path.suffix != ".py":
        return []
    tree = ast.parse(path.read_text(), str(path))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_the_stage_cache_imports_nothing_of_vllm_ci() -> None:
    files = sorted((SRC / "stagecache").glob("*.py"))
    assert files
    offending = {
        str(path.relative_to(SRC)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "vllm_ci")
        for path in files
    }
    assert {path: modules for path, modules in offending.items() if modules} == {}


def test_no_source_file_is_longer_than_400_lines() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    lengths = {str(path.relative_to(SRC)): len(path.read_text().splitlines()) for path in files}
    assert {path: lines for path, lines in lengths.items() if lines > MAX_LINES} == {}


def test_the_source_holds_none_of_upstreams_instruction_text() -> None:
    from conftest import vllm_source
    from vllm_ci.upstream_file import UpstreamFile, normalise

    file = UpstreamFile.parse((vllm_source() / "docker" / "Dockerfile").read_text(), "docker/Dockerfile")
    instructions = {i.text for i in file.global_args} | {i.text for s in file.stages for i in s.instructions}
    ours = {  # each file's text, and of Python files also their string constants as Python reads them
        str(path.relative_to(SRC)): normalise(path.read_text() + " ".join(string_constants(path)))
        for path in sorted(SRC.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".json", ".sh", ".txt")
    }
    long = [text for text in instructions if len(text) >= 40]
    assert len(long) > 100  # the check reads the real file
    assert {
        path: [t[:60] for t in long if t in text] for path, text in ours.items() if any(t in text for t in long)
    } == {}


def test_only_the_stage_modules_define_stages() -> None:
    defining = {
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "stage"
    }
    assert len(defining) >= 9  # the scan sees the stage modules
    assert {path for path in defining if not path.startswith(("vllm_ci/stages/", "vllm_ci/fastpath/"))} == set()


def test_this_projects_own_stages_are_in_the_fast_path_folder_and_upstreams_in_the_stage_modules() -> None:
    import vllm_ci.graph  # noqa: F401  (declares every stage set's stages)
    from vllm_ci.declare import STAGE_SETS

    everything = [decl for stage_set in STAGE_SETS.values() for decl in stage_set.declared.values()]
    DECLARED = {f"{decl.stage_set}:{decl.name}": decl for decl in everything}
    where = {name: decl.function.__module__.rsplit(".", 1)[0] for name, decl in DECLARED.items()}
    assert {name for name, decl in DECLARED.items() if not decl.upstream} >= {"cuda:extension", "cuda:runtime-python"}
    assert {
        name: folder for name, folder in where.items() if folder != "vllm_ci.stages" and DECLARED[name].upstream
    } == {}
    assert {
        name: folder for name, folder in where.items() if folder != "vllm_ci.fastpath" and not DECLARED[name].upstream
    } == {}


def test_stage_code_reads_the_builds_values_only_through_its_checked_view() -> None:
    # Build.value in a stage's view refuses what its @stage does not declare; `build.args.X` would bypass it.
    files = sorted([*(SRC / "vllm_ci" / "stages").glob("*.py"), *(SRC / "vllm_ci" / "fastpath").glob("*.py")])
    bypassing = {
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in files
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute) and node.attr in ("args", "passed", "global_values")
    }
    assert len(files) > 10
    assert bypassing == set()


def test_no_test_module_imports_another() -> None:
    # What tests share is in conftest.py (fixtures and helpers) or a helper module that is not a test module.
    tests = SRC.parent / "tests"
    files = sorted(tests.glob("test_*.py")) + [tests / "conftest.py"]
    assert len(files) > 20
    modules = {path.stem for path in tests.glob("test_*.py")}
    importing = {path.name: sorted(imported_modules(path) & modules) for path in files}
    assert {name: found for name, found in importing.items() if found} == {}


def package_modules() -> list[pathlib.Path]:
    """The Python files the package imports on the host: all of src/ but the fast path's programs, which a
    stage hands to its container as text (`program("x.py")`) and which run there, on the image's Python."""
    files = sorted(SRC.rglob("*.py"))
    programs = {
        node.args[0].value
        for path in files
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "program" and node.args
        if isinstance(node.args[0], ast.Constant)
    }
    assert programs  # the scan sees the programs
    return [path for path in files if path.name not in programs]


def third_party_imports() -> dict[str, set[str]]:
    """Each module of another package the package imports -> the files of src/ that import it."""
    found: dict[str, set[str]] = {}
    for path in package_modules():
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in OURS:
                found.setdefault(module, set()).add(str(path.relative_to(SRC)))
    return found


def test_the_package_imports_no_test_code_and_no_private_module_of_another_package() -> None:
    imports = {str(path.relative_to(SRC)): imported_modules(path) for path in sorted(SRC.rglob("*.py"))}
    assert {
        path: sorted(m for m in modules if m.split(".")[0] in TEST_ONLY)
        for path, modules in imports.items()
        if any(m.split(".")[0] in TEST_ONLY for m in modules)
    } == {}
    private = {m: f for m, f in third_party_imports().items() if any(part.startswith("_") for part in m.split("."))}
    assert private == {}


def test_every_package_the_source_imports_is_a_declared_dependency() -> None:
    pyproject = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    declared = {canonicalize_name(Requirement(r).name) for r in pyproject["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    imported = third_party_imports()
    assert {"httpx", "dagger", "dockerfile"} <= {m.split(".")[0] for m in imported}  # the scan reads the imports
    undeclared = {
        module: sorted(files)
        for module, files in imported.items()
        if not {canonicalize_name(d) for d in distributions.get(module.split(".")[0], [module])} & declared
    }
    assert undeclared == {}


# The suites named for what they prove across modules rather than for one module: the machine itself, the
# fault table, a PR's Dockerfile edit, a hostile checkout, the Python-only floor, real vLLM's setup.py, the
# cache used as a library and as a module from another repository, credentials, the bench, and this file.
CROSS_CUTTING = {
    "foundation",
    "faults",
    "follow_upstream",
    "hostile_checkout",
    "python_only_floor",
    "real_setup_py",
    "stagecache_user",
    "module_mode",
    "credentials",
    "bench",
    "layout",
}


def test_every_test_file_is_named_after_the_module_it_tests_or_is_a_named_cross_cutting_suite() -> None:
    tests = SRC.parent / "tests"
    modules = {p.stem for p in SRC.rglob("*.py") if p.stem != "__init__"} | {
        p.name for p in SRC.rglob("*") if p.is_dir() and (p / "__init__.py").exists()
    }
    modules |= {p.stem for p in (SRC.parent / "bench").glob("*.py")}
    stray = {
        path.name
        for path in tests.glob("test_*.py")
        if path.stem[5:] not in CROSS_CUTTING
        and not any(path.stem[5:] == m or path.stem[5:].startswith(f"{m}_") for m in modules)
    }
    assert stray == set()
