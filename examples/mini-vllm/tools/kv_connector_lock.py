"""Keep the CUDA 13 test image's KV-connector lock honest, as vLLM's tool of the same name does.

plan LOCK OUT: write the lock entries that are not installed at their version to OUT.
verify LOCK: check that every lock entry is installed at its locked version.
"""

import importlib.metadata as metadata
import sys
from pathlib import Path


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """Each locked name -> (version, its entry text with hashes)."""
    entries: dict[str, tuple[str, str]] = {}
    name = ""
    for line in path.read_text().splitlines(keepends=True):
        if line[:1].isalnum() and "==" in line:
            name, rest = line.split("==", 1)
            entries[name] = (rest.split()[0].rstrip("\\"), line)
        elif name and line.lstrip().startswith("--hash"):
            version, text = entries[name]
            entries[name] = (version, text + line)
    return entries


def installed(name: str) -> str:
    """The installed version of a distribution, or empty."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def main(argv: list[str]) -> int:
    """Run one subcommand."""
    command, lock = argv[0], read_lock(Path(argv[1]))
    missing = {name: entry for name, entry in lock.items() if installed(name) != entry[0]}
    if command == "plan":
        Path(argv[2]).write_text("".join(text for _, text in missing.values()))
        return 0
    for name, (version, _) in missing.items():
        print(f"{name}: locked {version}, installed {installed(name) or 'nothing'}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
