"""DEV IMAGE: `FROM base AS dev`: the build base plus the development requirements (lint and tests),
for working on vLLM inside the image. Every instruction runs as upstream writes it; the one dnf
command, which upstream gives no ARG, is a portability argument whose default is upstream's text."""

from __future__ import annotations

import dagger

from stagecache import StageContext
from vllm_ci.args import BuildArgs
from vllm_ci.declare import reproduces, stage
from vllm_ci.instructions import as_written
from vllm_ci.stages.common import UV_BUILD_ENV

READS = (
    "requirements/common.txt",
    "requirements/lint.txt",
    "requirements/test/cuda.in",
    "requirements/test/cuda.txt",
    "requirements/dev.txt",
    "pyproject.toml",
    "tools/use_existing_torch.py",
)

INSTALL_NUMA = """\
RUN dnf install -y numactl-devel \\
    && dnf clean all \\
    && rm -rf /var/cache/dnf
"""
COPY_DEV_REQUIREMENTS = (
    "COPY requirements/common.txt requirements/common.txt",
    "COPY requirements/lint.txt requirements/lint.txt",
    "COPY requirements/test/cuda.in requirements/test/cuda.in",
    "COPY requirements/test/cuda.txt requirements/test/cuda.txt",
    "COPY requirements/dev.txt requirements/dev.txt",
    "COPY pyproject.toml pyproject.toml",
    "COPY tools/use_existing_torch.py tools/use_existing_torch.py",
    "COPY --from=base /workspace/torch_lib_versions.txt torch_lib_versions.txt",
)
INSTALL_DEV_REQUIREMENTS = """\
RUN --mount=type=cache,target=/opt/uv/cache \\
    if [ "${PYTORCH_NIGHTLY}" = "1" ]; then \\
        echo "Installing dev requirements plus torch nightly..." \\
        && python3 tools/use_existing_torch.py --prefix \\
        && cat torch_lib_versions.txt >> requirements/test/cuda.in \\
        && uv pip compile requirements/test/cuda.in -o requirements/test/cuda.txt --index-strategy unsafe-best-match \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.') \\
        && uv pip install --python /opt/venv/bin/python3 $(cat torch_lib_versions.txt | xargs) --pre \\
        -r requirements/dev.txt \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/nightly/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    else \\
        echo "Installing dev requirements..." \\
        && uv pip install --python /opt/venv/bin/python3 -r requirements/dev.txt \\
        --extra-index-url ${PYTORCH_CUDA_INDEX_BASE_URL}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \\
    fi
"""


@stage(
    "dev",
    from_="base",
    parents=("base",),
    reads=READS,
    args=(
        "PIP_INDEX_URL",
        "UV_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "PYTORCH_CUDA_INDEX_BASE_URL",
        "PYTORCH_NIGHTLY",
        "dev_packages_command",
    ),
)
async def dev(args: BuildArgs, ctx: StageContext) -> dagger.Container:
    """FROM base AS dev: the build base with lint and test requirements installed."""
    upstream = as_written("dev", args, ctx, portable=("dev_packages_command",))
    return (
        ctx.parents["base"]
        .with_(reproduces(UV_BUILD_ENV, upstream))
        .with_(reproduces(INSTALL_NUMA, upstream))
        .with_(reproduces(COPY_DEV_REQUIREMENTS, upstream))
        .with_(reproduces(INSTALL_DEV_REQUIREMENTS, upstream))
    )
