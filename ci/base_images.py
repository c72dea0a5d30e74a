"""Make the base images locally (debootstrap) and publish them to the local registry.

No vendor registry is reachable here, so the images the pipeline starts from are made on this
machine: a Debian minbase rootfs, and a build image on top of it. Each is published under a tag
named by the hash of its recipe, and a stable tag is moved onto it; a rerun whose recipe has not
changed finds the hash tag in the registry and does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
from typing import Final

import anyio
import dagger
from dagger import dag

from stagecache.registry import connect

SUITE: Final = "bookworm"
DEBIAN_REPO: Final = "library/debian"
BUILD_REPO: Final = "library/vllm-ci-build"
# What the build image adds: vLLM's build base ships a compiler toolchain and Python.
BUILD_PACKAGES: Final = (
    "python3", "python3-venv", "python3-pip", "python3-dev",
    "gcc", "g++", "make", "cmake", "ccache", "git", "ca-certificates",
)
PATH_ENV: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def apt_mirror() -> str:
    """The Debian mirror this machine's apt is configured with (first URI that serves debian)."""
    for path in sorted(pathlib.Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and not line.rstrip().endswith("-security"):
                return line.split()[1]
    for line in pathlib.Path("/etc/apt/sources.list").read_text().splitlines():
        if line.startswith("deb ") and "security" not in line:
            return line.split()[1]
    raise SystemExit("base images: no Debian mirror found in /etc/apt")


def recipe_hash(recipe: dict) -> str:
    """Short hash of a recipe's canonical JSON."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


async def tag_exists(registry: str, repo: str, tag: str) -> bool:
    """Whether the registry has a manifest under repo:tag."""
    async with connect(registry) as client:
        return await client.manifest_digest(repo, tag) is not None


def debootstrap(target: pathlib.Path, mirror: str) -> None:
    """Make a minbase rootfs once; a finished one is marked and reused."""
    done = target / ".complete"
    if done.exists():
        return
    subprocess.run(["rm", "-rf", str(target)], check=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", SUITE, str(target), mirror],
        check=True,
    )
    # The image points apt at the same mirror the machine uses.
    (target / "etc/apt/sources.list").write_text(f"deb {mirror} {SUITE} main\n")
    subprocess.run(["rm", "-rf", str(target / "var/cache/apt/archives"), str(target / "var/lib/apt/lists")], check=True)
    (target / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (target / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    done.touch()


async def publish_both(ctr: dagger.Container, registry: str, repo: str, suite_tag: str, hash_tag: str) -> str:
    """Publish under the recipe-hash tag and move the stable tag onto it."""
    ref = await ctr.publish(f"{registry}/{repo}:{hash_tag}")
    await ctr.publish(f"{registry}/{repo}:{suite_tag}")
    return ref


async def main(registry: str, cache_dir: pathlib.Path) -> None:
    """Ensure both base images are in the registry under their recipe hashes."""
    mirror = apt_mirror()
    debian_recipe = {"suite": SUITE, "variant": "minbase", "mirror": mirror, "v": 1}
    debian_tag = f"{SUITE}-{recipe_hash(debian_recipe)}"
    build_recipe = {"from": debian_tag, "packages": BUILD_PACKAGES, "v": 1}
    build_tag = f"{SUITE}-{recipe_hash(build_recipe)}"

    have_debian = await tag_exists(registry, DEBIAN_REPO, debian_tag)
    have_build = await tag_exists(registry, BUILD_REPO, build_tag)
    if have_debian and have_build:
        print(f"up to date: {registry}/{DEBIAN_REPO}:{debian_tag}, {registry}/{BUILD_REPO}:{build_tag}")
        return

    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        if have_debian:
            debian = dag.container().from_(f"{registry}/{DEBIAN_REPO}:{debian_tag}")
        else:
            rootfs = cache_dir / f"rootfs-debian-{debian_tag}"
            debootstrap(rootfs, mirror)
            debian = (
                dag.container()
                .with_rootfs(dag.host().directory(str(rootfs), exclude=["proc", "sys", "dev", ".complete"]))
                .with_env_variable("PATH", PATH_ENV)
            )
            print("published", await publish_both(debian, registry, DEBIAN_REPO, SUITE, debian_tag))
        if not have_build:
            build = (
                debian.with_env_variable("DEBIAN_FRONTEND", "noninteractive")
                .with_exec(["apt-get", "update"])
                .with_exec(["apt-get", "install", "-y", "--no-install-recommends", *BUILD_PACKAGES])
                .with_exec(["sh", "-c", "rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb"])
            )
            print("published", await publish_both(build, registry, BUILD_REPO, SUITE, build_tag))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True)
    parser.add_argument("--cache-dir", required=True, type=pathlib.Path)
    args = parser.parse_args()
    anyio.run(main, args.registry, args.cache_dir)
