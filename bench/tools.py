"""The builders the bench compares, each able to become a fresh CI agent and build the example's
test image; and the registry measurements they share (bytes moved, bytes the cache stores)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import anyio

from stagecache.registry import MANIFEST_MEDIA_TYPES, RegistryClient
from stagecache.traffic import RegistryLog
from vllm_ci.args import BuildArgs, read_args_file
from vllm_release import vllm_source

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
REGISTRY = os.environ.get("VLLM_CI_REGISTRY", "127.0.0.1:5000").split("/")[0]
STATE = pathlib.Path(os.environ.get("VLLM_CI_STATE", "/var/lib/vllm-ci"))
REGISTRY_LOG = STATE / "registry" / "registry.log"
# Shared with every other user of the engine; held around every build, BuildKit's too, so runs do
# not overlap. Set to "" when the caller already holds it (a test run under `flock`).
ENGINE_LOCK = os.environ.get("VLLM_CI_ENGINE_LOCK", "/tmp/vllm-ci-engine.lock")
CA_CERTS = pathlib.Path("/usr/local/share/ca-certificates")  # the machine's egress CA, for PyPI in RUN steps
PYTHON = REPO / ".venv" / "bin" / "python"

# Which scenarios read the warm cache, and which write a cache.
# A release lane (lane-*) reads CI's warm cache as a PR does and builds with a release's arguments.
WARM = ("no-change", "py-change", "csrc-change", "lane-arch", "lane-cuda")
NO_EXPORT = ("cold-no-export",)


class BenchError(Exception):
    """A build or a daemon failed; the message names the log to read."""


@dataclasses.dataclass
class Outcome:
    """What one build reports about itself, beyond what the registry saw."""

    rebuilt: str  # e.g. "1/6 stages" or "3/10 RUN"
    cache_written: list[str]  # cache refs it wrote: repo (every tag) or repo:tag
    inner_seconds: float | None = None  # the build's own timing, where it reports one
    stages_run: tuple[str, ...] = ()  # ours: the stages built; BuildKit: the stages with a RUN executed


@dataclasses.dataclass(frozen=True)
class Names:
    """Where one bench run of one tool keeps its cache and images; unique per run, so cold is cold."""

    run_id: str
    tool: str

    @property
    def repos(self) -> str:
        """The prefix of every repository this tool's run writes, as the registry's API names them."""
        return f"bench/{self.run_id}/{self.tool}/"

    @property
    def cache(self) -> str:
        """The cache repository (BuildKit and the engine cache use tags in it)."""
        return f"{REGISTRY}/bench/{self.run_id}/{self.tool}/cache"

    def image(self, scenario: str) -> str:
        """Where a scenario's test image is pushed."""
        return f"{REGISTRY}/bench/{self.run_id}/{self.tool}/image:{scenario}"


# -- the registry ------------------------------------------------------------------------------


def stored(refs: list[str]) -> dict[str, int]:
    """Digest -> size of the unique blobs the refs hold."""
    return anyio.run(_stored, refs)


async def _stored(refs: list[str]) -> dict[str, int]:
    """Digest -> size of the unique blobs the refs hold, asked of the registry client."""
    found: dict[str, int] = {}
    async with RegistryClient(REGISTRY) as client:
        for ref in refs:
            found |= await _blobs(client, ref)
    return found


async def _blobs(client: RegistryClient, ref: str) -> dict[str, int]:
    """Digest -> size of every blob a ref needs (repo:tag), or every tag of a repo (no tag)."""
    repo, _, tag = ref.removeprefix(f"{REGISTRY}/").partition(":")
    found: dict[str, int] = {}
    for reference in [tag] if tag else await client.tags(repo):
        found |= await _manifest_blobs(client, repo, reference)
    return found


async def _manifest_blobs(client: RegistryClient, repo: str, reference: str) -> dict[str, int]:
    """Digest -> size of the blobs a manifest names (none when it does not exist), through a real index too."""
    if (found_manifest := await client.manifest(repo, reference)) is None:
        return {}
    manifest, _ = found_manifest
    found: dict[str, int] = {}
    if "config" in manifest:
        found[manifest["config"]["digest"]] = manifest["config"]["size"]
    for entry in [*manifest.get("layers", []), *manifest.get("manifests", [])]:
        if entry.get("mediaType") in MANIFEST_MEDIA_TYPES:  # a real index: follow it
            found |= await _manifest_blobs(client, repo, entry["digest"])
        else:  # a layer, or BuildKit's cache index listing its blobs directly
            found[entry["digest"]] = entry["size"]
    return found


async def _pushed_bytes(pushes: set[tuple[str, str]]) -> int:
    """The bytes of the (repository, digest) blobs pushed, as the registry holds them (0 for one it does not)."""
    async with RegistryClient(REGISTRY) as client:
        return sum([await client.blob_size(repo, digest) or 0 for repo, digest in pushes])


@contextlib.contextmanager
def engine_lock() -> Iterator[None]:
    """Hold the lock every user of the shared engine takes. Python's file descriptors are not
    inherited, so an engine or daemon started inside never keeps the lock after we leave."""
    if not ENGINE_LOCK:
        yield
        return
    with open(ENGINE_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"bench: waiting for {ENGINE_LOCK} (someone else is using the engine)", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def log_mark() -> int:
    """A position in the registry's request log to measure from."""
    return REGISTRY_LOG.stat().st_size


def traffic_since(mark: int, end: int, repos: tuple[str, ...]) -> tuple[int, int]:
    """Blob bytes the registry served and received between two log marks, on repositories starting
    with one of `repos` only (others may share the registry meanwhile), read by stagecache's one reader
    of the registry's log; an upload counts once per repository it went to."""
    traffic = RegistryLog(REGISTRY_LOG).since(mark, end, repos)
    return traffic.pulled_bytes, anyio.run(_pushed_bytes, traffic.uploads)


def ca_bundle(path: pathlib.Path) -> pathlib.Path:
    """The machine's extra CA certificates in one file (for the build secret)."""
    path.write_bytes(b"".join(p.read_bytes() for p in sorted(CA_CERTS.glob("*.crt"))))
    return path


def _run(cmd: list[str], log: pathlib.Path, env: dict[str, str] | None = None) -> str:
    """Run a command with its output in a log; its stdout; a failure names the log."""
    with log.open("w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    if proc.returncode != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-5:])
        raise BenchError(f"{cmd[0]} exited {proc.returncode}; read {log}: {tail[-600:]}")
    return proc.stdout


# -- BuildKit ----------------------------------------------------------------------------------


class Buildkitd:
    """A buildkitd of our own (own root and socket: the engine owns /run/buildkit), shared by the
    BuildKit tools; one at a time, started and stopped by its pid."""

    def __init__(self, bin_dir: pathlib.Path):
        self.bin = bin_dir
        self.dir = STATE / "bench" / "buildkitd"
        self.root = self.dir / "root"
        self.sock = f"unix://{self.dir}/buildkitd.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def fresh(self) -> None:
        """Stop the daemon, empty its state, start it again: a fresh agent."""
        self.stop()
        self._stop_leftover()
        shutil.rmtree(self.root, ignore_errors=True)
        self.start()

    def start(self) -> None:
        """Start buildkitd and wait until it answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "buildkitd.toml"
        config.write_text(f'[registry."{REGISTRY}"]\n  http = true\n  insecure = true\n')
        with (self.dir / "buildkitd.log").open("a") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "buildkitd"),
                    "--config",
                    str(config),
                    "--root",
                    str(self.root),
                    "--addr",
                    self.sock,
                    "--oci-worker-net",
                    "host",
                    "--oci-worker-binary",
                    "/usr/sbin/runc",
                    "--containerd-worker=false",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        (self.dir / "pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"buildkitd exited during start; read {self.dir / 'buildkitd.log'}")
            if (
                subprocess.run(
                    [str(self.bin / "buildctl"), "--addr", self.sock, "debug", "workers"], capture_output=True
                ).returncode
                == 0
            ):
                return
            time.sleep(0.2)
        raise BenchError(f"buildkitd did not answer within 30 s; read {self.dir / 'buildkitd.log'}")

    def stop(self) -> None:
        """Stop the daemon this object started, and wait for it to exit."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        (self.dir / "pid").unlink(missing_ok=True)

    def _stop_leftover(self) -> None:
        """Stop a buildkitd an interrupted bench left running (its pid file, if that process runs on our root)."""
        pidfile = self.dir / "pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text())
        with contextlib.suppress(OSError):
            if f"--root\0{self.root}\0" in pathlib.Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGTERM)
                for _ in range(150):
                    if not pathlib.Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.2)
        pidfile.unlink()


ARGS_FILE = "vllm-ci.args"  # the example's CUDA build; vllm-ci-cpu.args its CPU one
UPSTREAM_LAYOUT = "today"  # today's layout is upstream's own Dockerfile, of the release the port follows


def dockerfile_of(layout: str, dockerfile: str = "docker/Dockerfile") -> pathlib.Path:
    """A layout's Dockerfile: upstream's real one for today's (the CUDA file, or the one named), else the
    hand-written one in dockerfiles/."""
    if layout == UPSTREAM_LAYOUT:
        return vllm_source() / dockerfile
    return BENCH / "dockerfiles" / f"Dockerfile.{layout}"


class BuildKit:
    """buildctl with BuildKit's registry cache (`mode=max`), on one of the Dockerfile layouts."""

    def __init__(
        self, layout: str, daemon: Buildkitd, ca: pathlib.Path, target: str = "test", args_file: str = ARGS_FILE
    ):
        self.name = f"buildkit-{layout}"
        self.layout = layout
        self.target = target
        self.args_file = args_file  # the checkout's args file: the Dockerfile it names and its arguments
        self.daemon = daemon
        self.ca = ca

    def fresh_agent(self) -> None:
        """A new buildkitd on an empty root."""
        self.daemon.fresh()

    def done(self) -> None:
        """Stop the daemon once this tool's scenarios are measured."""
        self.daemon.stop()

    def build(
        self, source: pathlib.Path, scenario: str, names: Names, log: pathlib.Path, args: pathlib.Path | None = None
    ) -> Outcome:
        """`buildctl build` of the target, with BuildKit's registry cache as vLLM CI uses it. Today's
        layout is upstream's Dockerfile as the checkout's args file (or `args`, a release's) forks it
        (written beside the log)."""
        build_args: dict[str, str] = {}
        args_text = (args or source / self.args_file).read_text()
        dockerfile = dockerfile_of(self.layout, BuildArgs(**read_args_file(args_text)).dockerfile)
        if self.layout == UPSTREAM_LAYOUT:
            from fork_dockerfile import fork  # it raises this module's BenchError

            generated = fork(dockerfile.read_text(), args_text)
            dockerfile, build_args = log.with_suffix(".Dockerfile"), generated.build_args
            dockerfile.write_text(generated.dockerfile)
        cmd = [
            str(self.daemon.bin / "buildctl"),
            "--addr",
            self.daemon.sock,
            "build",
            "--progress=plain",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={source}",
            "--local",
            f"dockerfile={dockerfile.parent}",
            "--opt",
            f"filename={dockerfile.name}",
            "--opt",
            f"target={self.target}",
            "--secret",
            f"id=ca,src={self.ca}",
            "--output",
            f"type=image,name={names.image(scenario)},push=true",
            *(opt for name, value in build_args.items() for opt in ("--opt", f"build-arg:{name}={value}")),
        ]
        written = []
        if scenario not in NO_EXPORT:
            cmd += ["--import-cache", f"type=registry,ref={names.cache}:main"]
            written = [f"{names.cache}:{'main' if scenario not in WARM else scenario}"]
            cmd += ["--export-cache", f"type=registry,ref={written[0]},mode=max"]
        _run(cmd, log)
        rebuilt, stages_run = self.rebuilt(log.read_text(), dockerfile)
        return Outcome(rebuilt, written, stages_run=stages_run)

    @staticmethod
    def rebuilt(progress: str, dockerfile: pathlib.Path) -> tuple[str, tuple[str, ...]]:
        """RUN steps executed out of the Dockerfile's RUN steps, from plain progress, and the stages they are
        in. A step neither CACHED nor executed is one whose cached result was pulled: only layer lines, no output."""
        names: dict[str, str] = {}
        cached, done, output, pulled = set(), set(), set(), set()
        for line in progress.splitlines():
            if not (m := re.match(r"^#(\d+) (.*)$", line)):
                continue
            step, text = m[1], m[2]
            if text.startswith("["):
                names.setdefault(step, text)
            elif text == "CACHED":
                cached.add(step)
            elif text.startswith("DONE"):
                done.add(step)
            elif re.match(r"^(sha256:|extracting )", text):
                pulled.add(step)
            elif re.match(r"^\d+\.\d+ ", text):
                output.add(step)
        ran = [
            n
            for n, name in names.items()
            if "] RUN " in name and n in done and n not in cached and (n in output or n not in pulled)
        ]
        total = sum(1 for line in dockerfile.read_text().splitlines() if line.startswith("RUN "))
        stages = dict.fromkeys(m[1] for n in ran if (m := re.match(r"^\[(\S+) ", names[n])))
        return f"{len(ran)}/{total} RUN", tuple(stages)


# -- Dagger ------------------------------------------------------------------------------------


class Dagger:
    """The stage functions on the engine: with our stage cache, or with only the engine's own
    BuildKit cache exported to and imported from the registry (`_EXPERIMENTAL_DAGGER_CACHE_*`)."""

    def __init__(
        self,
        stage_cache: bool,
        target: str = "test",
        args_file: str = ARGS_FILE,
        cache_compression: str = "",
        client: pathlib.Path = REPO,
    ):
        self.stage_cache = stage_cache
        self.target = target
        self.args_file = args_file
        self.cache_compression = cache_compression  # the stage cache's; empty: the args file's
        self.client = client  # the checkout of this repository whose client builds (another commit's, to pair)
        self.name = "ours" if stage_cache else "dagger-engine-cache"

    def fresh_agent(self) -> None:
        """Restart the engine on an empty state directory."""
        subprocess.run([str(REPO / "ci" / "engine"), "fresh"], check=True, capture_output=True)

    def done(self) -> None:
        """Nothing to stop: the engine stays up for its other users."""

    def build(
        self, source: pathlib.Path, scenario: str, names: Names, log: pathlib.Path, args: pathlib.Path | None = None
    ) -> Outcome:
        """Build and publish the target's image in a client process of its own, with the checkout's args file
        (or `args`, a release's)."""
        cmd = [
            str(PYTHON),
            str(self.client / "bench" / "dagger_build.py"),
            "--source",
            str(source),
            "--target",
            self.target,
            "--args-file",
            str(args or self.args_file),
            "--image",
            names.image(scenario),
            "--cache-compression",
            self.cache_compression,
            "--log",
            str(log.with_suffix(".engine.log")),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("_EXPERIMENTAL_DAGGER_CACHE")}
        env["PYTHONPATH"] = str(self.client / "src")  # its own modules, not the venv's editable install's checkout
        written: list[str] = []
        if self.stage_cache and scenario not in NO_EXPORT:
            write = names.cache if scenario not in WARM else f"{names.cache}-{scenario}"  # a PR writes its own repo
            cmd += ["--cache-from", ",".join(dict.fromkeys([write, names.cache])), "--cache-to", write]
            written = [write]
        elif not self.stage_cache and scenario not in NO_EXPORT:
            main = f"type=registry,ref={names.cache}:main"
            if scenario in WARM:  # read main's cache, write this scenario's tag
                env["_EXPERIMENTAL_DAGGER_CACHE_IMPORT_CONFIG"] = main
                env["_EXPERIMENTAL_DAGGER_CACHE_EXPORT_CONFIG"] = f"type=registry,ref={names.cache}:{scenario},mode=max"
                written = [f"{names.cache}:{scenario}"]
            else:
                env["_EXPERIMENTAL_DAGGER_CACHE_CONFIG"] = f"{main},mode=max"
                written = [f"{names.cache}:main"]
        raw = _run(cmd, log, env)
        log.with_suffix(".report.json").write_text(raw)  # `vllm-ci report --timeline` renders it
        report = json.loads(raw)
        stages = [s for s in report["stages"] if s["outcome"] != "unused"]
        built = tuple(s["stage"] for s in stages if s["outcome"] in ("exported", "built", "export-failed"))
        # Without our cache every stage reads "built": what the engine cache saved shows in time and bytes only.
        if not self.stage_cache:
            return Outcome("n/a", written, report["total_seconds"])
        return Outcome(f"{len(built)}/{len(stages)} stages", written, report["total_seconds"], built)
