"""The version vLLM's setup.py derives from a checkout's .git (or, outside git, its PKG-INFO), derived on the host.

Upstream's stages `build` and `rust-build` bind .git and let setuptools-scm run `git describe`.
The upload leaves .git out (it is large, and no key may read its contents), so the client derives
the same version here, with the same library and upstream's own describe command, and the stages
hand it to setuptools-scm as SETUPTOOLS_SCM_PRETEND_VERSION. The version, not .git, is in their keys.

The checkout is read as data only: setuptools-scm's git parser runs git with the checkout's program-naming
settings switched off (vllm_ci.hostgit), no other backend is tried (hg, jj: their configs name programs),
and of the project's [tool.setuptools_scm] only plain values are taken (SETTINGS); a setting that names
code or a command is refused, and nothing is written (write_to, version_file are the stage build's)."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import tempfile
import tomllib
from collections.abc import Sequence
from importlib import metadata
from typing import Any, Final

import dagger

from vllm_ci.errors import UsageError
from vllm_ci.hostgit import safe_git_flags

# setup.py's and tools/build_rust.py's VLLM_GIT_DESCRIBE_COMMAND (vLLM 0.33.0).
VLLM_GIT_DESCRIBE_COMMAND = ["git", "describe", "--dirty", "--tags", "--long", "--abbrev=40", "--match", "v[0-9]*"]
# What setuptools-scm reads of a tree outside git: the project's settings (fallback_version), an sdist's PKG-INFO.
FALLBACK_FILES = ("pyproject.toml", "PKG-INFO")
# [tool.setuptools_scm] (setuptools-scm 10 / vcs-versioning 2.6 names), by what is done with each setting:
# taken: plain values that change the version string (schemes only by the name of a built-in one);
TAKEN: Final = frozenset(
    {"fallback_version", "parentdir_prefix_version", "tag_regex", "tag", "normalize", "version_scheme", "local_scheme"}
)
TAG_KEYS: Final = frozenset({"regex", "prefix", "strict"})
# ignored: they write files (the stage build writes them, in its container) or name the environment variables
# that would override the version (the host's environment is not the project's to choose);
IGNORED: Final = frozenset(
    {"write_to", "write_to_template", "version_file", "version_file_template", "write_to_source", "dist_name"}
)
# refused, each with why: code or commands to run, or another place than --source's root to derive from.
REFUSED: Final = {
    "parse": "names a function to import and run",
    "version_cls": "names a class to import",
    "git_describe_command": "names a command to run",
    "scm": "names commands (describe_command) or steps (pre_parse: fetch) to run",
    "root": "points to another repository than --source's",
    "relative_to": "points to another repository",
    "fallback_root": "points to another folder",
    "parent": "points to another repository",
    "search_parent_directories": "reads repositories above --source",
    "project_path": "points to another folder",
}
# setuptools-scm's own schemes: the entry points of the distribution that ships them, by group.
SCHEME_GROUPS: Final = {
    "version_scheme": "setuptools_scm.version_scheme",
    "local_scheme": "setuptools_scm.local_scheme",
}
SCHEMES_DIST: Final = "vcs-versioning"


def refuse(pyproject: pathlib.Path, key: str, why: str) -> UsageError:
    """The one-line refusal of a [tool.setuptools_scm] setting, naming it and the file."""
    return UsageError(
        f"--source: {pyproject}: [tool.setuptools_scm] {key} {why}; vllm-ci runs nothing of a checkout on the host"
    )


def builtin_scheme(pyproject: pathlib.Path, key: str, value: object) -> Any:
    """The built-in scheme function(s) a scheme setting names (a name or a list of names), loaded from
    setuptools-scm's own distribution, so no name can resolve to code of another package or a "module:function"."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise refuse(pyproject, key, "must be the name of a setuptools-scm scheme or a list of such names")
    own = {ep.name: ep for ep in metadata.distribution(SCHEMES_DIST).entry_points if ep.group == SCHEME_GROUPS[key]}
    for name in names:
        if name not in own:
            raise refuse(
                pyproject,
                key,
                f"= {name!r} is not one of setuptools-scm's own schemes "
                f"({', '.join(sorted(own))}): it would name code to import and run",
            )
    functions = [own[name].load() for name in names]
    return functions[0] if len(functions) == 1 else functions


def plain(pyproject: pathlib.Path, key: str, value: object, kind: type) -> Any:
    """A setting's value when it has the plain type setuptools-scm expects, else the refusal."""
    if not isinstance(value, kind):
        raise refuse(pyproject, key, f"must be a {kind.__name__}, not {type(value).__name__}")
    return value


def tag_settings(pyproject: pathlib.Path, table: object, regex: object) -> Any:
    """setuptools-scm's TagConfiguration of [tool.setuptools_scm.tag] (and the older tag_regex)."""
    from setuptools_scm import Configuration

    tag = plain(pyproject, "tag", table, dict)
    for key in tag.keys() - TAG_KEYS:
        raise refuse(pyproject, f"tag.{key}", "is not a setting vllm-ci reads")
    fields: dict[str, Any] = {}
    if "prefix" in tag:
        fields["prefix"] = plain(pyproject, "tag.prefix", tag["prefix"], str)
    if "strict" in tag:
        fields["strict"] = plain(pyproject, "tag.strict", tag["strict"], bool)
    pattern = tag.get("regex", regex)
    if pattern is not None:
        try:
            fields["regex"] = re.compile(plain(pyproject, "tag.regex", pattern, str))
        except re.error as error:
            raise refuse(pyproject, "tag.regex", f"is no regular expression ({error})") from None
    return type(Configuration().tag)(**fields)


def configuration(checkout: pathlib.Path) -> Any:
    """setuptools-scm's Configuration for the checkout: vLLM's describe command, and of the project's
    [tool.setuptools_scm] only the plain values that change the version string (vLLM's table is empty:
    its presence enables setuptools-scm; the example's gives a fallback)."""
    from setuptools_scm import Configuration, NonNormalizedVersion, Version
    from vcs_versioning import VcsEnvironment

    pyproject = checkout / "pyproject.toml"
    try:
        toml = tomllib.loads(pyproject.read_text()) if pyproject.is_file() else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"--source: {pyproject}: not readable as TOML ({error})") from None
    settings = toml.get("tool", {}).get("setuptools_scm", {}) if isinstance(toml.get("tool"), dict) else {}
    settings = plain(pyproject, "table", settings, dict)
    for key in sorted(settings.keys() - TAKEN - IGNORED):
        raise refuse(pyproject, key, REFUSED.get(key, "is not a setting vllm-ci reads"))
    taken: dict[str, Any] = {
        key: builtin_scheme(pyproject, key, settings[key]) for key in SCHEME_GROUPS if key in settings
    }
    for key in ("fallback_version", "parentdir_prefix_version"):
        if key in settings:
            taken[key] = plain(pyproject, key, settings[key], str)
    normalize = plain(pyproject, "normalize", settings.get("normalize", True), bool)
    config = Configuration(
        root=str(checkout),
        version_cls=Version if normalize else NonNormalizedVersion,
        tag=tag_settings(pyproject, settings.get("tag", {}), settings.get("tag_regex")),
        _env=VcsEnvironment.from_env("SETUPTOOLS_SCM"),
        **taken,
    )
    config.scm.git.describe_command = VLLM_GIT_DESCRIBE_COMMAND
    return config


def host_git_workdir(checkout: pathlib.Path, config: Any) -> Any:
    """setuptools-scm's git work directory for the checkout, whose every git command carries vllm_ci.hostgit's
    settings; raises UsageError when the checkout's .git is no repository git reads at its root."""
    from setuptools_scm.git import GitWorkdir

    flags = safe_git_flags(checkout)

    class HostGitWorkdir(GitWorkdir):
        """GitWorkdir whose git runs with the program-naming settings of the checkout switched off."""

        def run_git(self, args: Sequence[Any], *, check: bool = False, timeout: int | None = None) -> Any:
            """`git --git-dir … -c …` ARGS: the parser's own commands and vLLM's describe alike."""
            return super().run_git([*flags, *args], check=check, timeout=timeout)

    workdir = HostGitWorkdir(path=checkout.resolve(), _config=config)
    prefix = workdir.run_git(["rev-parse", "--show-prefix"])
    if prefix.returncode != 0 or prefix.stdout:
        why = (prefix.stderr.strip().splitlines() or [f"{checkout} is not its repository's root"])[0]
        raise UsageError(f"--source: setuptools-scm derives no version from {checkout}/.git ({why})")
    return workdir


def scm_version(checkout: pathlib.Path, config: Any) -> Any:
    """What setuptools-scm reads of the checkout: its .git with the git parser only, else an sdist's PKG-INFO,
    else the project's fallback; None when none gives a version."""
    from setuptools_scm.fallbacks import fallback_version, parse_pkginfo

    if (checkout / ".git").exists():
        try:
            version = host_git_workdir(checkout, config).get_scm_version()
        except (LookupError, OSError, ValueError) as error:
            why = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UsageError(f"--source: setuptools-scm derives no version from {checkout}/.git ({why})") from None
        if version is not None:
            return version
    if (checkout / "PKG-INFO").is_file():
        version = parse_pkginfo(checkout, config)
        if version is not None:
            return version
    return fallback_version(checkout, config)


def git_versions(checkout: pathlib.Path) -> tuple[str, str]:
    """(build's version, rust-build's version: the tree taken as clean, as its RUN's
    SETUPTOOLS_SCM_PRETEND_METADATA={dirty=false} does) as setuptools-scm derives them for the checkout:
    from its .git, or outside git from an sdist's PKG-INFO or the project's fallback_version; ("", "") when a
    folder outside git gives none."""
    from setuptools_scm.version import format_version

    version = scm_version(checkout, configuration(checkout))
    if version is None:
        return "", ""
    return format_version(version), format_version(dataclasses.replace(version, dirty=False))


async def source_versions(source: dagger.Directory) -> tuple[str, str]:
    """git_versions of an uploaded source, which has no .git: from the files setuptools-scm falls back to."""
    entries = await source.entries()
    with tempfile.TemporaryDirectory(prefix="vllm-ci-version-") as tmp:
        for name in FALLBACK_FILES:
            if name in entries:
                await source.file(name).export(f"{tmp}/{name}")
        return git_versions(pathlib.Path(tmp))


if __name__ == "__main__":  # the flags for `dagger call`, which cannot read the host's .git itself
    import sys

    build_version, clean_version = git_versions(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print(f"--git-version={build_version} --git-version-clean={clean_version}")
