"""The registry's JSON request log as stagecache.traffic reads it, for the build report and the bench alike."""

from __future__ import annotations

import json
import pathlib

from stagecache.traffic import RegistryLog

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def entry(method: str, uri: str, status: int, written: int = 0) -> str:
    """One line of docker-registry's JSON log for a completed request."""
    return json.dumps(
        {
            "msg": "response completed",
            "http.request.method": method,
            "http.request.uri": uri,
            "http.response.status": status,
            "http.response.written": written,
        }
    )


def test_blob_reads_whole_or_in_part_and_uploads_per_repository_are_counted_within_the_marks(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "registry.log"
    path.write_text(entry("GET", f"/v2/bench/x/blobs/{A}", 200, 100) + "\n")
    log = RegistryLog(path)
    mark = log.mark()
    lines = [
        entry("GET", f"/v2/bench/x/blobs/{A}", 200, 10),
        entry("GET", f"/v2/bench/x/blobs/{A}", 206, 5),  # a range read
        entry("GET", f"/v2/bench/x/blobs/{B}", 404),
        "127.0.0.1 - - an access-log line, not JSON",
        entry("PUT", f"/v2/bench/x/blobs/uploads/u1?digest={A}", 201),
        entry("PUT", f"/v2/bench/y/blobs/uploads/u2?digest={A}", 201),  # the same blob, another repository
        entry("POST", f"/v2/bench/y/blobs/uploads/?mount={B}&from=bench/x", 201),
        entry("GET", f"/v2/other/z/blobs/{B}", 200, 1000),  # another user of the registry
    ]
    with path.open("a") as out:
        out.write("\n".join(lines) + "\n")
    end = log.mark()
    with path.open("a") as out:
        out.write(entry("GET", f"/v2/bench/x/blobs/{B}", 200, 7) + "\n")  # after the end mark
    traffic = log.since(mark, end, ("bench/",))
    assert traffic.pulled == {A: 15} and traffic.pulled_bytes == 15
    assert traffic.uploads == {("bench/x", A), ("bench/y", A)} and traffic.pushed == {A}
    assert traffic.mounted == {B}
    assert log.since(mark, end).pulled == {A: 15, B: 1000}
    assert log.since(mark).pulled == {A: 15, B: 1007}
