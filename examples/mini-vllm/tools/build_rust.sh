#!/bin/bash
# Build the example's Rust artifacts and install them into the vllm package (as vLLM's
# tools/build_rust.sh; the toolchain is the image's own, so no rustup step).
# Usage: ./tools/build_rust.sh [--debug]
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [[ "${1:-}" == "--debug" ]]; then PROFILE_ARG="--debug"; else PROFILE_ARG="--release"; fi
python3 "$REPO_ROOT/tools/build_rust.py" "$PROFILE_ARG"
