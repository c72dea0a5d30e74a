#!/usr/bin/env bash
# Build Triton from TRITON_INSTALL_FROM_SOURCE_REPO into TRITON_WORKSPACE/dist (only when that ARG is
# set). The example has no Triton; the file is here because extensions-build copies it in.
echo "this example does not build Triton from source" >&2
exit 1
