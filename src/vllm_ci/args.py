"""The Dockerfile's ARGs that matter, typed, with vLLM's own defaults (docker/Dockerfile, 0.33.0)."""


import dataclasses
import re
from typing import Annotated, Final

from typing_extensions import Doc


@dataclasses.dataclass(kw_only=True)
class BuildArgs:
    """Build arguments shared by every stage; the module object's constructor takes them."""

    cuda_version: Annotated[str, Doc("CUDA_VERSION: the CUDA toolkit version of the images")] = "13.0.3"
    python_version: Annotated[str, Doc("PYTHON_VERSION: the Python the runtime image installs")] = "3.12"
    ubuntu_version: Annotated[str, Doc("UBUNTU_VERSION of the final base image")] = "24.04"
    build_base_image: Annotated[str, Doc("BUILD_BASE_IMAGE: image with compilers, CUDA and Python for the build stages")] = (
        "pytorch/manylinux2_28-builder:cuda13.0-78e737ad29420ffc4800e677c51e2a852caf8359"
    )
    final_base_image: Annotated[str, Doc("FINAL_BASE_IMAGE: the runtime images' base; ${NAME} expands as in the Dockerfile")] = (
        "nvidia/cuda:${CUDA_VERSION}-base-ubuntu${UBUNTU_VERSION}"
    )
    torch_cuda_arch_list: Annotated[str, Doc("torch_cuda_arch_list: the CUDA architectures compiled for")] = (
        "7.5 8.0 8.6 8.9 9.0 10.0 11.0 12.0"
    )
    max_jobs: Annotated[int, Doc("max_jobs: parallel compile jobs (MAX_JOBS)")] = 2
    nvcc_threads: Annotated[int, Doc("nvcc_threads: threads per nvcc (NVCC_THREADS)")] = 8
    vllm_target_device: Annotated[str, Doc("vllm_target_device (VLLM_TARGET_DEVICE)")] = "cuda"
    pip_index_url: Annotated[str, Doc("PIP_INDEX_URL; empty: pip's own configuration")] = ""
    pip_extra_index_url: Annotated[str, Doc("PIP_EXTRA_INDEX_URL")] = ""
    pytorch_cuda_index_base_url: Annotated[str, Doc("PYTORCH_CUDA_INDEX_BASE_URL: where torch CUDA wheels come from")] = (
        "https://download.pytorch.org/whl"
    )
    use_sccache: Annotated[str, Doc("USE_SCCACHE: 1 compiles through sccache with a remote backend instead of ccache")] = ""
    sccache_download_url: Annotated[str, Doc("SCCACHE_DOWNLOAD_URL: the sccache release tarball")] = ""
    sccache_endpoint: Annotated[str, Doc("SCCACHE_ENDPOINT: S3-compatible endpoint; empty: AWS")] = ""
    sccache_bucket_name: Annotated[str, Doc("SCCACHE_BUCKET_NAME")] = "vllm-build-sccache"
    sccache_region_name: Annotated[str, Doc("SCCACHE_REGION_NAME")] = "us-west-2"
    sccache_s3_no_credentials: Annotated[int, Doc("SCCACHE_S3_NO_CREDENTIALS: 1 for anonymous reads")] = 0
    openai_extras: Annotated[str, Doc("Extra packages of the OpenAI server image, space-separated")] = (
        "accelerate hf_transfer modelscope"
    )

    def final_base(self) -> str:
        """FINAL_BASE_IMAGE as the Dockerfile computes it."""
        return self.expand(self.final_base_image)

    def expand(self, text: str) -> str:
        """$NAME and ${NAME} of a build argument replaced by its value, as BuildKit expands ARGs;
        any other variable is left for the image's environment."""

        def value(match: re.Match[str]) -> str:
            name = (match.group(1) or match.group(2)).lower()
            return str(getattr(self, name)) if name in _FIELDS else match.group(0)

        for _ in range(len(_FIELDS)):  # a default may name another ARG (FINAL_BASE_IMAGE names CUDA_VERSION)
            expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)
            if expanded == text:
                break
            text = expanded
        return text

    def site_packages(self) -> str:
        """Where the runtime image's system pip installs packages (Debian/Ubuntu layout)."""
        return f"/usr/local/lib/python{self.python_version}/dist-packages"

    def pip_index_flags(self) -> list[str]:
        """pip flags for the configured indexes."""
        flags = ["--index-url", self.pip_index_url] if self.pip_index_url else []
        return flags + (["--extra-index-url", self.pip_extra_index_url] if self.pip_extra_index_url else [])


_FIELDS: Final = frozenset(field.name for field in dataclasses.fields(BuildArgs))

# ARGs BuildKit fills in itself from the build's platform: no default to compare, nothing to key.
AUTOMATIC_ARGS: Final = frozenset({"TARGETPLATFORM", "TARGETARCH", "TARGETOS", "TARGETVARIANT",
                                   "BUILDPLATFORM", "BUILDARCH", "BUILDOS", "BUILDVARIANT"})

# Typed arguments of this project that no ARG of vLLM's Dockerfile has.
PROJECT_ARGS: Final = frozenset({"openai_extras"})


def arg_defaults() -> dict[str, str]:
    """Each typed argument's default as the Dockerfile's ARG text, by argument name."""
    return {field.name: str(field.default) for field in dataclasses.fields(BuildArgs)}
