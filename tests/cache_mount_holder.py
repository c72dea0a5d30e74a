"""Run one RUN with a cache mount as written (instructions.AsWritten) and wait for it: the client a
cancelled job kills mid-RUN. Usage: python cache_mount_holder.py VOLUME_ID SHARING SECONDS."""

from __future__ import annotations

import os
import sys

import anyio
import dagger
from dagger import dag

from conftest import REGISTRY, walk_of
from stagecache import StageContext


def run_with_cache_mount(volume: str, sharing: str, seconds: str) -> str:
    """The RUN instruction: `seconds` of sleep with the volume mounted under the given sharing."""
    return f"RUN --mount=type=cache,id={volume},target=/held,sharing={sharing} sleep {seconds}"


async def hold(volume: str, sharing: str, seconds: str) -> None:
    """Start the RUN on the engine, say so on stdout, and wait for it."""
    with open(os.devnull, "w") as log:
        async with dagger.connection(dagger.Config(log_output=log)):
            upstream = walk_of(run_with_cache_mount(volume, sharing, seconds), StageContext(dag.directory(), {}))
            running = upstream.walk(dag.container().from_(f"{REGISTRY}/library/vllm-ci-runtime:bookworm"))
            print("started", flush=True)
            await running.sync()


if __name__ == "__main__":
    anyio.run(hold, *sys.argv[1:4])
