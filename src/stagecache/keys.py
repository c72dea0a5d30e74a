"""Cache keys: the sha256 of a canonical, versioned JSON preimage of what changes a stage's result."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Final

from stagecache.redact import without_userinfo

# Bump when the preimage's shape or meaning changes: every key changes with it.
# 2: inputs are a manifest digest of content and executable bits (no file modes, no engine version);
#    code (the stage's code fingerprint) replaces a hand-kept recipe number.
# 3: layers, the compression of the entry's layers: an entry is only ever built on entries of its own
#    compression, which a publish keeps as they are instead of pulling and recompressing them.
# 4: steps, the text of the steps a stage runs as its build was given them (a Dockerfile's instructions):
#    label -> digest, so an edited instruction changes its stage's key and its miss names it.
SCHEMA_VERSION: Final = 4
# How the layers of cache entries are compressed, as the engine's publish names them: zstd makes and
# unpacks layers several times faster than gzip; gzip is what registries' oldest clients read.
LAYER_COMPRESSIONS: Final = ("zstd", "gzip")
DEFAULT_LAYER_COMPRESSION: Final = "zstd"


def canonical_json(value: object) -> str:
    """Text that is the same for the same value, in every process: sorted keys, no white space."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def json_digest(value: object) -> str:
    """The sha256 hex of a value's canonical JSON: the one hash of keys, tails and manifests."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def checked_compression(name: str) -> str:
    """A layer compression this cache knows, as given; a ValueError naming the choices otherwise."""
    if name not in LAYER_COMPRESSIONS:
        raise ValueError(f"{' or '.join(LAYER_COMPRESSIONS)}, not {name!r}")
    return name


# Labels written on every cache image: an image whose key label does not match is never used.
KEY_LABEL: Final = "org.vllm-ci.stagecache.key"
STAGE_LABEL: Final = "org.vllm-ci.stagecache.stage"
PREIMAGE_LABEL: Final = "org.vllm-ci.stagecache.preimage"
CREATED_LABEL: Final = "org.vllm-ci.stagecache.created"


@dataclasses.dataclass(frozen=True)
class KeyPreimage:
    """Everything that changes a stage's result, and nothing else."""

    stage: str
    code: str  # fingerprint of the code that builds the stage (its function and what it calls)
    args: Mapping[str, str]
    parents: Mapping[str, str]
    inputs: str  # manifest digest of the files it reads: content, executable bit, symlinks (inputs.py)
    layers: str = DEFAULT_LAYER_COMPRESSION  # the entry's layer compression (LAYER_COMPRESSIONS)
    # The steps the stage runs as text given to the build (a Dockerfile's instructions): label -> digest.
    steps: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Left out on purpose: timestamps, umask, owners, host paths, the cache repositories,
    # credentials, the engine version (the inputs digest is ours, not the engine's) and the CA
    # certificates the engine injects; none of them changes what the stage produces.

    def document(self) -> dict[str, object]:
        """The preimage as JSON data: a type tag and version, and what it holds."""
        return {
            "type": "stagecache.key",
            "schema": SCHEMA_VERSION,
            "stage": self.stage,
            "code": self.code,
            # A URL's user-info (`https://user:token@host`) is a credential: it does not change what
            # is built, and the preimage is stored as a label. Left out, so a key is the same with
            # and without it, and no key, label, plan or miss explanation holds it.
            "args": {name: without_userinfo(value, mark="") for name, value in self.args.items()},
            "parents": dict(self.parents),
            "inputs": self.inputs,
            "layers": self.layers,
            "steps": dict(self.steps),
        }

    def canonical(self) -> str:
        """The preimage as canonical JSON: sorted keys, no white space."""
        return canonical_json(self.document())

    def key(self) -> str:
        """The stage key: sha256 hex of the canonical preimage."""
        return json_digest(self.document())


def cache_tag(stage: str, key: str) -> str:
    """The tag a stage's result is stored under in a cache repository."""
    return f"{stage}-{key}"


def explain_difference(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """Name the preimage fields that differ between two preimages, to explain a miss."""
    changed = []
    for field in sorted(set(old) | set(new)):
        before, after = old.get(field), new.get(field)
        if before == after:
            continue
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            changed += [
                f"{field}.{sub}" for sub in sorted(set(before) | set(after)) if before.get(sub) != after.get(sub)
            ]
        else:
            changed.append(field)
    return changed
