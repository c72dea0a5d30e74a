"""Copy what an installer wrote for one distribution, less its Python sources, their bytecode and its dist-info,
into a folder, each file at its absolute path under it: the compiled extension, the artifacts the wheel ships
and the console scripts, as uv installed them.

Runs in the image the wheel was installed in: python3 collect_installed.py DEST SITE_PACKAGES DIST_INFO."""

from __future__ import annotations

import csv
import os
import pathlib
import shutil
import sys


def collected(site: pathlib.Path, dist_info: str) -> list[pathlib.Path]:
    """The installed files RECORD names, less the sources, bytecode and metadata the fast path writes itself."""
    with (site / dist_info / "RECORD").open(newline="") as record:
        paths = [row[0] for row in csv.reader(record) if row]
    keep = []
    for path in paths:
        parts = pathlib.PurePosixPath(path).parts
        if path.endswith((".py", ".pyc")) or "__pycache__" in parts or parts[0] == dist_info:
            continue
        keep.append(pathlib.Path(os.path.normpath(site / path)))
    return keep


def main(dest: pathlib.Path, site: pathlib.Path, dist_info: str) -> None:
    """Copy each kept file to DEST + its absolute path, with its mode."""
    for path in collected(site, dist_info):
        target = dest / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target, follow_symlinks=False)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3])
