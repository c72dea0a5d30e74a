"""Install wheels into a folder laid out as the runtime image's system Python expects (its
site-packages, /usr/local/bin), writing what upstream's `uv pip install --system <wheel>` writes there,
so the runtime image gets vLLM's extension and the EP kernels by a file copy, with no RUN on it:
uv's INSTALLER, REQUESTED, direct_url.json naming the wheel where upstream's RUN binds it,
uv_cache.json with the wheel's mtime, RECORD rows in uv's (sorted) order, uv's console-script launcher
for the interpreter --system finds (python3 on PATH), and bytecode where asked (UV_COMPILE_BYTECODE=1).
The `installer` library has no command line for a custom scheme, hence this program.

Runs in the build image: python3 install_into_runtime_layout.py DESTDIR SITE_PACKAGES, then triples:
a folder of wheels, where upstream's RUN binds it, whether to compile bytecode (1 or 0)."""

from __future__ import annotations

import glob
import io
import json
import os
import sys
from typing import Any

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from installer.utils import Scheme

UV_LAUNCHER = """#!/usr/bin/python3
# -*- coding: utf-8 -*-
import sys
from {module} import {name}
if __name__ == "__main__":
    if sys.argv[0].endswith("-script.pyw"):
        sys.argv[0] = sys.argv[0][:-11]
    elif sys.argv[0].endswith(".exe"):
        sys.argv[0] = sys.argv[0][:-4]
    sys.exit({attr}())
"""


class AsUvWrites(SchemeDictionaryDestination):
    """An installer destination that writes console scripts and RECORD as uv does."""

    def write_script(self, name: str, module: str, attr: str, section: Any) -> Any:
        """A console script as uv's launcher for /usr/bin/python3."""
        text = UV_LAUNCHER.format(module=module, name=attr.split(".")[0], attr=attr).encode()
        return self.write_to_fs(Scheme("scripts"), name, io.BytesIO(text), is_executable=True)

    def finalize_installation(self, scheme: Any, record_file_path: str, records: Any) -> None:
        """RECORD with its rows in uv's order: sorted by the path as written."""

        def written(item: Any) -> str:
            file_scheme, entry = item
            if file_scheme == scheme:
                return str(entry.path)
            return os.path.relpath(self.scheme_dict[file_scheme], self.scheme_dict[scheme]) + "/" + entry.path

        super().finalize_installation(scheme, record_file_path, sorted(records, key=written))


def compact(value: object) -> bytes:
    """JSON as uv writes it: no spaces."""
    return json.dumps(value, separators=(",", ":")).encode()


def main(destdir: str, site: str, groups: list[str]) -> None:
    """Install each group's wheels under destdir."""
    scheme = {
        "purelib": site,
        "platlib": site,
        "headers": "/usr/local/include",
        "scripts": "/usr/local/bin",
        "data": "/usr/local",
    }
    for folder, seen_at, compile_bytecode in zip(groups[::3], groups[1::3], groups[2::3]):
        for wheel in sorted(glob.glob(os.path.join(folder, "*.whl"))):
            mtime = os.stat(wheel).st_mtime_ns
            metadata = {
                "INSTALLER": b"uv",
                "REQUESTED": b"",
                "direct_url.json": compact(
                    {"url": "file://" + os.path.join(seen_at, os.path.basename(wheel)), "archive_info": {}}
                ),
                "uv_cache.json": compact(
                    {
                        "timestamp": {"secs_since_epoch": mtime // 10**9, "nanos_since_epoch": mtime % 10**9},
                        "commit": None,
                        "tags": None,
                        "env": {},
                        "directories": {},
                    }
                ),
            }
            destination = AsUvWrites(
                scheme,
                interpreter="/usr/bin/python3",
                script_kind="posix",
                destdir=destdir,
                bytecode_optimization_levels=(0,) if compile_bytecode == "1" else (),
            )
            with WheelFile.open(wheel) as source:
                install(source, destination, additional_metadata=metadata)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
