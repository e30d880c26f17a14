"""OCI image layouts: LayoutWriter writes them, LayoutReader reads them back, bad ones refused."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ocimirror.core.digest import Digest, Hasher
from ocimirror.errors import (
    BlobNotFound,
    DigestMismatch,
    InvalidLayout,
    SizeMismatch,
    TagNotFound,
)
from ocimirror.layout import (
    INDEX_MEDIA_TYPE,
    REF_NAME_ANNOTATION,
    LayoutReader,
    LayoutWriter,
    blob_path,
)
from ocimirror.testing import Blob, Image, Index, artifact, random_image, random_index, write_layout

MiB = 1024 * 1024


@pytest.fixture
def images() -> dict[str, Image | Index]:
    base = random_image(seed="base", layers=1).layers
    return {
        "app": random_image(seed="app", base=base, platform="linux/arm64/v8"),
        "multi": random_index(seed="multi"),
        "docker": random_image(seed="docker", base=base, docker=True),
    }


def _layout_path(tmp_path: Path, tar: bool) -> Path:
    return tmp_path / ("layout.tar" if tar else "layout")


def _every_blob(image: Image | Index) -> dict[Digest, bytes]:
    found = {b.digest: b.data for b in image.blobs()}
    found.update({m.digest: m.manifest for m in image.manifests()})
    return found


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_a_written_layout_reads_back_with_names_in_order_and_every_blob(
    tmp_path: Path, images: dict[str, Image | Index], tar: bool
) -> None:
    path = _layout_path(tmp_path, tar)
    sbom = artifact(images["app"])
    write_layout(path, [*images.items(), (None, sbom)], tar=tar)

    with LayoutReader.open(path) as reader:
        assert reader.is_tar is tar
        refs = reader.refs()
        assert [r.name for r in refs] == ["app", "multi", "docker", None]
        assert [r.digest for r in refs] == [i.digest for i in [*images.values(), sbom]]
        assert refs[0].media_type == "application/vnd.oci.image.manifest.v1+json"
        assert refs[0].platform == {"architecture": "arm64", "os": "linux", "variant": "v8"}
        assert refs[0].descriptor["annotations"] == {REF_NAME_ANNOTATION: "app"}
        assert refs[0].size == images["app"].size
        index = json.loads(reader.index_bytes())
        assert index["schemaVersion"] == 2 and index["mediaType"] == INDEX_MEDIA_TYPE
        assert reader.ref("multi").digest == images["multi"].digest

        expected: dict[Digest, bytes] = {}
        for image in [*images.values(), sbom]:
            expected.update(_every_blob(image))
        assert set(reader.digests()) == set(expected)
        for digest, data in expected.items():
            assert reader.has_blob(digest)
            assert reader.blob_size(digest) == len(data)
            assert reader.read_blob(digest) == data
            with reader.open_blob(digest) as f:
                assert f.read() == data


def test_a_layout_tar_is_byte_identical_for_the_same_content(
    tmp_path: Path, images: dict[str, Image | Index]
) -> None:
    write_layout(tmp_path / "a.tar", images, tar=True)
    write_layout(tmp_path / "b.tar", images, tar=True)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_a_tar_layout_lists_oci_layout_first_and_index_json_last(
    tmp_path: Path, images: dict[str, Image | Index]
) -> None:
    write_layout(tmp_path / "l.tar", images, tar=True)
    with tarfile.open(tmp_path / "l.tar") as archive:
        names = archive.getnames()
    assert names[0] == "oci-layout" and names[-1] == "index.json"


def test_an_unknown_name_raises_tag_not_found(
    tmp_path: Path, images: dict[str, Image | Index]
) -> None:
    write_layout(tmp_path / "l", images)
    with LayoutReader(tmp_path / "l") as reader, pytest.raises(TagNotFound):
        reader.ref("nope")


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_a_missing_blob_is_absent_everywhere(tmp_path: Path, tar: bool) -> None:
    path = _layout_path(tmp_path, tar)
    write_layout(path, {"x": random_image()}, tar=tar)
    missing = Digest.of(b"not there")
    with LayoutReader.open(path) as reader:
        assert not reader.has_blob(missing)
        for call in (reader.blob_size, reader.read_blob, reader.open_blob):
            with pytest.raises(BlobNotFound):
                call(missing)


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_read_blob_detects_a_flipped_byte(tmp_path: Path, tar: bool) -> None:
    path = _layout_path(tmp_path, tar)
    image = random_image(seed="corrupt")
    write_layout(path, {"x": image}, tar=tar)
    target = image.config.digest
    if tar:
        with tarfile.open(path) as archive:
            offset = archive.getmember(blob_path(target)).offset_data
        file, position = path, offset + 5
    else:
        file, position = path / blob_path(target), 5
    data = bytearray(file.read_bytes())
    data[position] ^= 0x01
    file.write_bytes(bytes(data))

    with LayoutReader.open(path) as reader:
        with pytest.raises(DigestMismatch, match="corrupt"):
            reader.read_blob(target)
        assert reader.read_blob(image.digest) == image.manifest


def test_read_blob_refuses_a_blob_over_max_size(tmp_path: Path) -> None:
    image = random_image(layer_size=4096)
    write_layout(tmp_path / "l", {"x": image})
    with LayoutReader.open(tmp_path / "l") as reader:
        assert reader.read_blob(image.digest, max_size=image.size) == image.manifest
        with pytest.raises(InvalidLayout, match="over the limit"):
            reader.read_blob(image.layers[0].digest, max_size=100)


def _chunks(size: int, chunk: bytes) -> Iterator[bytes]:
    for _ in range(size // len(chunk)):
        yield chunk


def test_streaming_a_32_mib_blob_into_a_tar_keeps_memory_small(tmp_path: Path) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    size = 32 * MiB
    hasher = Hasher()
    for piece in _chunks(size, chunk):
        hasher.update(piece)
    digest = hasher.digest()

    tracemalloc.start()
    try:
        with LayoutWriter(tmp_path / "big.tar", tar=True) as writer:
            writer.write_blob(digest, _chunks(size, chunk), size=size)
            writer.add_ref(
                {"mediaType": "application/octet-stream", "digest": str(digest), "size": size}
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB

    with LayoutReader.open(tmp_path / "big.tar") as reader, reader.open_blob(digest) as f:
        check = Hasher()
        while piece := f.read(MiB):
            check.update(piece)
    assert check.digest() == digest and check.size == size


def test_several_streams_from_one_tar_can_be_read_interleaved_and_in_threads(
    tmp_path: Path,
) -> None:
    image = random_image(seed="streams", layers=4, layer_size=300_000)
    write_layout(tmp_path / "l.tar", {"x": image}, tar=True)
    with LayoutReader.open(tmp_path / "l.tar") as reader:
        streams = [reader.open_blob(layer.digest) for layer in image.layers]
        pieces: list[list[bytes]] = [[] for _ in streams]
        while any(not p or p[-1] for p in pieces):
            for stream, got in zip(streams, pieces, strict=True):
                got.append(stream.read(7_777))
        for stream, got, layer in zip(streams, pieces, image.layers, strict=True):
            stream.close()
            assert b"".join(got) == layer.data

        errors: list[BaseException] = []

        def read_all(blob: Blob) -> None:
            try:
                for _ in range(5):
                    assert reader.read_blob(blob.digest) == blob.data
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=read_all, args=(b,)) for b in image.layers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


def test_an_open_blob_stream_is_seekable(tmp_path: Path) -> None:
    image = random_image(layer_size=5000)
    write_layout(tmp_path / "l.tar", {"x": image}, tar=True)
    data = image.layers[0].data
    with (
        LayoutReader.open(tmp_path / "l.tar") as reader,
        reader.open_blob(image.layers[0].digest) as f,
    ):
        f.seek(100)
        assert f.read(10) == data[100:110]
        f.seek(-10, io.SEEK_END)
        assert f.read() == data[-10:]


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
@pytest.mark.parametrize(
    ("announced_size", "digest_of", "error"),
    [
        (None, b"other", DigestMismatch),
        (5, b"hello world", SizeMismatch),  # longer than announced
        (50, b"hello world", SizeMismatch),  # shorter than announced
    ],
)
def test_write_blob_stores_nothing_that_does_not_match(
    tmp_path: Path,
    tar: bool,
    announced_size: int | None,
    digest_of: bytes,
    error: type[Exception],
) -> None:
    path = _layout_path(tmp_path, tar)
    digest = Digest.of(digest_of)
    with LayoutWriter(path, tar=tar) as writer:
        with pytest.raises(error):
            writer.write_blob(digest, [b"hello ", b"world"], size=announced_size)
        assert not writer.has_blob(digest)
    with LayoutReader.open(path) as reader:
        assert not reader.has_blob(digest)
    if not tar:
        assert list((path / "blobs").rglob("*.partial")) == []


def test_write_blob_skips_a_present_blob_without_consuming_its_chunks(tmp_path: Path) -> None:
    digest = Digest.of(b"data")
    with LayoutWriter(tmp_path / "l") as writer:
        writer.write_blob(digest, b"data")

        def boom() -> Iterator[bytes]:
            raise AssertionError("chunks consumed")
            yield b""  # pragma: no cover

        writer.write_blob(digest, boom())
        assert writer.has_blob(digest)


def _raises_inside(writer: LayoutWriter) -> None:
    with writer:
        image = random_image()
        writer.write_blob(image.digest, image.manifest)
        writer.add_ref(image.descriptor(), "latest")
        raise RuntimeError("interrupted")


def test_an_aborted_directory_writer_leaves_no_index_json(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        _raises_inside(LayoutWriter(tmp_path / "l"))
    assert not (tmp_path / "l" / "index.json").exists()
    with pytest.raises(InvalidLayout):
        LayoutReader.open(tmp_path / "l")


def test_an_aborted_tar_writer_leaves_no_file_at_all(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        _raises_inside(LayoutWriter(tmp_path / "l.tar", tar=True))
    assert list(tmp_path.iterdir()) == []


def test_a_tar_writer_shows_only_a_hidden_partial_file_until_closed(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path / "l.tar", tar=True)
    writer.write_blob(Digest.of(b"x"), b"x")
    assert not (tmp_path / "l.tar").exists()
    assert [p.name.startswith(".l.tar.") for p in tmp_path.iterdir()] == [True]
    writer.close()
    writer.close()  # idempotent
    assert [p.name for p in tmp_path.iterdir()] == ["l.tar"]
    with pytest.raises(ValueError, match="closed"):
        writer.write_blob(Digest.of(b"y"), b"y")


def test_a_directory_layout_is_extended_and_a_re_added_name_moves(tmp_path: Path) -> None:
    one, two, three = (random_image(seed=s) for s in ("one", "two", "three"))
    write_layout(tmp_path / "l", {"a": one, "b": two})
    write_layout(tmp_path / "l", [("a", three), (None, one), (None, one)])
    with LayoutReader.open(tmp_path / "l") as reader:
        assert [(r.name, r.digest) for r in reader.refs()] == [
            ("b", two.digest),
            ("a", three.digest),
            (None, one.digest),
        ]
        assert reader.read_blob(two.digest) == two.manifest


@pytest.mark.parametrize(
    ("descriptor", "name", "message"),
    [
        ({"mediaType": "x", "digest": "sha256:abc", "size": 1}, None, "invalid digest"),
        ({"digest": str(Digest.of(b"")), "size": 0}, None, "mediaType"),
        ({"mediaType": "x", "digest": str(Digest.of(b"")), "size": -1}, None, "size"),
        ({"mediaType": "x", "digest": str(Digest.of(b"")), "size": 0}, "has space", "ref name"),
        ({"mediaType": "x", "digest": str(Digest.of(b"")), "size": 0}, "", "ref name"),
    ],
)
def test_add_ref_refuses_a_malformed_entry(
    tmp_path: Path, descriptor: dict[str, Any], name: str | None, message: str
) -> None:
    with LayoutWriter(tmp_path / "l") as writer, pytest.raises(InvalidLayout, match=message):
        writer.add_ref(descriptor, name)


def test_a_gzip_compressed_layout_tar_is_read(
    tmp_path: Path, images: dict[str, Image | Index]
) -> None:
    write_layout(tmp_path / "l.tar", images, tar=True)
    (tmp_path / "l.tar.gz").write_bytes(gzip.compress((tmp_path / "l.tar").read_bytes()))
    with LayoutReader.open(tmp_path / "l.tar.gz") as reader:
        assert [r.name for r in reader.refs()] == list(images)
        for image in images.values():
            for digest, data in _every_blob(image).items():
                assert reader.read_blob(digest) == data


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_EMPTY_INDEX = b'{"schemaVersion":2,"manifests":[]}'


def test_tar_members_with_a_dot_prefix_and_links_inside_the_archive_are_read(
    tmp_path: Path,
) -> None:
    # The shape `docker save` produces: ./-prefixed names, legacy paths linking into blobs/.
    data = b"layer bytes"
    digest = Digest.of(data)
    path = _tar(
        tmp_path / "l.tar",
        [
            (_file("./oci-layout"), _LAYOUT),
            (_file("./index.json"), _EMPTY_INDEX),
            (_file(f"./{blob_path(digest)}"), data),
            (_link("legacy/layer.tar", f"../{blob_path(digest)}"), b""),
            (_link("hard", f"./{blob_path(digest)}", tarfile.LNKTYPE), b""),
        ],
    )
    with LayoutReader.open(path) as reader:
        assert reader.refs() == []
        assert reader.read_blob(digest) == data
        assert list(reader.digests()) == [digest]


@pytest.mark.parametrize(
    "bad_member",
    [
        _file("../evil"),
        _file("blobs/../../evil"),
        _file("/etc/evil"),
        _link("blobs/sha256/x", "../../../etc/passwd"),
        _link("blobs/sha256/y", "/etc/passwd"),
        _link("hard", "../outside", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out"],
)
def test_a_tar_with_a_member_escaping_the_archive_is_refused(
    tmp_path: Path, bad_member: tarfile.TarInfo
) -> None:
    path = _tar(
        tmp_path / "l.tar",
        [(_file("oci-layout"), _LAYOUT), (_file("index.json"), _EMPTY_INDEX), (bad_member, b"")],
    )
    with pytest.raises(InvalidLayout, match="escapes the archive"):
        LayoutReader.open(path)


def _dir_layout(path: Path, layout: bytes | None, index: bytes | None) -> Path:
    path.mkdir()
    if layout is not None:
        (path / "oci-layout").write_bytes(layout)
    if index is not None:
        (path / "index.json").write_bytes(index)
    return path


_GOOD_DESCRIPTOR = {"mediaType": "x", "digest": str(Digest.of(b"")), "size": 0}


@pytest.mark.parametrize(
    ("layout", "index", "message"),
    [
        (None, _EMPTY_INDEX, "no oci-layout"),
        (b'{"imageLayoutVersion":"2.0.0"}', _EMPTY_INDEX, "unsupported imageLayoutVersion '2.0.0'"),
        (b"{}", _EMPTY_INDEX, "unsupported imageLayoutVersion None"),
        (b"not json", _EMPTY_INDEX, "oci-layout is not valid JSON"),
        (_LAYOUT, None, "no index.json"),
        (_LAYOUT, b"{nope", "index.json is not valid JSON"),
        (_LAYOUT, b"\xff\xfe", "index.json is not valid JSON"),
        (_LAYOUT, b"[]", "not a JSON object"),
        (_LAYOUT, b'{"schemaVersion":1,"manifests":[]}', "schemaVersion 1"),
        (_LAYOUT, b'{"schemaVersion":2}', "no 'manifests' list"),
        (
            _LAYOUT,
            b'{"schemaVersion":2,"mediaType":"application/json","manifests":[]}',
            "mediaType 'application/json'",
        ),
        (_LAYOUT, b'{"schemaVersion":2,"manifests":[{"mediaType":"x"}]}', r"manifests\[0\]"),
        (
            _LAYOUT,
            json.dumps(
                {"schemaVersion": 2, "manifests": [{**_GOOD_DESCRIPTOR, "annotations": {"a": 1}}]}
            ).encode(),
            "annotations",
        ),
    ],
)
def test_an_invalid_layout_directory_is_refused_with_a_clear_message(
    tmp_path: Path, layout: bytes | None, index: bytes | None, message: str
) -> None:
    path = _dir_layout(tmp_path / "l", layout, index)
    with pytest.raises(InvalidLayout, match=message):
        LayoutReader.open(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such directory or tar file"),
        (lambda p: _write(p / "x.tar", b"this is not a tar file" * 100), "not a readable tar"),
        (lambda p: _write(p / "x.tar.gz", b"\x1f\x8b" + b"junk" * 10), "not a readable gzip"),
        (lambda p: _write(p / "x.tar.zst", b"\x28\xb5\x2f\xfd" + b"junk"), "zstd"),
        (lambda p: _tar(p / "x.tar", [(_file("index.json"), _EMPTY_INDEX)]), "no oci-layout"),
    ],
)
def test_a_path_that_is_not_a_layout_is_refused(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(InvalidLayout, match=message):
        LayoutReader.open(make(tmp_path))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_reader_constructor_does_no_io_and_a_closed_reader_refuses_use(
    tmp_path: Path,
) -> None:
    reader = LayoutReader(tmp_path / "missing")
    with pytest.raises(InvalidLayout):
        reader.refs()
    write_layout(tmp_path / "l", {"x": random_image()})
    reader = LayoutReader(tmp_path / "l")
    assert len(reader.refs()) == 1
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.refs()


def test_the_containerd_image_name_is_a_fallback_ref_name(tmp_path: Path) -> None:
    entries = [
        {**_GOOD_DESCRIPTOR, "annotations": {"io.containerd.image.name": "reg:5000/a/b:v1"}},
        {**_GOOD_DESCRIPTOR, "annotations": {"io.containerd.image.name": "reg:5000/a/b"}},
        {
            **_GOOD_DESCRIPTOR,
            "annotations": {
                "io.containerd.image.name": "docker.io/library/x:latest",
                REF_NAME_ANNOTATION: "oci-wins",
            },
        },
    ]
    index = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
    with LayoutReader.open(_dir_layout(tmp_path / "l", _LAYOUT, index)) as reader:
        assert [r.name for r in reader.refs()] == ["v1", None, "oci-wins"]


_SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(_SKOPEO is None, reason="skopeo is not installed (not on PATH)")


def _skopeo(*args: str) -> bytes:
    assert _SKOPEO is not None
    return subprocess.run([_SKOPEO, *args], check=True, capture_output=True, timeout=120).stdout


@needs_skopeo
@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_skopeo_accepts_a_written_layout(tmp_path: Path, tar: bool) -> None:
    # skopeo (containers/image) only resolves OCI media types in index.json, so no docker=True.
    image = random_image(seed="skopeo", platform="linux/amd64")
    index = random_index(seed="skopeo")
    path = _layout_path(tmp_path, tar)
    write_layout(path, {"image": image, "index": index}, tar=tar)
    transport = "oci-archive" if tar else "oci"

    raw = _skopeo("inspect", "--raw", f"{transport}:{path}:image")
    assert Digest.of(raw) == image.digest
    inspected = json.loads(_skopeo("inspect", f"{transport}:{path}:index"))
    assert inspected["Digest"] == str(index.digest)
    if not tar:  # copying checks every blob's digest
        _skopeo("copy", "--all", f"oci:{path}:index", f"dir:{tmp_path / 'copy'}")


@needs_skopeo
def test_a_layout_written_by_skopeo_is_read(tmp_path: Path) -> None:
    index = random_index(seed="from-skopeo")
    write_layout(tmp_path / "src", {"v1": index})
    _skopeo("copy", "--all", f"oci:{tmp_path / 'src'}:v1", f"oci-archive:{tmp_path / 'out.tar'}:v2")
    with LayoutReader.open(tmp_path / "out.tar") as reader:
        assert reader.ref("v2").digest == index.digest
        for digest, data in _every_blob(index).items():
            assert reader.read_blob(digest) == data
