"""Make the base images locally (debootstrap) and publish them to the local registry.

No vendor registry is reachable here, so the images the pipeline starts from are made on this
machine: a Debian minbase rootfs, and a build image on top of it. Each is published under a tag
named by the hash of its recipe, and a stable tag is moved onto it; a rerun whose recipe has not
changed finds the hash tag in the registry and does nothing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import pathlib
import subprocess
import sys
import zipfile
from typing import Final

import anyio
import dagger
from dagger import dag

from stagecache.registry import connect

SUITE: Final = "bookworm"
DEBIAN_REPO: Final = "library/debian"
BUILD_REPO: Final = "library/vllm-ci-build"
RUNTIME_REPO: Final = "library/vllm-ci-runtime"
# What the build image adds: vLLM's build base ships a compiler toolchain and Python.
BUILD_PACKAGES: Final = (
    "python3",
    "python3-venv",
    "python3-pip",
    "python3-dev",
    "gcc",
    "g++",
    "make",
    "cmake",
    "ccache",
    "git",
    "curl",
    "ca-certificates",
)
# Where the manylinux builder keeps its interpreters; upstream's base makes its venv from
# /opt/python/cpXY-cpXY/bin/pythonX.Y, so the stand-in puts Debian's Python there too.
PYTHON_VERSION: Final = "3.11"
MANYLINUX_PYTHON: Final = "/opt/python/cp311-cp311/bin/python3.11"
# The example's mirror, as a fork's would serve what no machine here reaches, at /opt/mirror in both
# stand-in images: PyTorch's CUDA index (PYTORCH_CUDA_INDEX_BASE_URL, whl/cu130/) with stand-ins for
# torch and flashinfer-python (its `flashinfer download-kernels` command), and get-pip.py (GET_PIP_URL).
MIRROR: Final = "/opt/mirror"
CUDA_VERSION: Final = "13.0.3"
CUDA_INDEX: Final = "cu130"
# project, version, module, console scripts
STANDINS: Final = (
    ("torch", "2.14.0+cu130", "torch", ()),
    # A local version, as torch's: PyPI never has one, so an install that searches PyPI first (vLLM 0.34.0's
    # `--extra-index-url <the public index> --index-strategy unsafe-first-match`) still takes the stand-in.
    ("flashinfer-python", "0.6.1+cu130", "flashinfer", (("flashinfer", "flashinfer.__main__:main"),)),
)
FLASHINFER_MAIN: Final = """\
import sys


def main() -> None:
    \"\"\"`flashinfer download-kernels`: the stand-in has no kernels to download.\"\"\"
    print(f"flashinfer stand-in: {' '.join(sys.argv[1:])}: nothing to do")


if __name__ == "__main__":
    main()
"""
GET_PIP: Final = '''"""Stand-in for get-pip.py in the example's mirror: installs pip from the pip wheel the distribution
ships (get-pip.py carries its own; Debian disables ensurepip for the system Python)."""
import glob
import sys

wheel = sorted(glob.glob("/usr/share/python-wheels/pip-*.whl"))[-1]
sys.path.insert(0, wheel)
from pip._internal.cli.main import main  # noqa: E402

sys.exit(main(["install", "--no-index", "--upgrade", wheel]))
'''
PATH_ENV: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The machine's extra CA certificates (its egress CA): the images trust them as a corporate mirror's
# base images trust its CA, so every RUN of any builder reaches PyPI (neither BuildKit nor our engine,
# which ci/engine keeps from seeing them, adds them to containers). Public certificates, not secrets;
# in the recipe by their hash.
CA_DIR: Final = pathlib.Path("/usr/local/share/ca-certificates")


def ca_certificates() -> dict[str, str]:
    """The machine's extra CA certificates: file name -> sha256 of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(CA_DIR.glob("*.crt"))}


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


def standin_wheel(
    folder: pathlib.Path, project: str, version: str, module: str, scripts: tuple[tuple[str, str], ...]
) -> pathlib.Path:
    """A minimal, byte-reproducible pure-Python wheel of that name and version, with its console scripts."""
    dist = f"{project.replace('-', '_')}-{version}"
    files = {
        f"{module}/__init__.py": f'"""Stand-in for {project} {version}: only its name, version and commands are real."""\n'
        f'__version__ = "{version}"\n',
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: vllm-ci\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if scripts:
        files[f"{module}/__main__.py"] = FLASHINFER_MAIN
        files[f"{dist}.dist-info/entry_points.txt"] = "[console_scripts]\n" + "".join(
            f"{n} = {t}\n" for n, t in scripts
        )
    record = [f"{path},sha256={urlsafe_digest(text.encode())},{len(text.encode())}" for path, text in files.items()]
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), text)
    (folder / "index.html").write_text(f'<html><body><a href="{wheel.name}">{wheel.name}</a></body></html>\n')
    return wheel


def make_mirror(folder: pathlib.Path) -> pathlib.Path:
    """The mirror's files, made once per recipe."""
    for project, version, module, scripts in STANDINS:
        standin_wheel(folder / "whl" / CUDA_INDEX / project, project, version, module, scripts)
    (folder / "get-pip.py").write_text(GET_PIP)
    return folder


def urlsafe_digest(data: bytes) -> str:
    """A wheel RECORD's hash: urlsafe base64 of the sha256, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


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
    """Ensure the base images are in the registry under their recipe hashes."""
    mirror = apt_mirror()
    debian_recipe = {"suite": SUITE, "variant": "minbase", "mirror": mirror, "v": 1}
    debian_tag = f"{SUITE}-{recipe_hash(debian_recipe)}"
    index = {
        "mirror": MIRROR,
        "index": CUDA_INDEX,
        "standins": STANDINS,
        "get-pip": GET_PIP,
        "main": FLASHINFER_MAIN,
        "ca": ca_certificates(),
    }
    build_recipe = {
        "from": debian_tag,
        "packages": BUILD_PACKAGES,
        "python": MANYLINUX_PYTHON,
        "cuda": CUDA_VERSION,
        **index,
        "v": 3,
    }
    build_tag = f"{SUITE}-{recipe_hash(build_recipe)}"
    runtime_tag = f"{SUITE}-{recipe_hash({'from': debian_tag, 'cuda': CUDA_VERSION, **index, 'v': 2})}"

    have = [
        await tag_exists(registry, repo, tag)
        for repo, tag in ((DEBIAN_REPO, debian_tag), (BUILD_REPO, build_tag), (RUNTIME_REPO, runtime_tag))
    ]
    if all(have):
        print(
            f"up to date: {registry}/{DEBIAN_REPO}:{debian_tag}, {registry}/{BUILD_REPO}:{build_tag}, "
            f"{registry}/{RUNTIME_REPO}:{runtime_tag}"
        )
        return
    mirror_dir = make_mirror(cache_dir / f"mirror-{recipe_hash(index)}")

    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        if have[0]:
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
        # uv reads the system's CA store (where the certificates below go when ca-certificates is
        # installed), not its own;
        # CUDA_VERSION is in both vendor images' environment (the cu index of several RUNs reads it).
        with_index = (
            debian.with_directory(MIRROR, dag.host().directory(str(mirror_dir)))
            .with_directory(str(CA_DIR), dag.host().directory(str(CA_DIR), include=list(ca_certificates())))
            .with_env_variable("UV_NATIVE_TLS", "1")
            .with_env_variable("CUDA_VERSION", CUDA_VERSION)
        )
        if not have[1]:
            build = (
                with_index.with_env_variable("DEBIAN_FRONTEND", "noninteractive")
                .with_exec(["apt-get", "update"])
                .with_exec(["apt-get", "install", "-y", "--no-install-recommends", *BUILD_PACKAGES])
                .with_exec(["sh", "-c", "rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb"])
                .with_exec(
                    [
                        "sh",
                        "-c",
                        f'mkdir -p "$(dirname {MANYLINUX_PYTHON})" && ln -s /usr/bin/python{PYTHON_VERSION} {MANYLINUX_PYTHON}',
                    ]
                )
            )
            print("published", await publish_both(build, registry, BUILD_REPO, SUITE, build_tag))
        if not have[2]:
            print("published", await publish_both(with_index, registry, RUNTIME_REPO, SUITE, runtime_tag))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True)
    parser.add_argument("--cache-dir", required=True, type=pathlib.Path)
    args = parser.parse_args()
    anyio.run(main, args.registry, args.cache_dir)
