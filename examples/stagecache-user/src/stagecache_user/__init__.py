"""Two stages of our own, cached in a registry by vllm-ci's stage cache, from plain Python."""
