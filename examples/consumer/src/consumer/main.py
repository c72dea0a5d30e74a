"""Builds on vllm-ci's `vllm-base` stage: adds a vLLM plugin package and runs its tests."""

from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, dag, function, object_type


@object_type
class Consumer:
    """A vLLM plugin, tested in the vLLM image that vllm-ci builds."""

    python_version: Annotated[str, Doc("vllm-ci's PYTHON_VERSION")] = "3.12"
    build_base_image: Annotated[str, Doc("vllm-ci's BUILD_BASE_IMAGE; empty: its default")] = ""
    final_base_image: Annotated[str, Doc("vllm-ci's FINAL_BASE_IMAGE; empty: its default")] = ""
    torch_cuda_arch_list: Annotated[str, Doc("vllm-ci's torch_cuda_arch_list; empty: none")] = ""

    def _vllm_ci(self) -> dagger.VllmCi:
        """The vllm-ci module, with the build arguments this module was given."""
        args: dict[str, str] = {"python_version": self.python_version,
                                "torch_cuda_arch_list": self.torch_cuda_arch_list}
        if self.build_base_image:
            args["build_base_image"] = self.build_base_image
        if self.final_base_image:
            args["final_base_image"] = self.final_base_image
        return dag.vllm_ci(**args)

    @function
    def image(
        self,
        vllm: Annotated[dagger.Directory, Doc("The vLLM checkout"), DefaultPath("/examples/mini-vllm")],
        plugin: Annotated[dagger.Directory, Doc("The plugin package"), DefaultPath("plugin")],
    ) -> dagger.Container:
        """vllm-ci's vllm-base image with the plugin installed."""
        return (
            self._vllm_ci()
            .vllm_base(source=vllm)
            .with_directory("/plugin", plugin)
            .with_env_variable("PIP_BREAK_SYSTEM_PACKAGES", "1")
            .with_exec(["python3", "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "/plugin"])
        )

    @function
    async def test(
        self,
        vllm: Annotated[dagger.Directory, Doc("The vLLM checkout"), DefaultPath("/examples/mini-vllm")],
        plugin: Annotated[dagger.Directory, Doc("The plugin package"), DefaultPath("plugin")],
    ) -> str:
        """Run the plugin's tests in the image; returns their output."""
        return await (
            self.image(vllm, plugin)
            .with_workdir("/plugin")
            .with_exec(["sh", "-c", "python3 -m unittest discover -v -s tests 2>&1"])
            .stdout()
        )
