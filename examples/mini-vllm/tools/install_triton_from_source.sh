#!/usr/bin/env bash
# Install the Triton wheel extensions-build made from source (only with TRITON_INSTALL_FROM_SOURCE_REPO).
# The example has no Triton; the file is here because vllm-openai-base copies it in.
echo "this example does not install Triton from source" >&2
exit 1
