"""Build the engine's builtin SDK content: the Go SDK image and the Python SDK image.

Called by ci/sdk-images with the downloaded, hash-checked inputs. Everything that goes into
the images is a recipe input; the images are cached under the recipe's hash, so the same
inputs give the same digests (and our own layers are byte-reproducible anyway, see oci.py).

Go SDK image: vLLM CI's build base (git, CA certificates, a C compiler) from the local
registry, by digest; the Go toolchain at /usr/local/go; `codegen` built from the engine's
own source; /go/pkg/mod and /root/.cache/go-build warmed by building our Python runtime
module once, inside the engine, exactly as the engine's Go SDK builds it.

Python SDK image: a rootfs of files only: the SDK (sdk/python of the engine's module zip,
without its engine-provisioning parts), dist/uv and dist/uvx (PyPI's uv wheel),
dist/codegen (a zipapp of the SDK's client generator with graphql-core), runtime/ (our
Go runtime module, ci/sdk/python-runtime) and base-image (the Python image that modules
run on, pinned by digest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import zipfile
from typing import Final

import oci

HERE: Final = pathlib.Path(__file__).resolve().parent
RUNTIME_SRC: Final = HERE / "python-runtime"
# Files the Go SDK's codegen writes into the runtime module each time it is loaded.
RUNTIME_GENERATED: Final = ("dagger.gen.go", "internal")
GO_ENV: Final = {
    "GOPATH": "/go",
    "GOTOOLCHAIN": "auto",
    "PATH": "/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}
# Parts of sdk/python that the SDK image carries (the engine-provisioning code stays out).
SDK_PARTS: Final = ("pyproject.toml", "uv.lock", "LICENSE", "README.md", "src", "codegen")
SDK_LEFT_OUT: Final = ("src/dagger/_engine", "src/dagger/provisioning")
# Zip entries' date: fixed, so the codegen zipapp is reproducible.
ZIP_DATE: Final = (2025, 1, 1, 0, 0, 0)


def tree_hash(root: pathlib.Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 over a folder's relative paths, modes and contents."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(skip):
            continue
        h.update(rel.encode() + b"\0" + oct(stat.S_IMODE(path.lstat().st_mode)).encode() + b"\0")
        h.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
    return h.hexdigest()


def copy_tree(src: pathlib.Path, dst: pathlib.Path, skip: tuple[str, ...] = ()) -> None:
    """Copy a folder, leaving out relative paths that start with any of `skip`."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if rel.startswith(skip):
            continue
        out = dst / rel
        if path.is_dir() and not path.is_symlink():
            out.mkdir(parents=True, exist_ok=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out, follow_symlinks=False)


def unzip_toolchain(zip_path: pathlib.Path, out: pathlib.Path) -> None:
    """The Go toolchain module zip as a GOROOT; module zips keep no modes, so mark the
    binaries executable as the go command does when it installs a toolchain."""
    if (out / ".complete").exists():
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            name = info.filename.split("/", 2)[2]  # drop golang.org/toolchain@<version>/
            if not name or name.endswith("/"):
                continue
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            exe = name.startswith("bin/") or (name.startswith("pkg/tool/") and name.count("/") == 3)
            target.chmod(0o755 if exe else 0o644)
    (out / ".complete").touch()


def build_codegen(tree: pathlib.Path, goroot: pathlib.Path, out: pathlib.Path) -> None:
    """The engine's `codegen`, built with the image's own toolchain: codegen writes its Go
    version into the go.mod of the modules it generates, and the image's go must accept it."""
    env = {
        **os.environ,
        "GOROOT": str(goroot),
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOFLAGS": "-mod=mod -buildvcs=false",
        "GONOSUMDB": "github.com/dagger/dagger,dagger.io/dagger",
    }
    subprocess.run(
        [str(goroot / "bin/go"), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "./cmd/codegen"],
        cwd=tree,
        env=env,
        check=True,
    )


def codegen_zipapp(sdk: pathlib.Path, graphql_wheel: pathlib.Path, out: pathlib.Path) -> None:
    """A zipapp of the SDK's client generator and graphql-core (pure Python both)."""
    entries: dict[str, bytes] = {
        "__main__.py": b"import sys\n\nfrom codegen.cli import main\n\nsys.exit(main())\n",
    }
    pkg = sdk / "codegen/src/codegen"
    for path in sorted(pkg.rglob("*.py")):
        entries["codegen/" + path.relative_to(pkg).as_posix()] = path.read_bytes()
    with zipfile.ZipFile(graphql_wheel) as whl:
        for name in whl.namelist():
            if name.startswith("graphql/") and not name.endswith("/"):
                entries[name] = whl.read(name)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entries[name], compresslevel=6)
    out.chmod(0o755)


def uv_binaries(wheel: pathlib.Path, out: pathlib.Path) -> None:
    """uv and uvx from the wheel's scripts."""
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as whl:
        for name in whl.namelist():
            if ".data/scripts/" in name:
                target = out / name.rsplit("/", 1)[1]
                target.write_bytes(whl.read(name))
                target.chmod(0o755)


async def warm_go_caches(
    goroot: pathlib.Path, codegen: pathlib.Path, base_ref: str, runtime: pathlib.Path, out: pathlib.Path
) -> None:
    """Build the runtime module once in the Go SDK image (without caches) as the engine's Go
    SDK does (codegen generate-module, go build), and export the module and build caches it
    filled, with the go.mod and go.sum codegen wrote."""
    import dagger
    from dagger import dag

    goproxy = subprocess.run(["go", "env", "GOPROXY"], capture_output=True, text=True, check=True).stdout.strip()
    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        ctr = dag.container().from_(base_ref)
        for key, value in GO_ENV.items():
            ctr = ctr.with_env_variable(key, value)
        ctr = (
            ctr.with_directory("/usr/local/go", dag.host().directory(str(goroot), exclude=[".complete"]))
            .with_file("/usr/local/bin/codegen", dag.host().file(str(codegen)))
            .with_exec(["mkdir", "-p", "/go/pkg/mod", "/root/.cache/go-build"])
            # Only to fill the caches here; modules load with the engine's own setting.
            .with_env_variable("GOPROXY", goproxy)
            .with_directory("/src", dag.host().directory(str(runtime), exclude=list(RUNTIME_GENERATED)))
            .with_workdir("/src")
            .with_exec(["codegen", "introspect", "-o", "/schema.json"], experimental_privileged_nesting=True)
            .with_exec(
                [
                    "codegen",
                    "generate-module",
                    "--output",
                    "/src",
                    "--module-source-path",
                    "/src",
                    "--module-name",
                    "python-sdk",
                    "--introspection-json-path",
                    "/schema.json",
                ]
            )
            .with_exec(["go", "build", "-ldflags", "-s -w", "-o", "/runtime", "."])
        )
        await ctr.directory("/go/pkg/mod").export(str(out / "gomod"))
        await ctr.directory("/root/.cache/go-build").export(str(out / "gobuild"))
        await ctr.file("/src/go.mod").export(str(out / "go.mod"))
        await ctr.file("/src/go.sum").export(str(out / "go.sum"))


def normalize_go_build_cache(cache: pathlib.Path) -> None:
    """Make the warmed build cache byte-stable. Action entries carry their creation time: set
    it to the layers' fixed time (only trimming reads it). Module-index entries ("go index")
    are keyed by file metadata of the folders they index, which differs from one build to the
    next: left out (the go command rebuilds them in milliseconds). trim.txt is left out too,
    so the first build in the engine trims what it did not use."""
    (cache / "trim.txt").unlink(missing_ok=True)
    size = 2 + 1 + 64 + 1 + 64 + 1 + 20 + 1 + 20 + 1  # "v1 <action> <output> <size> <time>\n"
    for entry in cache.glob("??/*-a"):
        data = entry.read_bytes()
        if not data.startswith(b"v1 ") or len(data) != size:
            continue
        output_id = data.split()[2].decode()
        output = cache / output_id[:2] / f"{output_id}-d"
        if output.exists() and output.read_bytes().startswith(b"go index"):
            entry.unlink()
            output.unlink()
            continue
        entry.write_bytes(data[:-21] + b"%20d\n" % (oci.EPOCH * 10**9))


def build(args: argparse.Namespace) -> tuple[dict[str, str], pathlib.Path]:
    """The two images' manifest digests, and the folder holding their layouts."""
    work: pathlib.Path = args.work
    tree: pathlib.Path = args.dagger_tree
    store = oci.Store(work / "store")
    base_digest = oci.resolve_digest(args.registry, args.base_repo, args.base_tag)
    base_ref = f"{args.registry}/{args.base_repo}@{base_digest}"
    recipe = {
        "v": 1,
        "scripts": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in [HERE.parent / "sdk-images", HERE / "images.py", HERE / "oci.py"]
        },
        "runtime": tree_hash(RUNTIME_SRC, RUNTIME_GENERATED),
        "dagger": [args.dagger_zip_sha256, args.dagger_go_sdk_zip_sha256, tree_hash(HERE.parent / "distconsts")],
        "inputs": {p.name: oci.sha256_file(p) for p in [args.go_zip, args.uv_wheel, args.graphql_wheel]},
        "base": base_ref,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    done = work / "built" / key
    if (done / "digests.json").exists():
        print(f"cached: {done} ({json.dumps(recipe, sort_keys=True)})")
        return json.loads((done / "digests.json").read_text()), done

    stage = work / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    goroot = work / "toolchain" / args.go_zip.stem
    unzip_toolchain(args.go_zip, goroot)
    build_codegen(tree, goroot, stage / "codegen")

    # The runtime module as it ships: our sources (go.mod and go.sum included).
    runtime = stage / "runtime"
    copy_tree(RUNTIME_SRC, runtime, RUNTIME_GENERATED)

    import anyio

    anyio.run(warm_go_caches, goroot, stage / "codegen", base_ref, runtime, stage / "warm")
    for name in ("go.mod", "go.sum"):
        if not (runtime / name).exists() or (runtime / name).read_bytes() != (stage / "warm" / name).read_bytes():
            print(
                f"note: codegen wrote a different {name} for the runtime; keep its version in "
                f"{RUNTIME_SRC / name} (now: {stage / 'warm' / name})",
                file=sys.stderr,
            )
    normalize_go_build_cache(stage / "warm/gobuild")

    # -- Go SDK image ------------------------------------------------------------------------
    base = oci.pull(store, args.registry, args.base_repo, base_digest)
    layers = []
    for comment, trees, skip in [
        ("go toolchain", [("/usr/local/go", goroot)], ["usr/local/go/.complete"]),
        ("codegen", [("/usr/local/bin/codegen", stage / "codegen")], []),
        # The checksum database's copies change with time: not kept (go.sum pins what is used).
        ("go module cache", [("/go/pkg/mod", stage / "warm/gomod")], ["go/pkg/mod/cache/download/sumdb"]),
        ("go build cache", [("/root/.cache/go-build", stage / "warm/gobuild")], []),
    ]:
        tar = stage / "layer.tar"
        oci.write_tar(tar, trees, skip)
        layers.append(oci.add_tar_layer(store, tar, comment))
    go_manifest = oci.write_image(store, base, layers, GO_ENV)

    # -- Python SDK image ----------------------------------------------------------------------
    root = stage / "python-sdk"
    sdk = tree / "sdk/python"
    root.mkdir()
    for part in SDK_PARTS:
        src = sdk / part
        if src.is_dir():
            copy_tree(
                src, root / part, tuple(p.removeprefix(part + "/") for p in SDK_LEFT_OUT if p.startswith(part + "/"))
            )
        else:
            shutil.copy2(src, root / part)
    uv_binaries(args.uv_wheel, root / "dist")
    codegen_zipapp(sdk, args.graphql_wheel, root / "dist/codegen")
    copy_tree(RUNTIME_SRC, root / "runtime", RUNTIME_GENERATED)
    (root / "base-image").write_text(base_ref + "\n")
    tar = stage / "layer.tar"
    oci.write_tar(tar, [("/", root)], ["src/dagger/_engine", "src/dagger/provisioning"])
    py_manifest = oci.write_image(store, None, [oci.add_tar_layer(store, tar, "python sdk")], {})

    tmp = work / "built" / (key + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    oci.write_layout(store, go_manifest, tmp / "go-sdk")
    oci.write_layout(store, py_manifest, tmp / "python-sdk")
    digests = {"DAGGER_GO_SDK_MANIFEST_DIGEST": go_manifest[0], "DAGGER_PYTHON_SDK_MANIFEST_DIGEST": py_manifest[0]}
    (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True))
    (tmp / "digests.json").write_text(json.dumps(digests, indent=2))
    shutil.rmtree(done, ignore_errors=True)
    os.replace(tmp, done)
    shutil.rmtree(stage)
    print(f"built: {done}")
    return digests, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=pathlib.Path, required=True)
    parser.add_argument("--dagger-tree", type=pathlib.Path, required=True)
    parser.add_argument("--dagger-zip-sha256", required=True)
    parser.add_argument("--dagger-go-sdk-zip-sha256", required=True)
    parser.add_argument("--go-zip", type=pathlib.Path, required=True)
    parser.add_argument("--uv-wheel", type=pathlib.Path, required=True)
    parser.add_argument("--graphql-wheel", type=pathlib.Path, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--base-repo", default="library/vllm-ci-build")
    parser.add_argument("--base-tag", default="bookworm")
    parser.add_argument("--digests-out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    digests, done = build(args)
    # work/current: the layouts of these digests, for ci/sdk-images to install.
    current = args.work / "current"
    tmp = args.work / "current.new"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(done.relative_to(args.work))
    os.replace(tmp, current)
    # Older builds and the blobs only they held are not kept.
    for old in (args.work / "built").iterdir():
        if old != done:
            shutil.rmtree(old)
    for blob in (args.work / "store/blobs/sha256").iterdir():
        if blob.stat().st_nlink == 1:
            blob.unlink()
    args.digests_out.write_text("".join(f"{k}={v}\n" for k, v in digests.items()))
    print(json.dumps(digests, indent=2))


if __name__ == "__main__":
    main()
