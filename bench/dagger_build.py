"""One Dagger build of a target of the example (its test image by default), published, by the module's
own build function; its report as JSON on stdout.

With cache repositories: our stage cache. Without: the stage functions alone, so only the
engine's own cache (and `_EXPERIMENTAL_DAGGER_CACHE_*` in the environment, if set) helps."""

from __future__ import annotations

import argparse
import pathlib
import sys

from vllm_ci.entry import client_import

with client_import():  # imported as the client command imports it (vllm_ci.entry)
    import anyio
    import dagger
    from dagger import dag

    from stagecache.hostsource import on_host
    from vllm_ci.args import read_args_file
    from vllm_ci.engine import use_local_engine
    from vllm_ci.main import SOURCE_IGNORE, VllmCi
    from vllm_ci.version import git_versions


async def build(  # noqa: PLR0913
    source: pathlib.Path,
    target: str,
    image: str,
    cache_from: list[str],
    cache_to: str,
    log: pathlib.Path,
    args_file: str = "vllm-ci.args",
    cache_compression: str = "",
) -> str:
    """Build and publish the target's image; the report as JSON."""
    with log.open("w") as log_output:
        async with dagger.connection(dagger.Config(log_output=log_output)):
            # The version .git gives, derived on the host as the client command derives it.
            version, clean = git_versions(source)
            args = read_args_file((source / args_file).read_text())
            if cache_compression:
                args["cache_compression"] = cache_compression
            module = VllmCi(**args, git_version=version, git_version_clean=clean)
            # A folder of this machine, as the client command gives it: planned here (hostsource.on_host).
            directory = on_host(dag.host().directory(str(source), exclude=SOURCE_IGNORE), str(source), SOURCE_IGNORE)
            # The module's own build function, as `dagger call` and the client command run it.
            report: str = await module.build(  # type: ignore[attr-defined]  # @function hides the coroutine
                directory, image=image, target=target, cache_from=cache_from, cache_to=cache_to
            )
    return report


def main() -> None:
    """Parse the command line and run one build."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=pathlib.Path, required=True)
    parser.add_argument("--target", default="test")
    parser.add_argument(
        "--args-file",
        default="vllm-ci.args",
        help="the args file (constructor flags): in the checkout, or a path outside it",
    )
    parser.add_argument("--image", required=True)
    parser.add_argument("--cache-compression", default="", help="the stage cache's layer compression (the args file's)")
    parser.add_argument("--cache-from", default="", help="comma-separated; empty: no stage cache")
    parser.add_argument("--cache-to", default="")
    parser.add_argument("--log", type=pathlib.Path, required=True, help="where the engine's progress goes")
    args = parser.parse_args()
    use_local_engine()
    cache_from = [r for r in args.cache_from.split(",") if r]
    print(
        anyio.run(
            build,
            args.source,
            args.target,
            args.image,
            cache_from,
            args.cache_to,
            args.log,
            args.args_file,
            args.cache_compression,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
