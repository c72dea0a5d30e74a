"""Fail when a wheel in the folder is larger than VLLM_MAX_SIZE_MB (as vLLM's .buildkite/check-wheel-size.py)."""

import os
import pathlib
import sys

limit_mb = int(os.environ.get("VLLM_MAX_SIZE_MB", "500"))
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    size_mb = wheel.stat().st_size / (1 << 20)
    print(f"{wheel.name}: {size_mb:.2f} MB (limit {limit_mb} MB)")
    if size_mb > limit_mb:
        sys.exit(f"{wheel.name} is larger than {limit_mb} MB")
