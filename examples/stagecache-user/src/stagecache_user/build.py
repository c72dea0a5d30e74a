"""Build this project's image in two cached stages, with the stage cache as a library.

    python -m stagecache_user.build --base-image REGISTRY/python-image --cache REGISTRY/REPO [--image REF]
        [--layer-compression zstd|gzip]

`deps` (a venv with requirements.txt) reads only requirements.txt; `app` (the application,
tested) builds on it and reads only app/. Each stage's result is published to the cache
repository under a key of exactly those inputs: a rerun imports both, an edit to app/
rebuilds `app` alone on the cached `deps`. Prints the stage cache's report as JSON."""

from __future__ import annotations

import argparse
import pathlib
import sys

import anyio
import dagger
from dagger import dag

from stagecache import Stage, StageCache, StageContext
from stagecache.keys import DEFAULT_LAYER_COMPRESSION, LAYER_COMPRESSIONS
from stagecache.refs import ImageRef

PROJECT = pathlib.Path(__file__).resolve().parents[2]


def stages(base_image: str) -> list[Stage]:
    """The project's two stages, as data: inputs and args feed both the build and the key."""

    async def deps(ctx: StageContext) -> dagger.Container:
        return (
            dag.container()
            .from_(base_image)
            .with_exec(["python3", "-m", "venv", "/opt/venv"])
            .with_file("/tmp/requirements.txt", ctx.source.file("requirements.txt"))
            .with_exec(["/opt/venv/bin/pip", "install", "--disable-pip-version-check", "-r", "/tmp/requirements.txt"])
        )

    async def app(ctx: StageContext) -> dagger.Container:
        return (
            ctx.parents["deps"]
            .with_directory("/opt/app", ctx.source.directory("app"))
            .with_workdir("/opt/app")
            .with_exec(["/opt/venv/bin/python", "-m", "unittest", "-v"])
            .with_default_args(["/opt/venv/bin/python", "greet.py"])
        )

    return [
        Stage("deps", deps, reads=("requirements.txt",), args={"base_image": base_image}),
        Stage("app", app, parents=("deps",), reads=("app/**",)),
    ]


async def build(project: pathlib.Path, base_image: str, cache: str, image: str, layers: str) -> str:
    """Build `app` through the cache, its entries' layers compressed with `layers`; the report as JSON."""
    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        source = dag.host().directory(str(project), include=["requirements.txt", "app/**"], exclude=["**/__pycache__"])
        repository = ImageRef.parse(cache)  # refs are parsed once, where they come in
        stage_cache = StageCache(
            stages(base_image), cache_from=[repository], cache_to=repository, layer_compression=layers
        )
        _, report = await stage_cache.build(source, "app", ImageRef.parse(image) if image else None)
        return report.to_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", required=True, help="an image with python3 and its venv module")
    parser.add_argument("--cache", required=True, help="the cache repository, registry/repository")
    parser.add_argument("--image", default="", help="where to publish the result; empty: nowhere")
    parser.add_argument("--project", type=pathlib.Path, default=PROJECT, help="the project folder to build")
    parser.add_argument(
        "--layer-compression",
        choices=LAYER_COMPRESSIONS,
        default=DEFAULT_LAYER_COMPRESSION,
        help="how the cache entries' layers are compressed (part of their keys)",
    )
    args = parser.parse_args()
    print(anyio.run(build, args.project, args.base_image, args.cache, args.image, args.layer_compression))


if __name__ == "__main__":
    main()
