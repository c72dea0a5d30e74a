"""Drop the torch pins from the requirements files, so an installed torch (nightly, prerelease) is kept.

As vLLM's tools/use_existing_torch.py: `--prefix` also drops torchvision/torchaudio."""

import pathlib
import re
import sys

PATTERN = re.compile(r"^(torch|torchvision|torchaudio)\b" if "--prefix" in sys.argv else r"^torch\b")
for path in pathlib.Path("requirements").rglob("*.txt"):
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not PATTERN.match(line)]
    if kept != lines:
        path.write_text("".join(kept))
        print(f"dropped torch pins from {path}")
