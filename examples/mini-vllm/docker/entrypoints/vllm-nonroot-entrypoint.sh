#!/bin/bash
# Run the server as the image's non-root user; an arbitrary UID (OpenShift) gets a passwd entry first.
set -euo pipefail
if ! whoami &>/dev/null; then
    echo "vllm:x:$(id -u):0:vLLM user:/home/vllm:/bin/bash" >> /etc/passwd
fi
exec vllm serve "$@"
