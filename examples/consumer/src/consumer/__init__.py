"""An example module that installs vllm-ci as a dependency (see README.md)."""
