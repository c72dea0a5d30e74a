"""Build DeepGEMM's `_C` for one interpreter (vLLM's cmake/external_projects/deepgemm.cmake calls it).

This example has no DeepGEMM; the file is here because csrc-build copies it in as vLLM's does."""

import sys

if __name__ == "__main__":
    print(f"no DeepGEMM in this example ({sys.executable})")
