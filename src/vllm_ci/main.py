"""The Dagger module: one function per Dockerfile stage, plus plan, build, prune and run-tests.

`dagger call` lists these functions; the client command (cli.py) is derived from them."""

import dataclasses
import json
import os
import sys
from typing import Annotated, Any

import dagger
from dagger import Doc, Ignore, dag, function, object_type

from stagecache import BuildReport, StageCache
from stagecache.errors import StageError
from stagecache.hostsource import host_folder
from stagecache.keys import checked_compression
from stagecache.prune import prune as prune_repository
from stagecache.registry import DEFAULT_ATTEMPTS, RegistryError
from stagecache.report import Progress
from vllm_ci.args import (
    SOURCE_IGNORE,
    ArgsFile,
    AwsKeyId,
    AwsSecret,
    BuildArgs,
    CacheFrom,
    CacheTo,
    DockerConfig,
    IndexNetrc,
    JobArgv,
    JobEnv,
    RegistryAttempts,
    RegistryPassword,
    RegistryService,
    RegistryUsername,
    tunnels_of,
)
from vllm_ci.build import Build
from vllm_ci.checks import check_target, checked, ref_argument, ref_arguments
from vllm_ci.conformance import accept, check, refusal, released_file
from vllm_ci.declare import STAGE_SETS, stage_set_for
from vllm_ci.errors import ConformanceFailed, UsageError
from vllm_ci.graph import secrets_of, stage_graph, targets
from vllm_ci.group_job import run_group_job
from vllm_ci.upstream_file import UpstreamFile
from vllm_ci.version import source_versions

Source = Annotated[
    dagger.Directory,
    Doc("The vLLM checkout (or the bundled example's); required: pass --source=."),
    Ignore(SOURCE_IGNORE),
]
Target = Annotated[
    str,
    Doc(
        "The stage to build; empty: the test image of the Dockerfile's stage set. The stages of "
        + "; ".join(f"{s.dockerfile}: {', '.join(targets(s))}" for s in STAGE_SETS.values())
    ),
]


@object_type
class VllmCi(BuildArgs):
    """vLLM's CI image build, stage by stage, with a registry stage cache."""

    async def stage_cache(
        self,
        source: dagger.Directory | None,
        cache_from: list[str] | None = None,
        cache_to: str = "",
        strict: bool = False,
        registry_username: str = "",
        registry_password: dagger.Secret | None = None,
        aws_access_key_id: dagger.Secret | None = None,
        aws_secret_access_key: dagger.Secret | None = None,
        registry_attempts: int = DEFAULT_ATTEMPTS,
        registry_service: dagger.Service | None = None,
        index_netrc: dagger.Secret | None = None,
    ) -> StageCache:
        """The stage cache over this build's stages (for this source's version when none was passed)."""
        try:  # refused before the source is read for its version
            checked_compression(self.cache_compression)
        except ValueError as err:
            raise UsageError(f"--cache-compression: {err}") from None
        return StageCache(
            stage_graph(await self._build(source)),
            cache_from=ref_arguments("cache_from", cache_from),
            cache_to=ref_argument("cache_to", cache_to),
            strict=strict,
            registry_username=registry_username,
            registry_password=registry_password,
            secrets=await secrets_of(aws_access_key_id, aws_secret_access_key, index_netrc),
            # In a Buildkite job each stage is a collapsible log group; elsewhere plain lines.
            progress=Progress(sys.stderr, groups=os.environ.get("BUILDKITE") == "true"),
            registry_attempts=registry_attempts,
            tunnels=await tunnels_of(registry_service),
            layer_compression=self.cache_compression,
        )

    async def _file(self, source: dagger.Directory | None) -> UpstreamFile:
        """The Dockerfile being built, read from the source; a missing or unreadable one is one line (exit 2)."""
        if source is None:
            raise UsageError("--source is required")
        host = host_folder(source)
        try:  # a folder of this machine is read here: reading it in the engine would upload all of it first
            text = host.text(self.dockerfile) if host is not None else await source.file(self.dockerfile).contents()
        except dagger.QueryError:
            text = None
        if text is None:
            raise UsageError(f"--dockerfile {self.dockerfile}: no such file in the source")
        return UpstreamFile.parse(text, self.dockerfile)

    async def _build(self, source: dagger.Directory | None) -> Build:
        """This build: the arguments (with the source's version), the source's Dockerfile, refused in one
        line before any container work when it needs a person (a new stage, a changed FROM or deviated
        instruction, an instruction that cannot run as written) or names no ARG a --build-arg sets."""
        build = Build(await self._versioned(source), await self._file(source))
        if not check(build.file, build.declarations).ok():  # the pinned release's file is read only for the diff
            raise refusal(check(build.file, build.declarations, released=released_file(build.stage_set)))
        return build

    async def _versioned(self, source: dagger.Directory | None) -> "VllmCi":
        """These arguments, with the version the uploaded source gives when none was passed: what
        setuptools-scm falls back to outside git (the upload has no .git), as the client command derives it."""
        if self.git_version or source is None:
            return self
        version, clean = await source_versions(source)
        return dataclasses.replace(self, git_version=version, git_version_clean=clean)

    def cache_target(self, target: str) -> str:
        """A target as the stage cache names it, in the stage set of the Dockerfile being built (empty: its
        test image); a stage the set does not have is one line (exit 2), before any container work."""
        check_target("--target", target, self.dockerfile)
        stage_set = stage_set_for(self.dockerfile)
        return stage_set.cache_name(target or stage_set.test_image)

    async def _stage(self, source: dagger.Directory, target: str, **cache: Any) -> dagger.Container:
        """Build one stage (and what it needs), through the cache when one is given."""
        target = self.cache_target(target)
        container, report = await (await self.stage_cache(source, **cache)).build(source, target)
        print(report.table(), file=sys.stderr)
        return container

    @function
    @checked
    async def base(self, source: Source) -> dagger.Container:
        """The build base: compilers, Python venv and the torch-level dependencies (stage `base`)."""
        return await self._stage(source, "base")

    @function
    @checked
    async def csrc_build(self, source: Source) -> dagger.Container:
        """The compiled extension wheel, from only the files the compile reads (stage `csrc-build`)."""
        return await self._stage(source, "csrc-build")

    @function
    @checked
    async def wheel(self, source: Source) -> dagger.File:
        """The vLLM wheel, repackaged from csrc-build's extension plus the Python sources (stage `build`)."""
        dist = (await self._stage(source, "build")).directory("/workspace/dist")
        names = await dist.glob("*.whl")
        return dist.file(names[0])

    @function
    @checked
    async def kernel_symbol_map(self, source: Source, cache_from: CacheFrom = None) -> dagger.File:
        """CI's kernel symbol map, built with --build-arg VLLM_KERNEL_SYMBOL_MAP=1 (stage `kernel-symbol-map`)."""
        return (await self._stage(source, "kernel-symbol-map", cache_from=cache_from)).file("kernel_symbol_map.json.gz")

    @function
    @checked
    async def runtime_base(self, source: Source) -> dagger.Container:
        """The runtime image with every dependency and no vLLM (stage `vllm-runtime-base`)."""
        return await self._stage(source, "vllm-runtime-base")

    @function
    @checked
    async def test_deps(self, source: Source) -> dagger.Container:
        """The runtime image plus the test requirements (stage `test-deps`)."""
        return await self._stage(source, "test-deps")

    @function
    @checked
    async def vllm_base(self, source: Source) -> dagger.Container:
        """The runtime image with vLLM installed (stage `vllm-base`)."""
        return await self._stage(source, "vllm-base")

    @function
    @checked
    async def test_image(
        self,
        source: Source,
        cache_from: CacheFrom = None,
        cache_to: CacheTo = "",
        registry_service: RegistryService = None,
    ) -> dagger.Container:
        """CI's test image: test dependencies, vLLM, and the source tree last (stage `test`). With
        docker/Dockerfile.cpu, that file's `vllm-test`."""
        return await self._stage(
            source, "", cache_from=cache_from, cache_to=cache_to, registry_service=registry_service
        )

    @function
    @checked
    async def openai(self, source: Source) -> dagger.Container:
        """The OpenAI-compatible server image, `vllm serve` as entrypoint (stage `vllm-openai`)."""
        return await self._stage(source, "vllm-openai")

    @function
    @checked
    async def run_tests(
        self,
        source: Source,
        tests: Annotated[str, Doc("pytest arguments, space-separated, run in the test image")] = "tests",
        cache_from: CacheFrom = None,
        cache_to: CacheTo = "",
        registry_service: RegistryService = None,
    ) -> str:
        """Build the test image and run the tests inside it; returns pytest's output."""
        # dagger-io 0.18.19 types @function's result as an unbound R (Func is an alias without its
        # parameters), so mypy cannot see the coroutine every @function method here returns.
        image = await self.test_image(source, cache_from, cache_to, registry_service)  # type: ignore[attr-defined]
        return await image.with_exec(["python3", "-m", "pytest", *tests.split()]).stdout()

    @function
    @checked
    async def run_image(
        self,
        image: Annotated[str, Doc("The image to run, registry/repository:tag")],
        args: Annotated[list[str] | None, Doc("The command's arguments, after the entrypoint")] = None,
        user: Annotated[str, Doc("USER[:GROUP] to run as, as `docker run --user`")] = "",
        entrypoint: Annotated[str, Doc("A program instead of the image's, as `docker run --entrypoint`")] = "",
    ) -> str:
        """Run a published image once, as `docker run --rm` does, and return what it printed (a failure: exit 1)."""
        container = dag.container().from_(image)
        container = container.with_user(user) if user else container
        container = container.with_entrypoint([entrypoint]) if entrypoint else container
        return await container.with_exec(args or [], use_entrypoint=True).stdout()

    @function
    @checked
    async def group_job(
        self,
        source: Source,
        job: JobArgv,
        env: JobEnv = None,
        args_file: ArgsFile = None,
        docker_config: DockerConfig = None,
        registry_service: RegistryService = None,
    ) -> dagger.Directory:
        """One job of vLLM's image-build group, as upstream's script does it; a folder for the step to post."""
        return await run_group_job(self, source, job, env or [], args_file, docker_config, registry_service)

    @function
    @checked
    async def plan(
        self,
        source: Source,
        target: Target = "",
        cache_from: CacheFrom = None,
        registry_username: RegistryUsername = "",
        registry_password: RegistryPassword = None,
        registry_service: RegistryService = None,
    ) -> str:
        """Dry run: the stages the target needs, their keys and which cache refs would hit, as JSON."""
        target = self.cache_target(target)
        cache = await self.stage_cache(
            source, cache_from, "", False, registry_username, registry_password, registry_service=registry_service
        )
        planned = await cache.plan(source, target)
        return json.dumps({"target": target, "stages": [p.to_dict() for p in planned]}, indent=2)

    @function
    @checked
    async def build(
        self,
        source: Source,
        image: Annotated[str, Doc("Where to publish the target image; empty: do not publish")] = "",
        target: Target = "",
        cache_from: CacheFrom = None,
        cache_to: CacheTo = "",
        cache_strict: Annotated[bool, Doc("Fail the build when a cache look-up or export fails")] = False,
        registry_username: RegistryUsername = "",
        registry_password: RegistryPassword = None,
        aws_access_key_id: AwsKeyId = None,
        aws_secret_access_key: AwsSecret = None,
        registry_attempts: RegistryAttempts = DEFAULT_ATTEMPTS,
        registry_service: RegistryService = None,
        index_netrc: IndexNetrc = None,
    ) -> str:
        """Build the target with the stage cache, publish it, and return the per-stage report as JSON."""
        target = self.cache_target(target)
        cache = await self.stage_cache(
            source,
            cache_from,
            cache_to,
            cache_strict,
            registry_username,
            registry_password,
            aws_access_key_id,
            aws_secret_access_key,
            registry_attempts,
            registry_service,
            index_netrc,
        )
        _, report = await cache.build(source, target, ref_argument("image", image))
        print(report.table(), file=sys.stderr)
        return report.to_json()

    @function
    @checked
    async def conformance(
        self,
        source: Source,
        format_: Annotated[str, Doc("table (for a person) or json (for CI)")] = "table",
    ) -> str:
        """Hold the stage functions against the Dockerfile: each instruction run as written or deviated, and what needs a person."""
        if format_ not in ("table", "json"):
            raise UsageError(f"--format: table or json, not {format_!r}")
        stage_set = stage_set_for(self.dockerfile)
        report = check(await self._file(source), stage_set.declared, released=released_file(stage_set))
        rendered = report.to_json() if format_ == "json" else report.table()
        if not report.ok():
            raise ConformanceFailed(report.summary(), rendered)
        return rendered

    @function
    @checked
    async def accept(self, source: Source) -> str:
        """The accepted digests of every deviated instruction as the Dockerfile has them now (JSON): written
        over src/vllm_ci/accepted-deviations.json once a person has checked each deviation still holds."""
        file = await self._file(source)
        return json.dumps(
            {"release": f"{file.path} of the source", "digests": accept(file, stage_set_for(self.dockerfile).declared)},
            indent=1,
        )

    @function
    @checked
    async def report(
        self,
        report_json: Annotated[str, Doc("A report as `build` returns it")],
        markdown: Annotated[bool, Doc("Markdown instead of plain text")] = False,
        timeline: Annotated[
            bool, Doc("The per-stage timeline (queued, running, exporting) instead of the table")
        ] = False,
    ) -> str:
        """Render a build's JSON report as a table, or its per-stage timeline."""
        parsed = BuildReport.from_json(report_json)  # checked (vllm_ci.checks.check_report)
        if timeline:
            return parsed.timeline()
        return parsed.markdown() if markdown else parsed.table()

    @function
    @checked
    async def prune(
        self,
        cache_repo: Annotated[str, Doc("The cache repository to prune, registry/repository")],
        keep_days: Annotated[float, Doc("Keep entries younger than this many days")] = 7.0,
        keep_last: Annotated[int, Doc("Keep the newest N entries of each stage")] = 2,
        source: Annotated[
            dagger.Directory | None,
            Doc("A checkout whose current plan's entries are never deleted"),
            Ignore(SOURCE_IGNORE),
        ] = None,
        delete: Annotated[bool, Doc("Really delete; without it, only say what would be deleted")] = False,
        registry_username: RegistryUsername = "",
        registry_password: RegistryPassword = None,
        registry_service: RegistryService = None,
    ) -> str:
        """Delete old cache entries: keep recent ones, the newest per stage and all the current plan uses."""
        live: set[str] = set()
        if source is not None:
            cache = await self.stage_cache(source, [], "", False, registry_username, registry_password)
            stage_set = stage_set_for(self.dockerfile)
            for target in ("test", "vllm-openai", "build") if stage_set.name == "cuda" else (stage_set.test_image,):
                live |= {p.key for p in await cache.plan(source, stage_set.cache_name(target))}
        password = await registry_password.plaintext() if registry_password else ""
        repository = ref_argument("cache_repo", cache_repo)
        if repository is None:
            raise UsageError("--cache-repo: the cache repository to prune is required")
        try:
            return await prune_repository(
                repository,
                live_keys=live,
                keep_days=keep_days,
                keep_last=keep_last,
                dry_run=not delete,
                username=registry_username,
                password=password,
                tunnels=await tunnels_of(registry_service),
            )
        except RegistryError as err:
            raise StageError(str(err), phase="prune", ref=cache_repo) from None
