"""What vLLM's image-build group's jobs are, apart from any engine: upstream's build scripts' positional arguments
and environment read as a job (GroupJob), the tags it pushes and the registry parts that need only a client.
`vllm_ci.group_job` runs a job inside the engine from these, for the drop-in (`vllm_ci.group_pipeline`).

What it keeps of upstream's scripts: the image tags ($IMAGE_TAG, and $IMAGE_TAG_LATEST on main; the CPU image's
``$COMMIT-cpu`` or ``$COMMIT-torch-nightly-cpu``), the skip when the tag exists, the cache lanes (a PR writes its
own and reads its own, its base branch's and main's; main writes main's), the kernel symbol map as the artifact
``kernel_symbol_map.json.gz`` when VLLM_KERNEL_SYMBOL_MAP=1, and the ``docker-images`` annotation. The lanes are
``buildkite.StepSettings``'s cache repositories under ``$REGISTRY/$REPO`` (or VLLM_CI_REGISTRY): CPU and CUDA share
them, as stage keys carry the stage set (upstream suffixes its CPU cache tags ``x86_cpu`` to keep buildx's blobs
apart).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Final

from stagecache.registry import ImageRef, RegistryClient
from stagecache.report import human_bytes
from stagecache.traffic import layers_lacking
from vllm_ci.buildkite import (
    ARGS_FILE_VAR,
    SettingsError,
    StepSettings,
)

CUDA: Final = "image-build"
CPU: Final = "image-build-cpu"
USAGE: Final = {
    CUDA: "<registry> <repo> <commit> <branch> <image_tag> [<image_tag_latest>]",
    CPU: "<registry> <repo> <commit>",
}
# The constructor flags of each job's args file (the example's; vLLM's own checkout needs none).
ARGS_FILE_VARS: Final = {CUDA: ARGS_FILE_VAR, CPU: "VLLM_CI_CPU_ARGS_FILE"}
CPU_FLAGS: Final = ("--dockerfile=docker/Dockerfile.cpu", "--build-arg=VLLM_CPU_X86=true")  # as upstream's script
IMAGES_CONTEXT: Final = "docker-images"  # upstream's annotate-image-build.sh: one line per pushed tag, appended
SYMBOL_MAP: Final = "kernel_symbol_map.json.gz"  # the artifact's name, uploaded from its folder as upstream does


def _on(env: Mapping[str, str], name: str) -> bool:
    """Whether a 0/1 switch of upstream's scripts is on (they test for exactly ``1``)."""
    return env.get(name, "0") == "1"


@dataclasses.dataclass(frozen=True)
class GroupJob:
    """One step of the group: what it builds (settings, with the image to push) and the tags it pushes."""

    kind: str
    settings: StepSettings
    tags: tuple[str, ...]  # the image built, then the tags that name the same manifest
    symbol_map: bool

    @classmethod
    def parse(cls, argv: Sequence[str], env: Mapping[str, str]) -> GroupJob:
        """The job from the script's name and positional arguments and the agent environment."""
        kind, *args = argv or [""]
        if kind not in USAGE or len(args) < len(USAGE[kind].split(" [")[0].split()):
            raise SettingsError(f"usage: {kind or 'image-build|image-build-cpu'} {USAGE.get(kind, '...')}")
        registry, repo, commit = args[:3]
        flags: tuple[str, ...] = ()
        if kind == CUDA:
            if _on(env, "TORCH_NIGHTLY"):
                raise SettingsError("TORCH_NIGHTLY=1: the CUDA image on PyTorch nightly is out of scope")
            tags = tuple(t for t in args[4:6] if t)
            symbol_map = _on(env, "VLLM_KERNEL_SYMBOL_MAP")
            # The map names the commit it was built from (csrc-build's buildkite_commit): on its nightly only, as
            # the argument changes csrc-build's key.
            flags = (
                ("--build-arg=VLLM_KERNEL_SYMBOL_MAP=1", f"--build-arg=buildkite_commit={commit}") if symbol_map else ()
            )
        else:
            nightly = _on(env, "TORCH_NIGHTLY")
            tags = (f"{registry}/{repo}:{commit}-{'torch-nightly-cpu' if nightly else 'cpu'}",)
            symbol_map = False
            flags = (*CPU_FLAGS, *(("--build-arg=PYTORCH_NIGHTLY=1",) if nightly else ()))
        try:
            refs = [ImageRef.parse(t) for t in tags]
        except ValueError as err:
            raise SettingsError(str(err)) from None
        if any(r.registry != refs[0].registry for r in refs):
            raise SettingsError(f"{tags[1]} is on another registry than {tags[0]}: one push, then a tag, needs one")
        settings = StepSettings.from_env(
            {
                **env,
                "BUILDKITE_COMMIT": commit,
                "VLLM_CI_REGISTRY": env.get("VLLM_CI_REGISTRY") or f"{registry}/{repo}",
                ARGS_FILE_VAR: env.get(ARGS_FILE_VARS[kind], ""),
            }
        )
        # Ours first, so an args file can say otherwise (the last of a repeated flag wins).
        settings = dataclasses.replace(settings, image=tags[0], flags=(*flags, *settings.flags))
        return cls(kind, settings, tags, symbol_map)

    def images_annotation(self, env: Mapping[str, str]) -> str:
        """Upstream's annotation: one line per tag, under the step's label."""
        label = env.get("BUILDKITE_LABEL") or "Image build"
        return "".join(f"- **{label}**: `{tag}`\n" for tag in self.tags)


async def push_extra_tags(client: RegistryClient, job: GroupJob) -> None:
    """Point the extra tags at the pushed image's manifest (blobs mounted when the repository differs)."""
    source, *others = (ImageRef.parse(t) for t in job.tags)
    for target in others:
        await client.copy_manifest(source, target)


def latest_of(job: GroupJob) -> ImageRef | None:
    """The image a warm test agent holds before this build: the repository's ``latest`` (main's last image, which
    a PR's tests also ran on); None for the CPU image (no ``latest``)."""
    return ImageRef.parse(job.tags[0]).with_tag("latest") if job.kind == CUDA else None


async def held_by_agent(client: RegistryClient, job: GroupJob) -> ImageRef | None:
    """``latest_of`` pinned to its digest before this build moves it; None when there is none (yet)."""
    latest = latest_of(job)
    if latest is None:
        return None
    digest = await client.manifest_digest(latest.repository, latest.reference)
    return latest.with_digest(digest) if digest else None


async def agent_pull_line(client: RegistryClient, job: GroupJob, held: ImageRef | None) -> str:
    """One annotation line: what a test agent holding `held` pulls to run the image just pushed (the layers it
    lacks, sizes from the registry's manifests); empty when there is nothing to measure against."""
    if held is None:
        return ""
    lacking = await layers_lacking(client, held, ImageRef.parse(job.tags[0]))
    if lacking is None:
        return ""
    return (
        f"\nA test agent holding `{held.repository}:latest` (`{held.digest}`) pulls "
        f"**{human_bytes(sum(lacking.values()))}** ({len(lacking)} layers) to run this image.\n"
    )
