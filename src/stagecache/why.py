"""Why a stage missed: what changed since the newest entry of that stage in the read repositories.

Each export leaves two things beside the entry: the tag `<stage>-latest` on it, and the manifest
of the files it read (path -> content digest) as a small OCI artifact tagged `<entry tag>.inputs`,
whose `subject` names the entry's manifest digest: the record is also the entry's seal, and a look-up
passes over a tag whose record names another image. An entry without a record (an export interrupted
between its manifest and its record, a record write that failed, an entry from before records) is
whole all the same, since a registry shows a tag only once its manifest is stored and the look-up
checks every blob: it is used, and sealed by the first build that uses it and writes to its
repository (`seal_entry`). A miss
reads both back and names, in one line, the ARGs (old -> new), parent stages, code and files
(changed ~, added +, removed -) that differ."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from stagecache.keys import explain_difference
from stagecache.registry import OCI_MANIFEST, RegistryClient
from stagecache.report import shown_path

LATEST_SUFFIX: Final = "-latest"
INPUTS_SUFFIX: Final = ".inputs"
INPUTS_TYPE: Final = "application/vnd.stagecache.inputs.v1+json"
INPUTS_LAYER_TYPE: Final = INPUTS_TYPE + "+gzip"  # paths compress well: vLLM's 9,108 files, 1.17 MB to 0.42 MB
EMPTY_TYPE: Final = "application/vnd.oci.empty.v1+json"
FILES_NAMED: Final = 5  # how many paths one line names before "and N more"


def latest_tag(stage: str) -> str:
    """The tag that follows the newest entry of a stage."""
    return stage + LATEST_SUFFIX


def inputs_tag(entry_tag: str) -> str:
    """The tag of an entry's input manifest."""
    return entry_tag + INPUTS_SUFFIX


async def store_inputs(
    client: RegistryClient, repository: str, entry_tag: str, inputs: Mapping[str, str], subject: Mapping[str, Any]
) -> None:
    """Store an entry's input manifest beside it, gzipped, as an artifact (outside the image and its config)
    whose subject is the entry's manifest descriptor."""
    document = json.dumps(dict(sorted(inputs.items())), separators=(",", ":")).encode()
    content = gzip.compress(document, mtime=0)  # mtime 0: the same inputs, the same blob
    blob = await client.put_blob(repository, content)
    empty = await client.put_blob(repository, b"{}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": INPUTS_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": empty, "size": 2},
        "layers": [{"mediaType": INPUTS_LAYER_TYPE, "digest": blob, "size": len(content)}],
        "subject": dict(subject),
    }
    await client.put_manifest(repository, inputs_tag(entry_tag), json.dumps(manifest).encode(), OCI_MANIFEST)


async def seal_entry(
    client: RegistryClient, repository: str, entry_tag: str, inputs: Mapping[str, str], reference: str = ""
) -> tuple[bytes, str] | None:
    """Seal an entry with its input manifest, naming the image at `reference` (a digest; the tag when
    empty); the entry's manifest and media type, or None when there is no such image."""
    found = await client.raw_manifest(repository, reference or entry_tag)
    if found is None:
        return None
    content, media_type = found
    subject = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(content).hexdigest(), "size": len(content)}
    await store_inputs(client, repository, entry_tag, inputs, subject)
    return found


async def describe_entry(
    client: RegistryClient, repository: str, stage: str, entry_tag: str, inputs: Mapping[str, str]
) -> None:
    """Seal a new entry and point `<stage>-latest` at it (the same manifest bytes, so the same digest).
    The manifest is read back from the tag, so that when two builds export one key at once, the record
    names whichever image the tag ends up on."""
    if found := await seal_entry(client, repository, entry_tag, inputs):
        await client.put_manifest(repository, latest_tag(stage), *found)


async def sealed_digest(client: RegistryClient, repository: str, entry_tag: str) -> str | None:
    """The manifest digest an entry's record names, or None when it has no record."""
    found = await client.manifest(repository, inputs_tag(entry_tag))
    return None if found is None else (found[0].get("subject") or {}).get("digest")


async def load_inputs(client: RegistryClient, repository: str, entry_tag: str) -> dict[str, str] | None:
    """An entry's input manifest, or None when it has none (a record stored before they were gzipped is read too)."""
    found = await client.manifest(repository, inputs_tag(entry_tag))
    if found is None or not found[0].get("layers"):
        return None
    layer = found[0]["layers"][0]
    content = await client.blob(repository, layer["digest"])
    return json.loads(gzip.decompress(content) if layer.get("mediaType") == INPUTS_LAYER_TYPE else content)


# The order a person reads a miss in: what was asked, what it builds on, how, from which files.
EXPLAINED_FIELDS: Final = ("args", "steps", "parents", "code", "inputs", "layers")


def explain(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_inputs: Mapping[str, str] | None,
    new_inputs: Mapping[str, str],
    step_notes: Mapping[str, str] | None = None,
) -> str:
    """One line naming what differs between an old entry's preimage and the new one (step_notes: where
    each of the stage's steps is now, to name a changed one)."""
    if old.get("schema") != new.get("schema"):
        return f"key format changed (schema {old.get('schema')} -> {new.get('schema')})"
    old, new = _with_mappings(old), _with_mappings(new)
    changed = [f for f in explain_difference(old, new) if f.partition(".")[0] in EXPLAINED_FIELDS]
    changed.sort(key=lambda f: EXPLAINED_FIELDS.index(f.partition(".")[0]))  # stable: names stay sorted
    reasons = []
    for field in changed:
        kind, _, name = field.partition(".")
        if kind == "args":
            reasons.append(f"ARG {name}: {_shown(old['args'].get(name))} -> {_shown(new['args'].get(name))}")
        elif kind == "steps":
            now = "added" if name not in old["steps"] else "removed" if name not in new["steps"] else "changed"
            where = (step_notes or {}).get(name)
            reasons.append(f"{name} {now}" + (f" ({where})" if where else ""))
        elif kind == "parents":
            reasons.append(f"parent {name} changed")
        elif kind == "code":
            reasons.append("the stage's code changed")
        elif kind == "layers":
            reasons.append(f"layer compression: {old.get('layers')} -> {new.get('layers')}")
        else:
            reasons.append(_files_changed(old_inputs, new_inputs))
    return "; ".join(reasons) or "same inputs as the newest entry (that entry is another key's)"


def _with_mappings(preimage: Mapping[str, Any]) -> dict[str, Any]:
    """A preimage whose args and parents are mappings even when absent, so they differ by name."""
    return {
        **preimage,
        "args": preimage.get("args") or {},
        "steps": preimage.get("steps") or {},
        "parents": preimage.get("parents") or {},
    }


def _files_changed(old: Mapping[str, str] | None, new: Mapping[str, str]) -> str:
    """The input files that differ, by path."""
    if old is None:
        return "input files changed (the old entry has no input manifest)"
    changes = [f"~{shown_path(p)}" for p in sorted(set(old) & set(new)) if old[p] != new[p]]
    changes += [f"+{shown_path(p)}" for p in sorted(set(new) - set(old))]
    changes += [f"-{shown_path(p)}" for p in sorted(set(old) - set(new))]
    more = f" and {len(changes) - FILES_NAMED} more" if len(changes) > FILES_NAMED else ""
    return "files " + ", ".join(changes[:FILES_NAMED]) + more


def _shown(value: object) -> str:
    """An ARG value as a person reads it."""
    return "(unset)" if value is None else repr(value)
