#!/usr/bin/env bash
# Print the ":"-separated interpreters DeepGEMM's `_C` is built for (DEEPGEMM_PYTHON_INTERPRETERS).
# vLLM provisions one per supported Python; this example has one: the build's own.
set -euo pipefail
mkdir -p "${DEEPGEMM_VENV_PREFIX:-/tmp/dgenv}"
command -v python3
