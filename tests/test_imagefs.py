"""An image's filesystem from its layers, as an OCI runtime unpacks them (no engine: tars made here)."""

from __future__ import annotations

import hashlib
import io
import tarfile

from imagefs import Entry, apply_layer, difference


def layer(*members: tuple[str, str, bytes | str]) -> tarfile.TarFile:
    """A layer tar of (kind, path, content or link target) members, opened for reading."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for kind, path, content in members:
            info = tarfile.TarInfo(path)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(content)
                archive.addfile(info)
            else:
                data = content if isinstance(content, bytes) else content.encode()
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r")


def sha(data: bytes) -> str:
    """A file's content digest as Entry holds it."""
    return hashlib.sha256(data).hexdigest()


def test_whiteouts_remove_a_path_and_opaque_markers_empty_a_folder_but_keep_it() -> None:
    files: dict[str, Entry] = {}
    apply_layer(
        files,
        layer(
            ("dir", "etc", ""),
            ("file", "etc/a", b"a"),
            ("dir", "opt", ""),
            ("file", "opt/x/y", b"y"),
            ("file", "opt/z", b"z"),
        ),
    )
    apply_layer(files, layer(("file", "etc/.wh.a", b""), ("file", "opt/.wh..wh..opq", b""), ("file", "opt/new", b"n")))
    assert sorted(files) == ["etc", "opt", "opt/new"]


def test_a_hardlink_has_its_targets_content_and_a_file_replacing_a_folder_drops_its_children() -> None:
    files: dict[str, Entry] = {}
    apply_layer(
        files,
        layer(
            ("file", "bin/tool", b"binary"),
            ("hardlink", "bin/alias", "bin/tool"),
            ("dir", "data", ""),
            ("file", "data/old", b"old"),
        ),
    )
    apply_layer(files, layer(("symlink", "data", "/elsewhere")))
    assert files["bin/alias"] == Entry("file", 0o644, 0, 0, sha(b"binary"))
    assert files["data"].kind == "symlink" and files["data"].content == "/elsewhere"
    assert "data/old" not in files


def test_the_difference_names_each_differing_path_once_with_what_differs() -> None:
    ours = {
        "a": Entry("file", 0o644, 0, 0, sha(b"1")),
        "b": Entry("file", 0o644, 0, 0, sha(b"2")),
        "same": Entry("file", 0o644, 0, 0, sha(b"3")),
    }
    theirs = {
        "a": Entry("file", 0o755, 0, 0, sha(b"1")),
        "c": Entry("dir", 0o755, 0, 0, ""),
        "same": Entry("file", 0o644, 0, 0, sha(b"3")),
    }
    lines = difference(ours, theirs)
    assert [line.split(":")[0] for line in lines] == ["differs", "only ours", "only theirs"]
    assert lines[0].startswith("differs: /a: ours file 644") and "theirs file 755" in lines[0]


def test_a_layer_reads_the_same_whether_its_blob_is_zstd_gzip_or_plain(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import gzip

    import zstandard

    from imagefs import layer_tar

    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as archive:
        data = b"print('x')\n"
        info = tarfile.TarInfo("opt/x.py")
        info.size, info.mode = len(data), 0o755
        archive.addfile(info, io.BytesIO(data))
    blobs = {
        "application/vnd.oci.image.layer.v1.tar+zstd": zstandard.ZstdCompressor().compress(plain.getvalue()),
        "application/vnd.oci.image.layer.v1.tar+gzip": gzip.compress(plain.getvalue()),
        "application/vnd.oci.image.layer.v1.tar": plain.getvalue(),
    }
    for media_type, content in blobs.items():
        blob = tmp_path / "layer"
        blob.write_bytes(content)
        files: dict[str, Entry] = {}
        with layer_tar(blob, media_type) as archive:
            apply_layer(files, archive)
        assert files == {"opt/x.py": Entry("file", 0o755, 0, 0, sha(b"print('x')\n"))}, media_type
