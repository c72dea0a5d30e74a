"""Builds on vllm-ci's `vllm-base` stage: adds a vLLM plugin package and runs its tests."""

import dataclasses
from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, dag, function, object_type


@object_type
class Consumer:
    """A vLLM plugin, tested in the vLLM image that vllm-ci builds."""

    vllm_ci_args: Annotated[
        list[str],
        Doc(
            "vllm-ci's constructor arguments as NAME=VALUE (its args file's lines without the leading --), "
            "e.g. build-arg=BUILD_BASE_IMAGE=REF; a fork passes its mirrors here"
        ),
    ] = dataclasses.field(default_factory=list)

    def _vllm_ci(self) -> dagger.VllmCi:
        """The vllm-ci module, with the build arguments this module was given (all strings)."""
        args: dict[str, str] = {}
        build_args: list[str] = []  # --build-arg, the one repeatable argument: NAME=VALUE each
        for name, _, value in (arg.partition("=") for arg in self.vllm_ci_args):
            if name == "build-arg":
                build_args.append(value)
            else:
                args[name.replace("-", "_")] = value
        return dag.vllm_ci(build_arg=build_args, **args)

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
