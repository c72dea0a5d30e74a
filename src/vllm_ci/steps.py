"""Small Container -> Container steps, applied with `.with_(...)` like the Dockerfile's RUN lines."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence

import dagger
import dockerfile
from dagger import dag

from vllm_ci.args import BuildArgs

Step = Callable[[dagger.Container], dagger.Container]

PIP_CACHE = "/root/.cache/pip"


def with_apt_packages(packages: Sequence[str]) -> Step:
    """apt-get install the packages in one exec, as one RUN would: the package lists are removed
    before the layer is made (three execs would leave ~50 MB of lists in a lower layer)."""

    def step(ctr: dagger.Container) -> dagger.Container:
        script = (f"apt-get update -qq && apt-get install -y -qq --no-install-recommends {shlex.join(packages)}"
                  " && rm -rf /var/lib/apt/lists /var/cache/apt/archives")
        return ctr.with_env_variable("DEBIAN_FRONTEND", "noninteractive").with_exec(["sh", "-c", script])

    return step


def with_pip_cache() -> Step:
    """Mount pip's download cache as a cache volume: fast reinstalls, nothing in the layer."""

    def step(ctr: dagger.Container) -> dagger.Container:
        return ctr.with_mounted_cache(PIP_CACHE, dag.cache_volume("vllm-ci-pip"))

    return step


def with_pip_install(args: BuildArgs, requirements: Sequence[str], *, system: bool = False) -> Step:
    """pip install -r each requirements file (paths inside the container), with the CUDA index
    upstream adds to every install (PYTORCH_CUDA_INDEX_BASE_URL/cuXY from CUDA_VERSION)."""

    def step(ctr: dagger.Container) -> dagger.Container:
        pip = ["python3", "-m", "pip", "install", "--disable-pip-version-check", *args.pip_index_flags(),
               "--extra-index-url", args.cuda_index_url()]
        if system:  # the runtime images install into the system Python, as vLLM's `uv pip install --system`
            ctr = ctr.with_env_variable("PIP_BREAK_SYSTEM_PACKAGES", "1")
        flags = [flag for path in requirements for flag in ("-r", path)]
        return ctr.with_(with_pip_cache()).with_exec([*pip, *flags])

    return step


def with_files(source: dagger.Directory, paths: Sequence[str], dest: str = ".") -> Step:
    """COPY the listed files or folders from the source, keeping their relative paths."""

    def step(ctr: dagger.Container) -> dagger.Container:
        for path in paths:
            target = f"{dest.rstrip('/')}/{path}"
            ctr = ctr.with_directory(target, source.directory(path)) if path.endswith("/") else ctr.with_file(
                target, source.file(path)
            )
        return ctr

    return step


def scratch_with(path: str, directory: dagger.Directory) -> dagger.Container:
    """An image holding only a directory, like `FROM scratch` + `COPY --from`: thin to store and move."""
    return dag.container().with_directory(path, directory)


def with_env(args: BuildArgs, instructions: Sequence[str]) -> Step:
    """ENV instructions applied as upstream writes them: values unquoted, build arguments expanded
    from the build's, any other variable from the image's environment (as BuildKit does)."""
    pairs = []
    for instruction in instructions:
        values = dockerfile.parse_string(instruction)[0].value
        pairs += [(name, unquote(args.expand(value))) for name, value in zip(values[::2], values[1::2])]

    def step(ctr: dagger.Container) -> dagger.Container:
        for name, value in pairs:
            ctr = ctr.with_env_variable(name, value, expand="$" in value)
        return ctr

    return step


def unquote(value: str) -> str:
    """A Dockerfile value without the quotes around it."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
