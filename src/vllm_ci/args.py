"""The module's constructor arguments: the ARG values passed to the Dockerfile being built
(`--build-arg NAME=VALUE`; the file gives every default), and this project's own arguments; and the argument
types the module's functions share."""

import dataclasses
import shlex
from typing import Annotated, Any, Final

import dagger
from typing_extensions import Doc

from stagecache.keys import DEFAULT_LAYER_COMPRESSION
from vllm_ci.errors import UsageError
from vllm_ci.upstream_file import parse_build_args

# Never part of a key or a layer: VCS data, docs, build outputs, local environments. Of docs/, only the one
# file a stage copies (Dockerfile.cpu's vllm-test adds the docs' version loader, which a test runs).
SOURCE_IGNORE = [
    ".git",
    ".github",
    "docs",
    "!docs/mkdocs/gen_files/generate_argparse.py",
    "build",
    "dist",
    ".venv",
    "**/__pycache__",
    "**/*.pyc",
    "**/*.egg-info",
    "**/.pytest_cache",
    "vllm/**/*.so",
]

# The module functions' shared argument types (main.py), with the docs `dagger functions` and the client show.
CacheFrom = Annotated[list[str] | None, Doc("Cache repositories to read, in order; the first valid hit wins")]
CacheTo = Annotated[str, Doc("Cache repository that misses are published to; empty: export nothing")]
RegistryUsername = Annotated[str, Doc("Username for the cache and image registry")]
RegistryPassword = Annotated[dagger.Secret | None, Doc("Password or token for the cache and image registry")]
AwsKeyId = Annotated[dagger.Secret | None, Doc("AWS_ACCESS_KEY_ID for the sccache backend")]
RegistryAttempts = Annotated[int, Doc("Tries per registry request on a 429, a 5xx or a reset, with backoff")]
AwsSecret = Annotated[dagger.Secret | None, Doc("AWS_SECRET_ACCESS_KEY for the sccache backend")]
IndexNetrc = Annotated[
    dagger.Secret | None,
    Doc(
        "A netrc file with the private package indexes' credentials (machine HOST login USER password TOKEN): every "
        "RUN sees it as $NETRC, which pip and uv read; never in a key, layer, label or log. Give index URLs without "
        "user-info"
    ),
]
RegistryService = Annotated[
    dagger.Service | None,
    Doc(
        "Under `dagger call`: a cache registry on the host's loopback, as tcp://127.0.0.1:PORT, so the "
        "module's look-ups reach what the engine's pulls reach; the client command needs none"
    ),
]

# group-job's arguments (vllm_ci.group_job): what the drop-in's step passes of the agent.
JobArgv = Annotated[
    list[str],
    Doc(
        "The job as the group calls upstream's script: image-build REGISTRY REPO COMMIT BRANCH IMAGE_TAG "
        "[IMAGE_TAG_LATEST], or image-build-cpu REGISTRY REPO COMMIT"
    ),
]
JobEnv = Annotated[
    list[str] | None,
    Doc("NAME=VALUE of the agent environment the job reads (BUILDKITE_BRANCH, BUILDKITE_PULL_REQUEST, ...); no secret"),
]
ArgsFile = Annotated[dagger.File | None, Doc("Constructor flags, one per line (the example's vllm-ci.args)")]
DockerConfig = Annotated[
    dagger.Secret | None,
    Doc("The agent's docker login (its config.json, as file:PATH): the registry credentials of the host pushed to"),
]


async def tunnels_of(service: dagger.Service | None) -> dict[str, str]:
    """Loopback port -> the host:port at which the engine's tunnel to a RegistryService answers, for this process."""
    if service is None:
        return {}
    await service.start()
    endpoint = await service.endpoint()
    return {endpoint.rpartition(":")[2]: endpoint}


@dataclasses.dataclass(kw_only=True)
class BuildArgs:
    """Build arguments shared by every stage; the module object's constructor takes them."""

    build_arg: Annotated[
        list[str] | None,
        Doc(
            "NAME=VALUE: set an ARG of the Dockerfile being built, as buildx's --build-arg (repeatable); the value is "
            "used exactly as given; a name the file does not declare is refused"
        ),
    ] = None
    dockerfile: Annotated[
        str, Doc("The Dockerfile to build, a path in the source (buildx's --file): its instructions are what runs")
    ] = "docker/Dockerfile"
    url_rewrite: Annotated[
        list[str] | None,
        Doc(
            "OLD=NEW: a URL the Dockerfile's RUNs hard-code (vLLM 0.34.0 names the public package index in 7 RUNs) "
            "replaced by NEW in every RUN, for a mirror (repeatable); in the key of every stage"
        ),
    ] = None
    image_rewrite: Annotated[
        list[str] | None,
        Doc(
            "OLD=NEW: an image a FROM names (Dockerfile.cpu's ubuntu:22.04 has no ARG) replaced by NEW, a mirror's "
            "copy of it (repeatable); in the key of the stage it starts"
        ),
    ] = None
    # Portability: commands upstream hard-codes with no ARG. Empty: upstream's step runs as written, as a
    # real build needs; a fork or mirror replaces it (the example does). Each names the instruction it
    # replaces in the stage that declares it (instructions.Deviation.portable).
    manylinux_packages_command: Annotated[
        str, Doc("base's system package install (dnf), replaced by this command; empty: upstream's")
    ] = ""
    rust_packages_command: Annotated[
        str,
        Doc(
            "rust-build-cache's native tools install (dnf; apt in Dockerfile.cpu), replaced by this command; "
            "empty: upstream's"
        ),
    ] = ""
    cuda_jit_packages_command: Annotated[
        str, Doc("vllm-runtime-base's CUDA JIT apt install, replaced by this command; empty: upstream's")
    ] = ""
    dev_packages_command: Annotated[
        str, Doc("dev's system package install (dnf), replaced by this command; empty: upstream's")
    ] = ""
    uv_installer_command: Annotated[
        str, Doc("How base installs uv into UV_INSTALL_DIR (upstream: its installer script); empty: upstream's")
    ] = ""
    binutils_command: Annotated[
        str,
        Doc(
            "Dockerfile.cpu's binutils-build RUN (a release from its site), replaced by this command; empty: upstream's"
        ),
    ] = ""
    toolchain_command: Annotated[
        str,
        Doc(
            "Dockerfile.cpu's base-common RUN (apt packages, the gcc-15 PPA, uv's installer), replaced by this "
            "command; empty: upstream's"
        ),
    ] = ""
    openai_extras: Annotated[
        str,
        Doc(
            "Extra packages of the OpenAI server image, space-separated, beyond what upstream's RUNs install "
            "(none by default: the image is upstream's)"
        ),
    ] = ""
    # What upstream's RUNs that bind .git derive from it (the upload leaves .git out): its version.
    git_version: Annotated[
        str,
        Doc(
            "The version setuptools-scm derives from the checkout's .git, as build's setup.py does; the client command "
            "derives it from --source (vllm_ci.version); empty: none, the package's own"
        ),
    ] = ""
    git_version_clean: Annotated[
        str,
        Doc(
            "The same with the tree taken as clean ({dirty=false}), as rust-build relinks with; derived with git_version"
        ),
    ] = ""
    # How the stage cache stores what it builds; in every key, so entries of two compressions never mix.
    cache_compression: Annotated[
        str,
        Doc(
            "Compression of the cache entries' and the image's layers: zstd (several times faster to make and to unpack) "
            "or gzip (for pullers older than Docker 23 or containerd 1.5)"
        ),
    ] = DEFAULT_LAYER_COMPRESSION

    def __post_init__(self) -> None:
        """Refuse, before any container work, a --build-arg that is not NAME=VALUE, values too long for a RUN
        to start, and a repository check that could only fail (the upload leaves .git out: build's
        check_repo.sh would see an empty one)."""
        passed = self.passed()
        self.rewrites()
        self.image_rewrites()
        if passed.get("GIT_REPO_CHECK", "0") not in ("", "0"):
            raise UsageError(
                "--build-arg GIT_REPO_CHECK: tools/check_repo.sh asks git whether the checkout is clean and "
                "tagged, and the build never uploads .git (the version comes from the host); only 0 is supported"
            )
        values = {f"--build-arg {name}": value for name, value in passed.items()}
        values |= {
            flag_of(f.name): str(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "build_arg"
        }
        for flag, value in values.items():
            size = len(shlex.quote(value).encode())
            if size > ARG_VALUE_LIMIT:
                raise UsageError(
                    f"{flag}: the value is {size} bytes; an ARG value may hold at most {ARG_VALUE_LIMIT} (a RUN's "
                    f"one `sh -c` argument holds the ARGs and the script, and Linux takes at most {MAX_ARG_STRLEN} "
                    f"bytes in one argument)"
                )

    def passed(self) -> dict[str, str]:
        """The --build-arg values as NAME -> VALUE, exactly as given (the last of a name wins)."""
        return parse_build_args(self.build_arg or [])

    def rewrites(self) -> dict[str, str]:
        """The --url-rewrite pairs as OLD -> NEW; one without `=` or with an empty side is a UsageError."""
        return rewrite_pairs("--url-rewrite", self.url_rewrite or [])

    def image_rewrites(self) -> dict[str, str]:
        """The --image-rewrite pairs as OLD -> NEW; one without `=` or with an empty side is a UsageError."""
        return rewrite_pairs("--image-rewrite", self.image_rewrite or [])

    def portable(self) -> dict[str, str]:
        """This build's portability overrides, by argument name (empty: upstream's step)."""
        return {name: getattr(self, name) for name in PORTABLE_COMMANDS}


def rewrite_pairs(flag: str, pairs: list[str]) -> dict[str, str]:
    """OLD=NEW pairs as OLD -> NEW (the last of an OLD wins); one without `=` or with an empty side is a UsageError."""
    rewrites = {}
    for pair in pairs:
        old, _, new = pair.partition("=")
        if not old or not new:
            raise UsageError(f"{flag} {pair!r}: expected OLD=NEW")
        rewrites[old] = new
    return rewrites


# Linux's limit on one argument or environment string (MAX_ARG_STRLEN, 32 pages of 4 KiB); beyond it
# exec fails with "argument list too long". A RUN is one `sh -c` argument holding every ARG the stage
# exports (quoted) plus the script (instructions.AsWritten._run), so one value may fill at most half of it:
# the other half is headroom for the script and the stage's other ARGs (the defaults hold about 3 kB).
MAX_ARG_STRLEN: Final = 131072
ARG_VALUE_LIMIT: Final = MAX_ARG_STRLEN // 2

# This project's arguments for commands upstream hard-codes with no ARG (see the fields).
PORTABLE_COMMANDS: Final = (
    "manylinux_packages_command",
    "uv_installer_command",
    "rust_packages_command",
    "cuda_jit_packages_command",
    "dev_packages_command",
    "binutils_command",
    "toolchain_command",
)


# The arguments that take a list (repeatable flags): lines of an args file add up.
LIST_FIELDS: Final = ("build_arg", "url_rewrite", "image_rewrite")


def kebab(name: str) -> str:
    """A Python name as a command-line name, as `dagger call` spells it."""
    return name.rstrip("_").replace("_", "-")


def flag_of(name: str) -> str:
    """A Python argument name as its command-line flag."""
    return "--" + kebab(name)


def read_args_file(text: str) -> dict[str, Any]:
    """A constructor-flags file (one `--name=value` per line, as examples/mini-vllm/vllm-ci.args; a value
    may hold spaces; `--build-arg=NAME=VALUE` lines add up) as BuildArgs keyword arguments; ValueError
    naming a flag it has no field for."""
    names = {field.name for field in dataclasses.fields(BuildArgs)}
    values: dict[str, Any] = {}
    for line in filter(None, (line.strip() for line in text.splitlines())):
        flag, _, value = line.partition("=")
        name = flag.removeprefix("--").replace("-", "_")
        if name not in names:
            raise ValueError(f"{flag}: no such constructor argument")
        if name in LIST_FIELDS:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values


def args_file_flags(values: dict[str, Any]) -> list[str]:
    """Constructor keyword arguments as command-line flags, one per value (the inverse of read_args_file)."""
    flags = []
    for name, value in values.items():
        for one in value if isinstance(value, list) else [value]:
            flags.append(f"{flag_of(name)}={one}")
    return flags
