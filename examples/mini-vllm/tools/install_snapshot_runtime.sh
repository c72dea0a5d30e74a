#!/bin/bash
# Install the runtime for initialized snapshots (CRIU and its CUDA plugin) into /usr/local (vLLM's
# builds CRIU from source). The example has no GPU to snapshot: it only makes the plugin folder.
set -euo pipefail
mkdir -p /usr/local/lib/criu
echo "snapshot runtime: not part of this example (MAX_JOBS=${MAX_JOBS:-})"
