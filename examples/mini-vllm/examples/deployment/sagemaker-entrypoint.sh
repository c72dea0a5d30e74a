#!/bin/bash
# SageMaker starts the container with `serve`; run the OpenAI-compatible server on its port.
# (As vLLM's examples/deployment/sagemaker-entrypoint.sh, shortened for the example.)
exec vllm serve "${SM_VLLM_MODEL:-model}" --port 8080 "$@"
