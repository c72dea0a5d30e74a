"""Print an installed dist-info folder's texts and a _version.py as JSON: "files" (the folder's, by
relative path, RECORD's as CSV rows under "rows"), "version_file" (null when there is none).

Runs in the build image: python3 dist_info_texts.py DIST_INFO_FOLDER VERSION_FILE."""

from __future__ import annotations

import csv
import io
import json
import pathlib
import sys


def main(folder: pathlib.Path, version_file: pathlib.Path) -> None:
    """Print the texts as one JSON object."""
    files = {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}
    rows = list(csv.reader(io.StringIO(files.pop("RECORD"))))
    version = version_file.read_text() if version_file.is_file() else None
    print(json.dumps({"files": files, "rows": rows, "version_file": version}))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
