"""What setup.py asks of the Rust frontend: the PyO3 extension modules it builds (none in this example).

vLLM's setup.py loads tools/build_rust.py by path, so csrc-build copies it in; this example keeps
the same contract."""


def rust_py_extension_module_names() -> list[str]:
    """The Rust extension modules the wheel ships; this example has none yet."""
    return []
