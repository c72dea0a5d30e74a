"""The V1 engine package: upstream's test stage copies vllm/v1 over the installed one, so the example has one."""
