"""What the stage sections share: paths of the images, the build's secrets by name, and the fast
path that installs vLLM by file operations (no RUN after it)."""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import json
import pathlib
import tempfile

import dagger
from dagger import dag

from stagecache import StageContext

from vllm_ci.args import BuildArgs
from vllm_ci.steps import Step

WORKSPACE = "/workspace"
RUNTIME_WORKSPACE = "/vllm-workspace"
DIST = f"{WORKSPACE}/dist"
EXTENSION_ROOT = "/extension-root"
# Instructions upstream writes alike in several stages (the same text, so one constant).
UV_BUILD_ENV = ("ENV UV_HTTP_TIMEOUT=500", 'ENV UV_INDEX_STRATEGY="unsafe-best-match"', "ENV UV_LINK_MODE=copy")
WORKDIR = "WORKDIR /workspace"
COMPAT = "ENV VLLM_ENABLE_CUDA_COMPATIBILITY=0"
ARCH_ENV = "ENV TORCH_CUDA_ARCH_LIST=${torch_cuda_arch_list}"
EVERYTHING = ("**",)  # COPY . . / ADD . : the whole checkout (less what the upload leaves out)
# The build's secrets, by the id upstream's RUN mounts them with (--mount=type=secret,id=...).
AWS_CREDENTIALS = "aws-credentials"
# Wheels are zips with timestamps: pin them so the same inputs give the same bytes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can hold
# Excluded from the package layer: what a wheel would not ship.
PACKAGE_EXCLUDE = ["**/__pycache__", "**/*.pyc", "**/*.so"]


# The deviation every image with vLLM in it makes, in one sentence.
FLOOR = ("vLLM is added by file layers (csrc-build's extension and the EP kernel wheels as installed, the vllm/ "
         "files with their bytecode, compiled by the runtime's own Python in runtime-python, and rust-build's vllm-rs, "
         "linked on PATH in vllm-base), not by installing build's wheel with a RUN that would pull every layer below")
# On extension's and rust-installed's images: the RECORD rows of what they hold, as JSON in the image
# config, so the package layer's RECORD is written without pulling either layer.
RECORD_LABEL = "org.vllm-ci.record"
PRETEND_VERSION = "SETUPTOOLS_SCM_PRETEND_VERSION"  # setuptools-scm takes this instead of asking git
RUST_ARTIFACTS = "/workspace/vllm"  # where rust-build leaves vllm-rs and the PyO3 modules
# The runtime-python stage: the runtime's interpreter alone, in this folder of vllm-runtime-base first.
RUNTIME_PYTHON_ROOT = "/runtime-python"
RUNTIME_PYTHON = "/usr/local/bin/runtime-python"  # in runtime-python's image: the runtime's python3
# What uv's UV_COMPILE_BYTECODE=1 does after an install: compile every .py at optimization level 0,
# timestamp-checked (no SOURCE_DATE_EPOCH), a file that does not compile skipped, not fatal.
COMPILE_BYTECODE = "import compileall, sys; compileall.compile_dir(sys.argv[1], quiet=2, workers=0)"


def without_git(ctx: StageContext) -> StageContext:
    """The stage's context with an empty .git in its source: what RUNs that bind .git get, since the
    uploaded source leaves .git out (and a key never reads it)."""
    return dataclasses.replace(ctx, source=ctx.source.with_new_directory(".git"))


def with_git_version(version: str, step: Step) -> Step:
    """A RUN that binds .git, given the version setuptools-scm would derive there (the host derived it,
    vllm_ci.version): SETUPTOOLS_SCM_PRETEND_VERSION for that RUN only; no version: the RUN as it is."""
    if not version:
        return step
    return lambda ctr: step(ctr.with_env_variable(PRETEND_VERSION, version)).without_env_variable(PRETEND_VERSION)


def package_files(source: dagger.Directory) -> dagger.Directory:
    """The vllm/ files the package layer adds: the source's, less what a wheel would not ship."""
    return dag.directory().with_directory(".", source.directory("vllm"), exclude=PACKAGE_EXCLUDE)


def record_rows(folder: pathlib.Path, prefix: str) -> list[list[str]]:
    """RECORD rows (path, sha256=<urlsafe base64>, size) of every file under a folder, as an installer writes them."""
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        rows.append(record_row(prefix + path.relative_to(folder).as_posix(), hashlib.sha256(data).hexdigest(), len(data)))
    return rows


def record_row(path: str, sha256_hex: str, size: int) -> list[str]:
    """One RECORD row: path, sha256=<urlsafe base64 of the digest, unpadded>, size."""
    digest = base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).rstrip(b"=").decode()
    return [path, f"sha256={digest}", str(size)]


async def package_rows(ctx: StageContext) -> list[list[str]]:
    """RECORD rows of the package layer's vllm/ files, from the digests the stage cache took of the
    source (no second export): the paths are the layer's, as the engine filters them."""
    layer = await package_files(ctx.source).glob("**")
    files = {path: ctx.files.get(f"vllm/{path}") for path in layer}
    return [record_row(f"vllm/{path}", file.sha256, file.size)
            for path, file in sorted(files.items()) if file and not file.entry.startswith("link:")]


async def rows_of(directory: dagger.Directory, prefix: str) -> list[list[str]]:
    """RECORD rows of a directory's files, hashed here (exported to a temporary folder first)."""
    with tempfile.TemporaryDirectory(prefix="vllm-ci-record-") as tmp:
        await directory.export(tmp)
        return record_rows(pathlib.Path(tmp), prefix)


@dataclasses.dataclass(frozen=True)
class Record:
    """An installed distribution's RECORD file: where it is in the image, and its text."""

    path: str
    text: str


async def installed_record(args: BuildArgs, ctx: StageContext) -> Record | None:
    """vLLM's RECORD as uv writes it installing build's wheel: extension's rows for csrc-build's wheel,
    with the package layer's files (the vllm/ sources, rust-build's artifacts) in place of or beside
    them, sorted as uv sorts them. Read from extension's and rust-installed's image configs, never their
    layers; None when either carries no rows (extension's RECORD then stays)."""
    label = await ctx.parents["extension"].label(RECORD_LABEL)
    if not label:
        return None
    installed = json.loads(label)
    rust_rows = await ctx.parents["rust-installed"].label(RECORD_LABEL)
    if not rust_rows:
        return None
    rows = {row[0]: row for row in installed["rows"]}
    rows.update({row[0]: row for row in [*await package_rows(ctx), *json.loads(rust_rows)]})
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows[path] for path in sorted(rows))
    return Record(f"{args.site_packages()}/{installed['dist_info']}/RECORD", text.getvalue())


def bytecode(site_vllm: str, ctx: StageContext) -> dagger.Directory:
    """The package layer's bytecode as uv compiles it after installing (UV_COMPILE_BYTECODE=1), by the
    runtime's own Python (runtime-python), with the files where the image has them: their __pycache__
    folders, which record each file's mtime and size as the image holds it."""
    compiled = (
        ctx.parents["runtime-python"]
        .with_mounted_directory(site_vllm, package_files(ctx.source))
        .with_exec([RUNTIME_PYTHON, "-I", "-S", "-c", COMPILE_BYTECODE, site_vllm])
        .directory(site_vllm)
    )
    return dag.directory().with_directory(".", compiled, include=["**/__pycache__/*.pyc"])


async def vllm_installed(args: BuildArgs, ctx: StageContext) -> Step:
    """Adding vLLM to an image by file operations only: the extension layer, the Python package files,
    rust-build's artifacts (vllm-rs) where the wheel puts them, their bytecode, then vLLM's RECORD."""
    record = await installed_record(args, ctx)
    site_vllm = f"{args.site_packages()}/vllm"

    def step(image: dagger.Container) -> dagger.Container:
        installed = (
            image.with_directory("/", ctx.parents["extension"].rootfs())
            .with_directory(site_vllm, package_files(ctx.source))
            .with_directory("/", ctx.parents["rust-installed"].rootfs())
            .with_directory(site_vllm, bytecode(site_vllm, ctx))
        )
        if not record:
            return installed
        # A directory added, not with_new_file: a file op on the imported image would pull all of it.
        folder, name = record.path.rsplit("/", 1)
        return installed.with_directory(folder, dag.directory().with_new_file(name, record.text))

    return step
