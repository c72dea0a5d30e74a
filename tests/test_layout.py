"""The source's layout: the stage cache stays generic, and every module stays small enough to read."""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
MAX_LINES = 400


def imported_modules(path: pathlib.Path) -> set[str]:
    """The modules a Python file imports, wherever in the file (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


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
