"""A vLLM general plugin: vLLM calls `register()` for each entry point in `vllm.general_plugins`."""

import vllm

REGISTERED: list[str] = []


def register() -> None:
    """Record that vLLM (here: the package installed in the image) loaded this plugin."""
    REGISTERED.append(f"hello from vllm {vllm.__version__}")
