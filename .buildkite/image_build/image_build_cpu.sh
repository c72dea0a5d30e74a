#!/usr/bin/env bash
# vLLM's CPU image-build step with vllm-ci: the positional interface of upstream's script of this name,
#   image_build_cpu.sh <registry> <repo> <commit>
# and everything else in src/vllm_ci/buildkite_group.py.
set -euo pipefail
exec "$(dirname "$0")/../../ci/buildkite-step" image-build-cpu "$@"
