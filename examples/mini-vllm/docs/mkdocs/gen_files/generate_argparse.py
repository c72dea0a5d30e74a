"""The docs' version loader, which vLLM's CPU test image adds (its tests read the hashed CUDA test lock)."""
