#!/bin/bash
# Install NVIDIA's gdrcopy packages for OS ($1), CUDA ($2) and arch ($3) (vLLM's downloads them from
# NVIDIA). The example has no GPU: it records what would be installed, in /etc/gdrcopy-request.
set -euo pipefail
echo "gdrcopy for $1, CUDA $2, $3: not part of this example" | tee /etc/gdrcopy-request
