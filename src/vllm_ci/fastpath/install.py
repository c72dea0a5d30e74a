"""The fast path's install writer: vLLM added to an image by file operations only, as build's wheel
installs it (uv, UV_COMPILE_BYTECODE=1): the extension layer, the vllm/ files with build's _version.py,
rust-build's artifacts, their bytecode, and the dist-info with its RECORD, written from what the parent
stages recorded in their image configs, so no layer below is pulled."""

from __future__ import annotations

import base64
import csv
import dataclasses
import fnmatch
import hashlib
import io
import json
import pathlib
import tempfile
import tomllib
from typing import Any

import dagger
from dagger import dag

from stagecache import StageContext
from stagecache.layered import only
from vllm_ci.build import Build
from vllm_ci.fastpath import program
from vllm_ci.steps import Step

# Excluded from the package layer: what a wheel would not ship, at any depth (a folder so named with all it
# holds). One spec, two readers: the engine's filter (PACKAGE_EXCLUDE) and in_package, which lists the layer
# from the stage cache's manifest without a copy of vllm/ in the engine.
PACKAGE_EXCLUDED_NAMES = ("__pycache__",)
PACKAGE_EXCLUDED_SUFFIXES = (".pyc", ".so")
PACKAGE_EXCLUDE = [*(f"**/{name}" for name in PACKAGE_EXCLUDED_NAMES), *(f"**/*{s}" for s in PACKAGE_EXCLUDED_SUFFIXES)]
# vllm/_version.py: build's setup.py writes it each build, so it is not in the package stage's layers but in
# a small one of its own above them.
VERSION_FILE = "_version.py"
# What vLLM's installed metadata reads of the checkout beyond csrc-build's wheel: pyproject.toml, and the
# readme and license files it names (vLLM's and the example's).
PYPROJECT = "pyproject.toml"
METADATA_INPUTS = (PYPROJECT, "README.md", "LICENSE")
# On extension's image: csrc-build's installed dist-info (texts, RECORD rows) and _version.py; on
# rust-installed's: the RECORD rows of what it holds. JSON in the image config, so vLLM's dist-info is
# written without pulling either layer.
RECORD_LABEL = "org.vllm-ci.record"
# The runtime-python stage: the runtime's interpreter alone, in this folder of vllm-runtime-base first.
RUNTIME_PYTHON_ROOT = "/runtime-python"
RUNTIME_PYTHON = "/usr/local/bin/runtime-python"  # in runtime-python's image: the runtime's python3
# What uv's UV_COMPILE_BYTECODE=1 does after an install: compile every .py at optimization level 0,
# timestamp-checked (no SOURCE_DATE_EPOCH), a file that does not compile skipped, not fatal.
COMPILE_BYTECODE = "import compileall, sys; compileall.compile_dir(sys.argv[1], quiet=2, workers=0)"
# An installed dist-info folder's texts and a _version.py, as JSON.
DIST_INFO_TEXTS = program("dist_info_texts.py")
# The stage that adds rust-build's artifacts, for a stage set whose extension does not hold them.
RUST_INSTALLED = "rust-installed"
# The lines of a setuptools-scm _version.py that name the version.
VERSION_LINES = ("__version__ = ", "__version_tuple__ = ")


def package_files(source: dagger.Directory, *, version_file: bool = True) -> dagger.Directory:
    """The vllm/ files the package layers add: the source's, less what a wheel would not ship (and less
    the version file, for the package stage)."""
    exclude = PACKAGE_EXCLUDE if version_file else [*PACKAGE_EXCLUDE, VERSION_FILE]
    return dag.directory().with_directory(".", source.with_new_directory("vllm").directory("vllm"), exclude=exclude)


def record_rows(folder: pathlib.Path, prefix: str) -> list[list[str]]:
    """RECORD rows (path, sha256=<urlsafe base64>, size) of every file under a folder, as an installer writes them."""
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rows.append(data_row(prefix + path.relative_to(folder).as_posix(), path.read_bytes()))
    return rows


def record_row(path: str, sha256_hex: str, size: int) -> list[str]:
    """One RECORD row: path, sha256=<urlsafe base64 of the digest, unpadded>, size."""
    digest = base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).rstrip(b"=").decode()
    return [path, f"sha256={digest}", str(size)]


def in_package(path: str) -> bool:
    """Whether a path under vllm/ is one package_files keeps: no part of it a name or a suffix PACKAGE_EXCLUDE names."""
    return not any(
        part in PACKAGE_EXCLUDED_NAMES or part.endswith(PACKAGE_EXCLUDED_SUFFIXES) for part in path.split("/")
    )


async def package_rows(ctx: StageContext) -> list[list[str]]:
    """RECORD rows of the package layer's vllm/ files, from the digests the stage cache took of the
    source (no second export, no listing in the engine): the stage reads vllm/, so its manifest holds them."""
    return [
        record_row(path, file.sha256, file.size)
        for path, file in sorted(ctx.files.items())
        if path.startswith("vllm/") and in_package(path.removeprefix("vllm/")) and not file.entry.startswith("link:")
    ]


def data_row(path: str, data: bytes) -> list[str]:
    """The RECORD row of a file, from its bytes."""
    return record_row(path, hashlib.sha256(data).hexdigest(), len(data))


async def rows_of(directory: dagger.Directory, prefix: str) -> list[list[str]]:
    """RECORD rows of a directory's files, hashed here (exported to a temporary folder first)."""
    with tempfile.TemporaryDirectory(prefix="vllm-ci-record-") as tmp:
        await directory.export(tmp)
        return record_rows(pathlib.Path(tmp), prefix)


def build_version(csrc_version: str, git_version: str, pretend_version: str) -> str:
    """The version of build's wheel, from csrc-build's: both come from the same setup.py with the same
    target, so build's is setuptools-scm's version (git_version) with the suffix setup.py added to
    csrc-build's pretend one (`+cu130`, `+empty`, or none); csrc-build's own when it was not the pretend
    one (a project with a static version) or no version was derived."""
    if not git_version or not csrc_version.startswith(pretend_version):
        return csrc_version
    suffix = csrc_version[len(pretend_version) :].removeprefix(".")
    if not suffix:
        return git_version
    return git_version + ("." if "+" in git_version else "+") + suffix


def version_file(template: str, version: str) -> str:
    """vllm/_version.py as setuptools-scm writes it for a version: csrc-build's file (the same
    setuptools-scm release wrote it), with the version lines setuptools-scm renders for this one."""
    from setuptools_scm import dump_version

    with tempfile.TemporaryDirectory(prefix="vllm-ci-version-") as tmp:
        dump_version(root=tmp, version=version, write_to="_version.py", scm_version=None)
        rendered = pathlib.Path(tmp, "_version.py").read_text().splitlines(keepends=True)
    versions = {line.partition(" = ")[0]: line for line in rendered if line.startswith(VERSION_LINES)}
    return "".join(
        versions.get(line.partition(" = ")[0], line) if line.startswith(VERSION_LINES) else line
        for line in template.splitlines(keepends=True)
    )


def dist_info_of(wheel: str) -> str:
    """The dist-info folder an installer makes of a wheel (a wheel's name starts with its dist-info's)."""
    return "-".join(wheel.split("-")[:2]) + ".dist-info"


async def with_record(
    layer: dagger.Container, installed: dagger.Container, site: str, dist_info: str, pretend_version: str
) -> dagger.Container:
    """An extension layer with what the install writer reads of it in its config (RECORD_LABEL): the dist-info
    texts and RECORD rows and the _version.py the wheel installed under `site` of `installed`, and the version
    the compile was given."""
    texts = json.loads(
        await installed.with_exec(
            ["python3", "-c", DIST_INFO_TEXTS, f"{site}/{dist_info}", f"{site}/vllm/_version.py"]
        ).stdout()
    )
    return layer.with_label(
        RECORD_LABEL, json.dumps({"dist_info": dist_info, "pretend_version": pretend_version, **texts})
    )


async def record_of(image: dagger.Container) -> Any:
    """What a parent stage recorded in its RECORD_LABEL (csrc-build's and rust-build's images carry one)."""
    text = await image.label(RECORD_LABEL)
    if text is None:
        raise ValueError(f"the parent image has no {RECORD_LABEL} label")
    return json.loads(text)


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """An installed distribution's metadata folder: its name and its files' texts, by path in it."""

    name: str
    files: dict[str, str]


async def dist_info_installed(ctx: StageContext, extension: dict, version: str, version_text: str | None) -> DistInfo:
    """vLLM's dist-info as uv writes it installing build's wheel: csrc-build's (from extension's image
    config, never its layer) under build's version, with RECORD rows for the package layer's files (the
    vllm/ sources, _version.py, rust-build's artifacts) in place of or beside csrc-build's, sorted as uv sorts them."""
    # rust-build's artifacts, where a stage of their own adds them (the CPU wheel ships them: in extension's rows).
    rust_rows = await record_of(ctx.parents["rust-installed"]) if RUST_INSTALLED in ctx.parents else []
    old = extension["dist_info"]
    csrc_version = metadata_version(extension["files"]["METADATA"])
    dist_info = old.removesuffix(f"-{csrc_version}.dist-info") + f"-{version}.dist-info"
    files = dist_info_as_built(extension["files"], version, *await readme_and_licenses(ctx))
    rows = {row[0]: row for row in extension["rows"] if not row[0].startswith(f"{old}/")}
    rows.update({f"{dist_info}/{path}": data_row(f"{dist_info}/{path}", text.encode()) for path, text in files.items()})
    rows[f"{dist_info}/RECORD"] = [f"{dist_info}/RECORD", "", ""]
    rows.update({row[0]: row for row in [*await package_rows(ctx), *rust_rows]})
    if version_text is not None:
        rows["vllm/_version.py"] = data_row("vllm/_version.py", version_text.encode())
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows[path] for path in sorted(rows))
    return DistInfo(dist_info, {**files, "RECORD": text.getvalue()})


def dist_info_as_built(
    files: dict[str, str], version: str, readme: str | None, licenses: dict[str, str]
) -> dict[str, str]:
    """csrc-build's dist-info files (RECORD aside, by path in the folder) as build's wheel has them:
    build's version in METADATA and in direct_url.json's wheel name, the readme and license files."""
    csrc_version = metadata_version(files["METADATA"])
    built = {**files, **{f"licenses/{path}": text for path, text in licenses.items()}}
    metadata = metadata_as_built(files["METADATA"], readme, licenses)
    built["METADATA"] = metadata.replace(f"\nVersion: {csrc_version}\n", f"\nVersion: {version}\n", 1)
    if "direct_url.json" in files:  # names the wheel installed: build's
        built["direct_url.json"] = files["direct_url.json"].replace(f"-{csrc_version}-", f"-{version}-")
    return built


def metadata_inputs(pyproject: str) -> tuple[str | None, list[str]]:
    """The readme and the license-files patterns a pyproject.toml names."""
    project = tomllib.loads(pyproject).get("project", {})
    readme = project.get("readme")
    return (readme if isinstance(readme, str) else (readme or {}).get("file")), list(project.get("license-files", []))


async def readme_and_licenses(ctx: StageContext) -> tuple[str | None, dict[str, str]]:
    """The readme and the license files the checkout's pyproject.toml names, as texts: what build's
    wheel's metadata holds and csrc-build's lacks (it copies in neither). Read from those files alone
    (stagecache.layered.only), not the whole source: the engine's glob picks the license files among the
    ones a looser match of each pattern finds in the files the stage reads (`*` across folders too)."""
    readme, patterns = metadata_inputs(await only(ctx.source, [PYPROJECT]).file(PYPROJECT).contents())
    loose = [pattern.replace("**/", "*") for pattern in patterns]
    candidates = {path for path in ctx.files if any(fnmatch.fnmatchcase(path, pattern) for pattern in loose)}
    named = only(ctx.source, sorted({*candidates, *([readme] if readme else [])}))
    licenses = {
        path: await named.file(path).contents() for pattern in patterns for path in sorted(await named.glob(pattern))
    }
    return (await named.file(readme).contents() if readme else None), licenses


def metadata_as_built(metadata: str, readme: str | None, license_files: dict[str, str]) -> str:
    """csrc-build's METADATA as build's setup.py writes it from the whole checkout: csrc-build copies in
    neither the readme nor the license files pyproject.toml names, so this adds them where setuptools'
    writer puts them: License-File after the other headers (before the requirements), `Dynamic:
    license-file` among the sorted Dynamic lines, the readme as the body after a blank line."""
    headers, blank, body = metadata.partition("\n\n")
    lines = headers.splitlines()
    named = {line for line in lines if line.startswith("License-File: ")}
    added = [f"License-File: {path}" for path in license_files if f"License-File: {path}" not in named]
    if added:
        at = next(
            (
                i
                for i, line in enumerate(lines)
                if line.startswith(("Requires-Dist: ", "Provides-Extra: ", "Dynamic: "))
            ),
            len(lines),
        )
        lines[at:at] = added
        dynamic = sorted({*(line for line in lines if line.startswith("Dynamic: ")), "Dynamic: license-file"})
        lines = [line for line in lines if not line.startswith("Dynamic: ")] + dynamic
    text = "\n".join(lines) + "\n"
    if body or blank:
        return text + "\n" + body
    if readme:
        return text + "\n" + readme + ("" if readme.endswith("\n") else "\n")
    return text


def metadata_version(metadata: str) -> str:
    """The Version field of a METADATA file."""
    return next(line.partition(": ")[2] for line in metadata.splitlines() if line.startswith("Version: "))


def with_bytecode(site_vllm: str, package: dagger.Directory, ctx: StageContext) -> dagger.Directory:
    """Package files with their bytecode as uv compiles it after installing (UV_COMPILE_BYTECODE=1), by the
    runtime's own Python (runtime-python), with the files where the image has them: their __pycache__
    folders, which record each file's mtime and size as the image holds it."""
    compiled = (
        ctx.parents["runtime-python"]
        .with_mounted_directory(site_vllm, package)
        .with_exec([RUNTIME_PYTHON, "-I", "-S", "-c", COMPILE_BYTECODE, site_vllm])
        .directory(site_vllm)
    )
    return package.with_directory(".", compiled, include=["**/__pycache__/*.pyc"])


async def vllm_installed(build: Build, ctx: StageContext) -> Step:
    """Adding vLLM to an image by file operations only: the extension layer, the package stage's layers
    (the Python files and their bytecode), rust-build's artifacts (vllm-rs) where the wheel puts them (the
    rust-installed stage's, when the stage set has one),
    build's _version.py and its bytecode, then vLLM's dist-info as build's wheel installs it."""
    extension = await record_of(ctx.parents["extension"])
    csrc_version = metadata_version(extension["files"]["METADATA"])
    version = build_version(csrc_version, build.value("git_version"), extension["pretend_version"])
    # build's setup.py writes _version.py with setuptools-scm's version (csrc-build's with its pretend one).
    changed = version != csrc_version and extension["version_file"] is not None
    version_text = version_file(extension["version_file"], build.value("git_version")) if changed else None
    # build's _version.py, else the checkout's own if it has one (ctx.files: what the client hashed, no engine call).
    version_layer = None
    if version_text is not None:
        version_layer = dag.directory().with_new_file(VERSION_FILE, version_text)
    elif f"vllm/{VERSION_FILE}" in ctx.files:
        path = f"vllm/{VERSION_FILE}"
        version_layer = dag.directory().with_file(VERSION_FILE, only(ctx.source, [path]).file(path))
    dist_info = await dist_info_installed(ctx, extension, version, version_text)
    site = build.site_packages()
    site_vllm = f"{site}/vllm"
    # Directories added, not with_new_file: a file op on the imported image would pull all of it.
    folder = dag.directory()
    for path, text in dist_info.files.items():
        folder = folder.with_new_file(path, text)

    merged = [ctx.parents[name].rootfs() for name in ("extension", "package", RUST_INSTALLED) if name in ctx.parents]

    def step(image: dagger.Container) -> dagger.Container:
        installed = image
        for rootfs in merged:
            installed = installed.with_directory("/", rootfs)
        if version_layer is not None:
            installed = installed.with_directory(site_vllm, with_bytecode(site_vllm, version_layer, ctx))
        return installed.with_directory(f"{site}/{dist_info.name}", folder)

    return step
