"""Reproducible OCI image layouts: layers as uncompressed tars with fixed metadata, written
from folders on this machine, optionally on top of an image's blobs from a registry.

Same inputs, same bytes: entries sorted, one fixed mtime, owner root, no hard links, no
compression (nothing depends on a compressor's version)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import stat
import tarfile
from typing import Final, Iterable

import anyio

from stagecache.registry import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RegistryClient, connect

# 2025-01-01T00:00:00Z: every file's mtime in our layers.
EPOCH: Final = 1735689600
LAYER_TAR: Final = "application/vnd.oci.image.layer.v1.tar"
LAYER_TAR_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG: Final = "application/vnd.oci.image.config.v1+json"
# Docker's media types of the same bytes, as a registry may answer them.
DOCKER_TO_OCI: Final = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_TAR_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": LAYER_TAR,
    "application/vnd.docker.container.image.v1+json": CONFIG,
    DOCKER_MANIFEST: OCI_MANIFEST,
}


def sha256_file(path: pathlib.Path) -> str:
    """sha256:<hex> of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclasses.dataclass
class Layer:
    """A layer blob: its digest (of the bytes), size, media type, and diff_id (of the tar)."""

    digest: str
    size: int
    media_type: str
    diff_id: str
    comment: str = ""


class Store:
    """A folder of blobs by digest: blobs/sha256/<hex>, as in an OCI layout."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        (root / "blobs/sha256").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> pathlib.Path:
        return self.root / "blobs/sha256" / digest.removeprefix("sha256:")

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put_file(self, src: pathlib.Path) -> tuple[str, int]:
        """Move a finished file in under its digest."""
        digest = sha256_file(src)
        dst = self.path(digest)
        if dst.exists():
            src.unlink()
        else:
            os.replace(src, dst)
        return digest, dst.stat().st_size

    def put_json(self, obj: dict) -> tuple[str, int]:
        """Canonical JSON (sorted keys, no spaces) as a blob."""
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if not path.exists():
            path.write_bytes(data)
        return digest, len(data)


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(out: pathlib.Path, trees: Iterable[tuple[str, pathlib.Path]], skip: Iterable[str] = ()) -> None:
    """An uncompressed tar of host folders or files, each placed at an absolute path in the image.

    `skip`: archive paths (without leading /) left out with everything under them."""
    skipped = tuple(s.strip("/") for s in skip)
    written: set[str] = set()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, host: pathlib.Path) -> None:
            if name in skipped or name.startswith(tuple(s + "/" for s in skipped)):
                return
            st = host.lstat()
            if stat.S_ISLNK(st.st_mode):
                info = _info(name, st, tarfile.SYMTYPE)
                info.mode = 0o777
                info.linkname = os.readlink(host)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                if name not in written:
                    tar.addfile(_info(name, st, tarfile.DIRTYPE))
                    written.add(name)
                for child in sorted(os.listdir(host)):
                    add(f"{name}/{child}", host / child)
            elif stat.S_ISREG(st.st_mode):
                info = _info(name, st, tarfile.REGTYPE)
                info.size = st.st_size
                with open(host, "rb") as f:
                    tar.addfile(info, f)
            # sockets, fifos, devices: never part of what we package

        # Parent folders are not written: those of the base image stay as they are, and
        # missing ones are created by the unpacker. "/" places a folder's children at the top.
        for target, host in sorted(trees, key=lambda t: t[0]):
            name = target.strip("/")
            if name:
                add(name, host)
            else:
                for child in sorted(os.listdir(host)):
                    add(child, host / child)


def add_tar_layer(store: Store, tar_path: pathlib.Path, comment: str) -> Layer:
    """An uncompressed tar as a layer blob (digest and diff_id are the same)."""
    digest, size = store.put_file(tar_path)
    return Layer(digest, size, LAYER_TAR, digest, comment)


@dataclasses.dataclass
class BaseImage:
    """An image's manifest and config, with its layers, as pulled from a registry."""

    ref: str
    config: dict
    layers: list[Layer]


def resolve_digest(registry: str, repo: str, tag: str) -> str:
    """The manifest digest a tag points at (plain http: a loopback registry)."""
    return anyio.run(_resolve_digest, registry, repo, tag)


async def _resolve_digest(registry: str, repo: str, tag: str) -> str:
    """The manifest digest a tag points at, asked of the registry client; exits when the tag is absent."""
    async with connect(registry) as client:
        digest = await client.manifest_digest(repo, tag)
    if not digest:
        raise SystemExit(f"{registry}/{repo}:{tag}: no such image")
    return digest


def pull(store: Store, registry: str, repo: str, digest: str) -> BaseImage:
    """Fetch a linux/amd64 image's blobs by digest into the store (blobs already there are kept)."""
    return anyio.run(_pull, store, registry, repo, digest)


async def _pull(store: Store, registry: str, repo: str, digest: str) -> BaseImage:
    """Fetch an image's blobs through one registry client."""
    async with connect(registry) as client:
        return await _pull_with(client, store, repo, digest)


async def _pull_with(client: RegistryClient, store: Store, repo: str, digest: str) -> BaseImage:
    """Fetch a linux/amd64 image by digest (following an index) into the store with a client."""
    found = await client.manifest(repo, digest)
    if found is None:
        raise SystemExit(f"{client.registry}/{repo}@{digest}: no such manifest")
    manifest, _ = found
    if manifest.get("manifests"):  # an index: take linux/amd64
        entry = next(
            m
            for m in manifest["manifests"]
            if m.get("platform", {}).get("os") == "linux" and m["platform"].get("architecture") == "amd64"
        )
        return await _pull_with(client, store, repo, entry["digest"])
    config = await client.image_config(repo, manifest)
    layers = []
    for desc, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
        if not store.has(desc["digest"]):
            tmp = store.root / ("pull-" + desc["digest"].removeprefix("sha256:"))
            await client.download_blob(repo, desc["digest"], tmp)
            got, _ = store.put_file(tmp)
            if got != desc["digest"]:
                raise SystemExit(f"blob {desc['digest']} from {client.registry}/{repo} has digest {got}")
        layers.append(
            Layer(desc["digest"], desc["size"], DOCKER_TO_OCI.get(desc["mediaType"], desc["mediaType"]), diff_id)
        )
    return BaseImage(f"{client.registry}/{repo}@{digest}", config, layers)


def write_image(
    store: Store, base: BaseImage | None, layers: list[Layer], env: dict[str, str], workdir: str = ""
) -> tuple[str, int]:
    """Config and manifest for base + layers, with env set; returns the manifest's digest and size."""
    config = (
        json.loads(json.dumps(base.config))
        if base
        else {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    )
    cfg = config.setdefault("config", {})
    current = dict(e.split("=", 1) for e in cfg.get("Env") or [])
    current.update(env)
    if current:
        cfg["Env"] = [f"{k}={v}" for k, v in current.items()]
    if workdir:
        cfg["WorkingDir"] = workdir
    config["rootfs"]["diff_ids"] = [*config["rootfs"]["diff_ids"], *(layer.diff_id for layer in layers)]
    if "history" in config:
        config["history"] = [*config["history"], *({"created_by": layer.comment} for layer in layers)]
    config_digest, config_size = store.put_json(config)
    all_layers = [*(base.layers if base else []), *layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size} for layer in all_layers],
    }
    return store.put_json(manifest)


def write_layout(store: Store, manifest: tuple[str, int], out: pathlib.Path) -> None:
    """An OCI layout folder (index.json, oci-layout, blobs/) holding one image from the store."""
    digest, size = manifest
    blobs = out / "blobs/sha256"
    if out.exists():
        shutil.rmtree(out)
    blobs.mkdir(parents=True)
    wanted = [digest]
    doc = json.loads(store.path(digest).read_bytes())
    wanted += [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]
    for d in wanted:
        os.link(store.path(d), blobs / d.removeprefix("sha256:"))
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (out / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": size}],
            },
            sort_keys=True,
            separators=(",", ":"),
        )
    )
