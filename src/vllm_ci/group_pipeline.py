"""vLLM's image-build group as a drop-in, derived from vLLM's own file: the checkout's
`.buildkite/image_build/image_build.yaml` as it is, with the three steps this project builds kept (image-build,
the non-root smoke test, image-build-cpu) and the two build scripts they call swapped for ours, called with the
same positional arguments; nothing else changed. Printed as YAML for `buildkite-agent pipeline upload` (or
`bk local run`), so a vLLM PR's edit to its group reaches the pipeline, and none of vLLM's text is kept here.

    python -P -m vllm_ci.group_pipeline [FILE] | buildkite-agent pipeline upload

Refused in one line (exit 2): a file that is not there or not YAML, a kept step missing, or a build step that no
longer calls the script it swaps (the drop-in would otherwise run upstream's build unnoticed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from vllm_ci.entry import print_error
from vllm_ci.errors import UsageError

UPSTREAM_GROUP: Final = ".buildkite/image_build/image_build.yaml"
KEPT_STEPS: Final = ("image-build", "image-build-smoke-test", "image-build-cpu")
# Upstream's build scripts, as its commands call them, and what calls ours with the same arguments.
OUR_SCRIPTS: Final = {
    "image-build": (".buildkite/image_build/image_build.sh", "ci/buildkite-step image-build"),
    "image-build-cpu": (".buildkite/image_build/image_build_cpu.sh", "ci/buildkite-step image-build-cpu"),
}


def drop_in(text: str, name: str = UPSTREAM_GROUP) -> dict[str, Any]:
    """Upstream's group (its YAML text) with the kept steps only and their build scripts swapped for ours."""
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
        steps[key] = {**steps[key], "commands": [command.replace(theirs, ours) for command in commands]}
        steps[key].pop("command", None)
    return {**group, "steps": [steps[key] for key in KEPT_STEPS]}


class BlockDumper(yaml.SafeDumper):
    """YAML as a person writes a pipeline: a multi-line command as a block (`|`), not an escaped string."""


def _block(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """A string as YAML: a block when it spans lines."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


BlockDumper.add_representer(str, _block)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the drop-in for the group file named (default: the checkout's), or one error line and exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0] if args else UPSTREAM_GROUP)
    try:
        if len(args) > 1:
            raise UsageError("usage: python -m vllm_ci.group_pipeline [FILE]")
        if not path.is_file():
            raise UsageError(f"{path}: no such file (vLLM's image-build group)")
        print(yaml.dump(drop_in(path.read_text(), str(path)), Dumper=BlockDumper, sort_keys=False, width=120), end="")
    except UsageError as err:
        print_error(str(err))
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
