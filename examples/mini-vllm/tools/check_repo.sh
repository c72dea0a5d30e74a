#!/bin/bash
# Check the checkout is clean before a release build (only with GIT_REPO_CHECK != 0).
set -euo pipefail
if [ -n "$(git status --porcelain)" ]; then echo "the checkout has changes" >&2; exit 1; fi
