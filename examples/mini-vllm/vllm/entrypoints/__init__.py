"""Entry points (the `vllm` console script)."""
