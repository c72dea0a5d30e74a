"""The Dockerfile's ARGs that matter, typed, with vLLM's own defaults (docker/Dockerfile, 0.33.0)."""

import dataclasses
import re
import shlex
import typing
from typing import Annotated, Any, Final

from typing_extensions import Doc

from stagecache.keys import DEFAULT_LAYER_COMPRESSION
from vllm_ci.errors import UsageError


@dataclasses.dataclass(kw_only=True)
class BuildArgs:
    """Build arguments shared by every stage; the module object's constructor takes them."""

    cuda_version: Annotated[str, Doc("CUDA_VERSION: the CUDA toolkit version of the images")] = "13.0.3"
    python_version: Annotated[str, Doc("PYTHON_VERSION: the Python the runtime image installs")] = "3.12"
    ubuntu_version: Annotated[str, Doc("UBUNTU_VERSION of the final base image")] = "24.04"
    build_base_image: Annotated[
        str, Doc("BUILD_BASE_IMAGE: image with compilers, CUDA and Python for the build stages")
    ] = "pytorch/manylinux2_28-builder:cuda13.0-78e737ad29420ffc4800e677c51e2a852caf8359"
    final_base_image: Annotated[
        str, Doc("FINAL_BASE_IMAGE: the runtime images' base; ${NAME} expands as in the Dockerfile")
    ] = "nvidia/cuda:${CUDA_VERSION}-base-ubuntu${UBUNTU_VERSION}"
    torch_cuda_arch_list: Annotated[str, Doc("torch_cuda_arch_list: the CUDA architectures compiled for")] = (
        "7.5 8.0 8.6 8.9 9.0 10.0 11.0 12.0"
    )
    max_jobs: Annotated[int, Doc("max_jobs: parallel compile jobs (MAX_JOBS)")] = 2
    nvcc_threads: Annotated[int, Doc("nvcc_threads: threads per nvcc (NVCC_THREADS)")] = 8
    vllm_target_device: Annotated[str, Doc("vllm_target_device (VLLM_TARGET_DEVICE)")] = "cuda"
    pip_index_url: Annotated[str, Doc("PIP_INDEX_URL; empty: pip's own configuration")] = ""
    pip_extra_index_url: Annotated[str, Doc("PIP_EXTRA_INDEX_URL")] = ""
    pytorch_cuda_index_base_url: Annotated[
        str, Doc("PYTORCH_CUDA_INDEX_BASE_URL: where torch CUDA wheels come from")
    ] = "https://download.pytorch.org/whl"
    use_sccache: Annotated[
        str, Doc("USE_SCCACHE: 1 compiles through sccache with a remote backend instead of ccache")
    ] = ""
    sccache_download_url: Annotated[str, Doc("SCCACHE_DOWNLOAD_URL: the sccache release tarball")] = ""
    sccache_endpoint: Annotated[str, Doc("SCCACHE_ENDPOINT: S3-compatible endpoint; empty: AWS")] = ""
    sccache_bucket_name: Annotated[str, Doc("SCCACHE_BUCKET_NAME")] = "vllm-build-sccache"
    sccache_region_name: Annotated[str, Doc("SCCACHE_REGION_NAME")] = "us-west-2"
    sccache_s3_no_credentials: Annotated[int, Doc("SCCACHE_S3_NO_CREDENTIALS: 1 for anonymous reads")] = 0
    install_rubin_prerelease: Annotated[
        str, Doc("INSTALL_RUBIN_PRERELEASE: true installs requirements/rubin-prerelease.txt")
    ] = "false"
    triton_install_from_source_repo: Annotated[
        str, Doc("TRITON_INSTALL_FROM_SOURCE_REPO: build Triton from this repository")
    ] = ""
    triton_install_from_source_revision: Annotated[str, Doc("TRITON_INSTALL_FROM_SOURCE_REVISION")] = ""
    nccl_version: Annotated[str, Doc("NCCL_VERSION: the NCCL the runtime overrides torch's with")] = "2.31.2"
    deadsnakes_mirror_url: Annotated[
        str, Doc("DEADSNAKES_MIRROR_URL: a mirror of the deadsnakes PPA; empty: the PPA")
    ] = ""
    deadsnakes_gpgkey_url: Annotated[str, Doc("DEADSNAKES_GPGKEY_URL: the mirror's signing key")] = ""
    get_pip_url: Annotated[str, Doc("GET_PIP_URL: where get-pip.py comes from")] = (
        "https://bootstrap.pypa.io/get-pip.py"
    )
    uv_index_url: Annotated[str, Doc("UV_INDEX_URL; default: PIP_INDEX_URL")] = "${PIP_INDEX_URL}"
    uv_extra_index_url: Annotated[str, Doc("UV_EXTRA_INDEX_URL; default: PIP_EXTRA_INDEX_URL")] = (
        "${PIP_EXTRA_INDEX_URL}"
    )
    pip_keyring_provider: Annotated[str, Doc("PIP_KEYRING_PROVIDER")] = "disabled"
    uv_keyring_provider: Annotated[str, Doc("UV_KEYRING_PROVIDER; default: PIP_KEYRING_PROVIDER")] = (
        "${PIP_KEYRING_PROVIDER}"
    )
    install_kv_connectors: Annotated[str, Doc("INSTALL_KV_CONNECTORS: true adds the KV-connector libraries")] = "false"
    build_nixl: Annotated[str, Doc("BUILD_NIXL: true builds NIXL from source")] = "false"
    pytorch_nightly: Annotated[str, Doc("PYTORCH_NIGHTLY: 1 installs torch nightly")] = ""
    vllm_use_precompiled: Annotated[
        str, Doc("VLLM_USE_PRECOMPILED: reuse a published wheel's kernels in csrc-build")
    ] = ""
    vllm_merge_base_commit: Annotated[str, Doc("VLLM_MERGE_BASE_COMMIT: the commit whose published wheel to reuse")] = (
        ""
    )
    vllm_main_cuda_version: Annotated[str, Doc("VLLM_MAIN_CUDA_VERSION")] = ""
    vllm_kernel_symbol_map: Annotated[str, Doc("VLLM_KERNEL_SYMBOL_MAP: 1 writes the kernel symbol map (nightly)")] = ""
    buildkite_commit: Annotated[str, Doc("buildkite_commit: the commit the kernel symbol map names")] = ""
    deepep_commit_hash: Annotated[str, Doc("DEEPEP_COMMIT_HASH")] = "d4f41e4e93"
    nvshmem_ver: Annotated[str, Doc("NVSHMEM_VER")] = ""
    git_repo_check: Annotated[str, Doc("GIT_REPO_CHECK: non-0 runs tools/check_repo.sh")] = "0"
    vllm_max_size_mb: Annotated[str, Doc("VLLM_MAX_SIZE_MB: the wheel size limit")] = "500"
    run_wheel_check: Annotated[str, Doc("RUN_WHEEL_CHECK: true checks the CUDA 13 wheel's size")] = "true"
    gdrcopy_cuda_version: Annotated[str, Doc("GDRCOPY_CUDA_VERSION")] = "12.8"
    gdrcopy_os_version: Annotated[str, Doc("GDRCOPY_OS_VERSION")] = "Ubuntu24_04"
    timm_version: Annotated[str, Doc("TIMM_VERSION: the timm requirement of the runtime")] = ">=1.0.17"
    runai_model_streamer_version: Annotated[str, Doc("RUNAI_MODEL_STREAMER_VERSION")] = ">=0.15.7"
    gguf_version: Annotated[str, Doc("GGUF_VERSION")] = ">=0.19.0"
    vllm_build_commit: Annotated[str, Doc("VLLM_BUILD_COMMIT: recorded in the server image")] = ""
    vllm_build_pipeline: Annotated[str, Doc("VLLM_BUILD_PIPELINE: recorded in the server image")] = ""
    vllm_build_url: Annotated[str, Doc("VLLM_BUILD_URL: recorded in the server image")] = ""
    vllm_image_tag: Annotated[str, Doc("VLLM_IMAGE_TAG: recorded in the server image")] = ""
    # Portability: commands upstream hard-codes with no ARG. The default is upstream's exact text,
    # so a real build runs upstream's step; a fork or mirror replaces it (the example does).
    manylinux_packages_command: Annotated[
        str, Doc("base's system package install; default: upstream's dnf command")
    ] = (
        "dnf install -y --setopt=install_weak_deps=False ccache git curl sudo elfutils-devel rdma-core-devel"
        " && dnf clean all && rm -rf /var/cache/dnf"
    )
    rust_packages_command: Annotated[
        str, Doc("rust-build-cache's native tools install; default: upstream's dnf command")
    ] = "dnf install -y --setopt=install_weak_deps=False make perl-core && dnf clean all && rm -rf /var/cache/dnf"
    cuda_jit_packages_command: Annotated[
        str, Doc("vllm-runtime-base's CUDA JIT apt install; default: upstream's command")
    ] = (
        "CUDA_VERSION_DASH=$(echo $CUDA_VERSION | cut -d. -f1,2 | tr '.' '-') && apt-get update -y && apt-get install -y"
        " --no-install-recommends --allow-change-held-packages cuda-nvcc-${CUDA_VERSION_DASH} cuda-cudart-${CUDA_VERSION_DASH}"
        " cuda-nvrtc-${CUDA_VERSION_DASH} cuda-nvrtc-dev-${CUDA_VERSION_DASH} cuda-cuobjdump-${CUDA_VERSION_DASH}"
        " libcurand-dev-${CUDA_VERSION_DASH} libcublas-dev-${CUDA_VERSION_DASH} libnuma-dev numactl && rm -rf /var/lib/apt/lists/*"
    )
    dev_packages_command: Annotated[str, Doc("dev's system package install; default: upstream's dnf command")] = (
        "dnf install -y numactl-devel && dnf clean all && rm -rf /var/cache/dnf"
    )
    uv_installer_command: Annotated[
        str, Doc("How base installs uv into UV_INSTALL_DIR; default: upstream's installer")
    ] = "curl -LsSf https://astral.sh/uv/install.sh | sh"
    openai_extras: Annotated[
        str,
        Doc(
            "Extra packages of the OpenAI server image, space-separated, beyond what upstream's RUNs install "
            "(none by default: the image is upstream's)"
        ),
    ] = ""
    # What upstream's RUNs that bind .git derive from it (the upload leaves .git out): its version.
    git_version: Annotated[
        str,
        Doc(
            "The version setuptools-scm derives from the checkout's .git, as build's setup.py does; the client command "
            "derives it from --source (vllm_ci.version); empty: none, the package's own"
        ),
    ] = ""
    git_version_clean: Annotated[
        str,
        Doc(
            "The same with the tree taken as clean ({dirty=false}), as rust-build relinks with; derived with git_version"
        ),
    ] = ""
    # How the stage cache stores what it builds; in every key, so entries of two compressions never mix.
    cache_compression: Annotated[
        str,
        Doc(
            "Compression of the cache entries' and the image's layers: zstd (several times faster to make and to unpack) "
            "or gzip (for pullers older than Docker 23 or containerd 1.5)"
        ),
    ] = DEFAULT_LAYER_COMPRESSION

    def __post_init__(self) -> None:
        """Refuse, before any container work, ARG values too long for a RUN to start, and a repository
        check that could only fail (the upload leaves .git out: build's check_repo.sh sees an empty one)."""
        if self.git_repo_check not in ("", "0"):
            raise UsageError(
                f"{flag_of('git_repo_check')}: tools/check_repo.sh asks git whether the checkout is clean and "
                f"tagged, and the build never uploads .git (the version comes from the host); only 0 is supported"
            )
        for field in dataclasses.fields(self):
            size = len(shlex.quote(str(getattr(self, field.name))).encode())
            if size > ARG_VALUE_LIMIT:
                raise UsageError(
                    f"{flag_of(field.name)}: {field.name.upper()} is {size} bytes; an ARG value "
                    f"may hold at most {ARG_VALUE_LIMIT} (a RUN's one `sh -c` argument holds the ARGs and "
                    f"the script, and Linux takes at most {MAX_ARG_STRLEN} bytes in one argument)"
                )

    def final_base(self) -> str:
        """FINAL_BASE_IMAGE as the Dockerfile computes it."""
        return self.expand(self.final_base_image)

    def passed(self, name: str) -> bool:
        """Whether the build passes this argument (its value differs from the typed default)."""
        return getattr(self, name) != _DEFAULTS[name]

    def value_of(self, name: str) -> str:
        """An argument's value as a RUN would see it: a passed one exactly as given, never expanded
        again (BuildKit's --build-arg); a default that names other ARGs (FINAL_BASE_IMAGE names
        CUDA_VERSION) expanded."""
        return str(getattr(self, name)) if self.passed(name) else self.expand(str(_DEFAULTS[name]))

    def expand(self, text: str) -> str:
        """$NAME, ${NAME}, ${NAME:-word} and ${NAME:+word} of a build argument replaced as BuildKit
        expands ARGs (innermost first, so a modifier's word may name another ARG), each value once: a
        value is never read for variables again; any other variable is left for the image's environment."""
        values: list[str] = []  # what was substituted, held out of the text until the end

        def held(value: str) -> str:
            values.append(value)
            return f"\0{len(values) - 1}\0"

        def value(match: re.Match[str]) -> str:
            name = (match.group(1) or match.group(4)).lower()
            if name not in _DEFAULTS:
                return match.group(0).replace("$", "\1")  # left as written, and not matched again
            own, modifier, word = self.value_of(name), match.group(2), match.group(3)
            if modifier == "+":
                return word if own else ""
            if modifier == "-":
                return held(own) if own else word
            return held(own)

        while True:
            expanded = re.sub(r"\$\{(\w+)(?::([-+])([^{}$]*))?\}|\$(\w+)", value, text)
            if expanded == text:
                break
            text = expanded
        text = re.sub(r"\0(\d+)\0", lambda m: values[int(m.group(1))], text)
        return text.replace("\1", "$")

    def site_packages(self) -> str:
        """Where the runtime image's system pip installs packages (Debian/Ubuntu layout)."""
        return f"/usr/local/lib/python{self.python_version}/dist-packages"

    def pip_index_flags(self) -> list[str]:
        """pip flags for the configured indexes."""
        flags = ["--index-url", self.pip_index_url] if self.pip_index_url else []
        return flags + (["--extra-index-url", self.pip_extra_index_url] if self.pip_extra_index_url else [])


# Linux's limit on one argument or environment string (MAX_ARG_STRLEN, 32 pages of 4 KiB); beyond it
# exec fails with "argument list too long". A RUN is one `sh -c` argument holding every ARG the stage
# exports (quoted) plus the script (instructions.AsWritten._run), so one value may fill at most half of it:
# the other half is headroom for the script and the stage's other ARGs (the defaults hold about 3 kB).
MAX_ARG_STRLEN: Final = 131072
ARG_VALUE_LIMIT: Final = MAX_ARG_STRLEN // 2

_DEFAULTS: Final = {field.name: field.default for field in dataclasses.fields(BuildArgs)}

# ARGs BuildKit fills in itself from the build's platform: no default to compare, nothing to key.
AUTOMATIC_ARGS: Final = frozenset(
    {
        "TARGETPLATFORM",
        "TARGETARCH",
        "TARGETOS",
        "TARGETVARIANT",
        "BUILDPLATFORM",
        "BUILDARCH",
        "BUILDOS",
        "BUILDVARIANT",
    }
)

# The ARGs the file gives a default in its global scope (even an empty one: `ARG X=`). A stage that
# declares any other ARG without a default of its own leaves it unset unless the build passes it,
# whatever the typed argument's default (that is some other stage's default).
GLOBAL_DEFAULTS: Final = frozenset(
    {
        "CUDA_VERSION",
        "PYTHON_VERSION",
        "UBUNTU_VERSION",
        "INSTALL_RUBIN_PRERELEASE",
        "TRITON_INSTALL_FROM_SOURCE_REPO",
        "TRITON_INSTALL_FROM_SOURCE_REVISION",
        "NCCL_VERSION",
        "BUILD_BASE_IMAGE",
        "FINAL_BASE_IMAGE",
        "GET_PIP_URL",
        "UV_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "PYTORCH_CUDA_INDEX_BASE_URL",
        "PIP_KEYRING_PROVIDER",
        "UV_KEYRING_PROVIDER",
        "INSTALL_KV_CONNECTORS",
        "BUILD_NIXL",
    }
)

# This project's arguments for commands upstream hard-codes with no ARG: each one's default is
# upstream's exact text, replaced where a build passes another (instructions.as_written).
PORTABLE_COMMANDS: Final = (
    "manylinux_packages_command",
    "uv_installer_command",
    "rust_packages_command",
    "cuda_jit_packages_command",
    "dev_packages_command",
)
# Typed arguments of this project that no ARG of vLLM's Dockerfile has.
PROJECT_ARGS: Final = frozenset(
    {"openai_extras", *PORTABLE_COMMANDS, "git_version", "git_version_clean", "cache_compression"}
)


def kebab(name: str) -> str:
    """A Python name as a command-line name, as `dagger call` spells it."""
    return name.rstrip("_").replace("_", "-")


def flag_of(name: str) -> str:
    """A Python argument name as its command-line flag."""
    return "--" + kebab(name)


def read_args_file(text: str) -> dict[str, str]:
    """A constructor-flags file (one `--name=value` per line, as examples/mini-vllm/vllm-ci.args; a
    value may hold spaces) as argument name -> value, names spelled as Python arguments."""
    flags = {}
    for line in filter(None, (line.strip() for line in text.splitlines())):
        flag, _, value = line.partition("=")
        flags[flag.removeprefix("--").replace("-", "_")] = value
    return flags


def build_args_of(text: str) -> dict[str, Any]:
    """A constructor-flags file's values as BuildArgs keyword arguments, each of its field's type (an int
    field's value an int), as the command line would parse them; ValueError naming a flag it has no field for."""
    kinds = typing.get_type_hints(BuildArgs)
    values: dict[str, Any] = {}
    for name, value in read_args_file(text).items():
        if name not in kinds:
            raise ValueError(f"{flag_of(name)}: no such constructor argument")
        values[name] = kinds[name](value) if kinds[name] in (int, float) else value
    return values


def arg_defaults() -> dict[str, str]:
    """Each typed argument's default as the Dockerfile's ARG text, by argument name."""
    return {name: str(default) for name, default in _DEFAULTS.items()}
