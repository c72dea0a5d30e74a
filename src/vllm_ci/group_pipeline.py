"""vLLM's image-build group as a drop-in, derived from vLLM's own file: the checkout's
`.buildkite/image_build/image_build.yaml` as it is, with the three steps this project builds kept (image-build,
the non-root smoke test, image-build-cpu) and the two build scripts they call swapped for ours, called with the
same positional arguments; nothing else changed. Printed as YAML for `buildkite-agent pipeline upload` (or
`bk local run`), so a vLLM PR's edit to its group reaches the pipeline, and none of vLLM's text is kept here.

    python -P -m vllm_ci.group_pipeline --module URL@COMMIT [FILE] | buildkite-agent pipeline upload

Ours is a shell function, defined by a command put first in each build step (the agent runs a step's commands
as one script): it calls the module the way another repository uses it, `dagger call -m URL@COMMIT group-job`,
which does the job inside the engine and returns a folder; the function exports it and posts it with
`buildkite-agent`. The agent needs the `dagger` CLI and nothing of this repository.

Refused in one line (exit 2): a module reference that is not pinned (`@` a 40-hex commit or a `v`-semver tag), a
file that is not there or not YAML, a kept step missing, or a build step that no longer calls the script it swaps
(the drop-in would otherwise run upstream's build unnoticed)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, Final, NoReturn

import yaml

from vllm_ci.buildkite import ANNOTATION_CONTEXT
from vllm_ci.buildkite_group import ARGS_FILE_VARS, IMAGES_CONTEXT, SYMBOL_MAP
from vllm_ci.entry import print_error
from vllm_ci.errors import UsageError
from vllm_ci.group_job import ENV_NAMES

UPSTREAM_GROUP: Final = ".buildkite/image_build/image_build.yaml"
KEPT_STEPS: Final = ("image-build", "image-build-smoke-test", "image-build-cpu")
FUNCTION: Final = "vllm_ci_group"
# A pinned module reference: a commit (40 hex digits) or a release tag (v + semver), never a branch.
PINNED: Final = re.compile(r"(?P<source>[^@\s]+)@(?P<ref>[0-9a-f]{40}|v[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.+-]+)?)")
# The one shell of the drop-in (a step's commands are shell; group_step.sh, a file of its own with @NAME@ for
# what is filled in): upstream's script swapped for a function that calls
# the module and posts what it returns. Upstream's `$VAR`s are interpolated by the pipeline upload; every `$` here
# is the job's, written `$$` in the YAML (see step_function), and none inside a `${...}` (the upload keeps those
# as written). The job's environment goes to the module as CSV items
# of --env (a `"` doubled), the args file of the job as a File, the agent's docker login as a Secret, a loopback
# registry through --registry-service (VLLM_CI_REGISTRY_SERVICE, for a local run).
STEP_FUNCTION: Final = files(__package__).joinpath("group_step.sh").read_text()


def step_function(module: str) -> str:
    """STEP_FUNCTION for a pinned module reference, escaped for the pipeline upload (`$$` is a `$` of the job)."""
    if not PINNED.fullmatch(module):
        raise UsageError(f"--module {module!r}: not pinned; give URL@<40-hex commit> or URL@v<semver tag>")
    values = {
        "ENV_NAMES": " ".join(ENV_NAMES),
        "ARGS_FILES": "".join(f"{job}) file=${{{var}:-}} ;; " for job, var in ARGS_FILE_VARS.items()),
        "IMAGES_CONTEXT": IMAGES_CONTEXT,
        "ANNOTATION_CONTEXT": ANNOTATION_CONTEXT,
        "SYMBOL_MAP": SYMBOL_MAP,
    }
    text = STEP_FUNCTION.strip()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    return text.replace("$", "$$").replace("@MODULE@", module)


# Upstream's build scripts, as its commands call them, and what calls ours with the same arguments.
OUR_SCRIPTS: Final = {
    "image-build": (".buildkite/image_build/image_build.sh", f"{FUNCTION} image-build"),
    "image-build-cpu": (".buildkite/image_build/image_build_cpu.sh", f"{FUNCTION} image-build-cpu"),
}


def drop_in(text: str, module: str, name: str = UPSTREAM_GROUP) -> dict[str, Any]:
    """Upstream's group (its YAML text) with the kept steps only and their build scripts swapped for ours, which
    call the pinned module."""
    define = step_function(module)
    try:
        group = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"{name} is not YAML: {str(err).splitlines()[0]}") from None
    steps = {step.get("key"): step for step in (group or {}).get("steps", []) if isinstance(step, dict)}
    if missing := [key for key in KEPT_STEPS if key not in steps]:
        raise UsageError(f"{name} has no step {', '.join(missing)} (vLLM's image-build group has)")
    for key, (theirs, ours) in OUR_SCRIPTS.items():
        commands = steps[key].get("commands") or [steps[key].get("command", "")]
        if not any(theirs in command for command in commands):
            raise UsageError(f"{name}: step {key} no longer calls {theirs}; nothing to swap")
        steps[key] = {**steps[key], "commands": [define, *(command.replace(theirs, ours) for command in commands)]}
        steps[key].pop("command", None)
    return {**group, "steps": [steps[key] for key in KEPT_STEPS]}


class BlockDumper(yaml.SafeDumper):
    """YAML as a person writes a pipeline: a multi-line command as a block (`|`), not an escaped string."""


def _block(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """A string as YAML: a block when it spans lines."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


BlockDumper.add_representer(str, _block)


class _Parser(argparse.ArgumentParser):
    """argparse that refuses in one line (UsageError)."""

    def error(self, message: str) -> NoReturn:
        """One line, exit 2."""
        raise UsageError(f"{message} (usage: python -m vllm_ci.group_pipeline --module URL@COMMIT [FILE])")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the drop-in for the group file named (default: the checkout's), or one error line and exit 2."""
    parser = _Parser(prog="vllm_ci.group_pipeline", add_help=False)
    parser.add_argument("--module", required=True)
    parser.add_argument("file", nargs="?", default=UPSTREAM_GROUP)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        path = Path(args.file)
        step_function(args.module)  # refused before the file is read
        if not path.is_file():
            raise UsageError(f"{path}: no such file (vLLM's image-build group)")
        group = drop_in(path.read_text(), args.module, str(path))
        print(yaml.dump(group, Dumper=BlockDumper, sort_keys=False, width=120), end="")
    except UsageError as err:
        print_error(str(err))
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
