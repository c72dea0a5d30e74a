"""The Dockerfile's ARGs that matter, typed, with vLLM's own defaults (docker/Dockerfile, 0.33.0)."""


import dataclasses
from typing import Annotated

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
    final_base_image: Annotated[str, Doc("FINAL_BASE_IMAGE; empty: nvidia/cuda:<cuda_version>-base-ubuntu<ubuntu_version>")] = ""
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
    use_sccache: Annotated[bool, Doc("USE_SCCACHE: compile through sccache with a remote backend instead of ccache")] = False
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
        return self.final_base_image or f"nvidia/cuda:{self.cuda_version}-base-ubuntu{self.ubuntu_version}"

    def site_packages(self) -> str:
        """Where the runtime image's system pip installs packages (Debian/Ubuntu layout)."""
        return f"/usr/local/lib/python{self.python_version}/dist-packages"

    def pip_index_flags(self) -> list[str]:
        """pip flags for the configured indexes."""
        flags = ["--index-url", self.pip_index_url] if self.pip_index_url else []
        return flags + (["--extra-index-url", self.pip_extra_index_url] if self.pip_extra_index_url else [])
