"""vLLM's image-build group with our build: the steps of upstream's .buildkite/image_build/image_build.yaml call
``.buildkite/image_build/image_build.sh`` and ``image_build_cpu.sh`` with the same positional arguments as
upstream's scripts, and those thin scripts run this module.

What it keeps of upstream's scripts: the image tags ($IMAGE_TAG, and $IMAGE_TAG_LATEST on main; the CPU image's
``$COMMIT-cpu`` or ``$COMMIT-torch-nightly-cpu``), the skip when the tag exists, the cache lanes (a PR writes its
own and reads its own, its base branch's and main's; main writes main's), the kernel symbol map as the artifact
``kernel_symbol_map.json.gz`` when VLLM_KERNEL_SYMBOL_MAP=1, and the ``docker-images`` annotation. The lanes are
``buildkite.StepSettings``'s cache repositories under ``$REGISTRY/$REPO`` (or VLLM_CI_REGISTRY): CPU and CUDA share
them, as stage keys carry the stage set (upstream suffixes its CPU cache tags ``x86_cpu`` to keep buildx's blobs
apart). Registry credentials: the agent's docker login, as the registry client and the engine read it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import anyio

from stagecache.registry import ImageRef, RegistryClient, RegistryError
from stagecache.report import human_bytes
from stagecache.traffic import layers_lacking
from vllm_ci.buildkite import (
    ANNOTATION_CONTEXT,
    ARGS_FILE_VAR,
    SettingsError,
    StepSettings,
    render_annotation,
    report_style,
)
from vllm_ci.buildkite_step import (
    Cancel,
    StepFailed,
    agent,
    annotate,
    image_digest,
    log,
    redactor,
    registry_client,
    run_cli,
    upload_artifacts,
)
from vllm_ci.entry import Interrupted

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

    @property
    def out(self) -> Path:
        """This job's output folder (report, annotation, symbol map), apart from the other job's."""
        return Path(self.settings.out_dir) / self.kind

    def images_annotation(self, env: Mapping[str, str]) -> str:
        """Upstream's annotation: one line per tag, under the step's label."""
        label = env.get("BUILDKITE_LABEL") or "Image build"
        return "".join(f"- **{label}**: `{tag}`\n" for tag in self.tags)


async def push_extra_tags(client: RegistryClient, job: GroupJob) -> None:
    """Point the extra tags at the pushed image's manifest (blobs mounted when the repository differs)."""
    source, *others = (ImageRef.parse(t) for t in job.tags)
    found = await client.raw_manifest(source.repository, source.reference)
    if found is None:
        raise RegistryError(f"{source} is not on the registry after its push")
    content, media_type = found
    manifest = json.loads(content)
    for target in others:
        if not target.same_repository(source):
            for blob in [*manifest.get("layers", []), manifest["config"]]:
                if await client.blob_size(target.repository, blob["digest"]) is None:
                    await client.mount_blob(target.repository, blob["digest"], source.repository)
        await client.put_manifest(target.repository, target.reference, content, media_type)


async def _tag(job: GroupJob, env: Mapping[str, str]) -> None:
    """push_extra_tags with the step's registry client."""
    async with registry_client(ImageRef.parse(job.tags[0]).registry, job.settings, env) as client:
        await push_extra_tags(client, job)


def tag_also(job: GroupJob, env: Mapping[str, str]) -> None:
    """Push the extra tags ($IMAGE_TAG_LATEST), or fail the step in the publish phase."""
    if len(job.tags) < 2:
        return
    try:
        anyio.run(_tag, job, env)
    except RegistryError as err:
        raise StepFailed("publish", str(err)) from None
    log(f"tagged {', '.join(job.tags[1:])}")


def export_symbol_map(job: GroupJob, env: Mapping[str, str]) -> None:
    """Write the kernel symbol map from the cache this build filled and upload it; never fails the step."""
    if not job.symbol_map:
        return
    log("--- :world_map: Exporting kernel symbol map")
    path = job.out / SYMBOL_MAP
    path.unlink(missing_ok=True)
    try:
        run_cli(
            "kernel-symbol-map", job.settings.export_args("kernel-symbol-map", str(path)), env, job.out / "error.json"
        )
    except StepFailed as failed:
        log(f"kernel symbol map export failed; continuing without it ({failed})")
        return
    agent(["artifact", "upload", SYMBOL_MAP], env, cwd=job.out)


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


def held_image(job: GroupJob, env: Mapping[str, str]) -> ImageRef | None:
    """held_by_agent with the step's registry client; None when the registry does not answer (no measure)."""
    if job.kind != CUDA:
        return None

    async def look_up() -> ImageRef | None:
        async with registry_client(ImageRef.parse(job.tags[0]).registry, job.settings, env) as client:
            return await held_by_agent(client, job)

    try:
        return anyio.run(look_up)
    except RegistryError as err:
        log(f"{latest_of(job)}: not measuring what a test agent pulls ({err})")
        return None


def agent_pull(job: GroupJob, held: ImageRef | None, env: Mapping[str, str]) -> str:
    """agent_pull_line with the step's registry client; empty when the registry does not answer."""
    if held is None:
        return ""

    async def measure() -> str:
        async with registry_client(held.registry, job.settings, env) as client:
            return await agent_pull_line(client, job, held)

    try:
        return anyio.run(measure)
    except RegistryError as err:
        log(f"{job.tags[0]}: not measuring what a test agent pulls ({err})")
        return ""


def annotate_images(job: GroupJob, env: Mapping[str, str]) -> None:
    """Append the pushed tags to upstream's ``docker-images`` annotation (skipped with a line without an agent)."""
    agent(["annotate", "--append", "--style", "info", "--context", IMAGES_CONTEXT], env, job.images_annotation(env))


def run(argv: Sequence[str], env: dict[str, str]) -> int:
    """The whole step; returns the exit code (1 on failure, as upstream's scripts; 128+N when cancelled)."""
    log("--- :mag: Arguments")
    try:
        job = GroupJob.parse(argv, env)
    except SettingsError as err:
        log(f"vllm-ci-step: error: plan: {err}")
        return 1
    settings = job.settings
    for name, value in (("image", ", ".join(job.tags)), ("cache-to", settings.cache_to)):
        log(f"{name:<11} {value}")
    log(f"{'cache-from':<11} {', '.join(['its own', *settings.cache_from])}")
    job.out.mkdir(parents=True, exist_ok=True)
    report = job.out / "report.json"
    report.unlink(missing_ok=True)
    try:
        log("--- :mag: Checking if image exists")
        if image_digest(settings, env) is not None:
            log(f"Image already exists: {job.tags[0]}\nSkipping build")
            export_symbol_map(job, env)
            annotate_images(job, env)
            return 0
        held = held_image(job, env)
        log("--- :docker: build")
        run_cli("build", settings.build_args(str(report)), env, job.out / "error.json")
        tag_also(job, env)
        data = json.loads(report.read_text())
    except StepFailed as failed:
        log("^^^ +++")
        log(f"vllm-ci-step: error: {failed.phase}: {redactor(env)(failed.message)}")
        return 1
    except (OSError, ValueError) as err:
        log("^^^ +++")
        log(f"vllm-ci-step: error: build: no readable report at {report}: {err}")
        return 1
    except Interrupted as cancel:
        log("^^^ +++")
        log(f"vllm-ci-step: error: {cancel}")
        return 128 + cancel.signum
    log("--- :white_check_mark: Build complete")
    export_symbol_map(job, env)
    annotate_images(job, env)
    # Ours besides upstream's: the per-stage report (hits, pulled bytes), one context per job.
    note = job.out / "annotation.md"
    body = render_annotation(data) + agent_pull(job, held, env)
    annotate(body, report_style(data), env, note, f"{ANNOTATION_CONTEXT}-{job.kind}")
    upload_artifacts([report, note], env)  # where upstream uploads its resolved bake file
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``ci/buildkite-step image-build|image-build-cpu ARGS``."""
    Cancel.install()
    try:
        code = run(list(sys.argv[1:] if argv is None else argv), dict(os.environ))
    except Interrupted as cancel:  # before the build or after it
        log(f"vllm-ci-step: error: {cancel}")
        code = 128 + cancel.signum
    sys.exit(code)


if __name__ == "__main__":
    main()
