"""Prints, one per line, the files of the standard library that compiling bytecode as uv does reads: every module the
compile imports, in any of its processes (as `python -X importtime` reports them), every codec (a source file may
declare any encoding) and their bytecode. Run by the python3 that compiles, with the compile's program (its only
argument), which it runs as the compile does (-I -S) on a small tree of every kind of source file it meets."""

import importlib
import importlib.machinery
import os
import subprocess
import sys
import sysconfig
import tempfile

SOURCES = {
    "plain.py": b"VALUE = 1\n",
    "package/__init__.py": b"",
    "package/module.py": b"def function():\n    return [n for n in range(3)]\n",
    "declared.py": b"# -*- coding: latin-1 -*-\nNAME = '\xe9'\n",
    "broken.py": b"def broken(:\n",
    "undecodable.py": b"# -*- coding: no-such-codec -*-\n",
}


def imported_by_the_compile(program: str) -> set[str]:
    """The names of the modules the compile imports as it compiles a tree of SOURCES."""
    with tempfile.TemporaryDirectory() as tree:
        for name, text in SOURCES.items():
            os.makedirs(os.path.dirname(os.path.join(tree, name)), exist_ok=True)
            with open(os.path.join(tree, name), "wb") as handle:
                handle.write(text)
        run = [sys.executable, "-I", "-S", "-X", "importtime", "-c", program, tree]
        report = subprocess.run(run, check=True, capture_output=True, text=True).stderr
    names = (line.rpartition("|")[2].strip() for line in report.splitlines() if line.startswith("import time:"))
    return {name for name in names if name and " " not in name}


def file_of(name: str) -> str | None:
    """Where a module's file is, frozen into the interpreter or not; None for a built-in one, or one the compile
    tried and did not find (`from org.python.core import …` in pickle, say)."""
    parent = name.rpartition(".")[0]
    try:
        path = importlib.import_module(parent).__path__ if parent else None
    except ImportError:
        return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    return spec.origin if spec is not None and spec.has_location else None


stdlib = sysconfig.get_path("stdlib")
codecs = os.path.join(stdlib, "encodings")
read = {path for path in map(file_of, imported_by_the_compile(sys.argv[1])) if path}
read |= {os.path.join(codecs, name) for name in os.listdir(codecs) if name.endswith(".py")}
for path in sorted(p for p in read if p.startswith(stdlib + os.sep)):
    print(path)
    folder, name = os.path.split(path)
    cache = os.path.join(folder, "__pycache__")
    if name.endswith(".py") and os.path.isdir(cache):
        for compiled in sorted(c for c in os.listdir(cache) if c.startswith(name[:-3] + ".")):
            print(os.path.join(cache, compiled))
