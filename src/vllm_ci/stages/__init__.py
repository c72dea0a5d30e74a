"""vLLM's docker/Dockerfile, one module per section, one async function per stage, chained as the
Dockerfile chains them; importing this package declares every stage, in the file's order.

Heavy layers come first and are keyed by what they read; everything that changes with the
Python sources is added last, by file operations onto imported images (no RUN after it), so a
Python-only change moves only thin layers (see graph.py for the keys)."""

from vllm_ci.stages import base, rust, csrc, extensions, wheel, dev, runtime, test, openai  # noqa: F401  # isort: skip  (declaration order)
from vllm_ci.stages import cpu  # noqa: F401  # the CPU stage set (docker/Dockerfile.cpu)
from vllm_ci.stages.common import AWS_CREDENTIALS  # noqa: F401

# And this project's own stages (the fast path's), which build on them.
from vllm_ci.fastpath import stages as own_stages  # noqa: F401, E402  # isort: skip
from vllm_ci.fastpath import cpu as own_cpu_stages  # noqa: F401, E402  # isort: skip
