"""Reading and writing OCI image layouts, as a directory or as a tar file.

An OCI image layout (image-spec ``image-layout.md``) is the air-gap transfer format::

    oci-layout          {"imageLayoutVersion": "1.0.0"}
    index.json          an image index; an entry names itself with the
                        org.opencontainers.image.ref.name annotation (its tag)
    blobs/<alg>/<hex>   every manifest, config and layer, by digest

:class:`LayoutWriter` exports one and :class:`LayoutReader` imports one. Both do plain
synchronous file I/O in constant memory; async callers run them in a thread.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO, Final, Self

import attrs

from ocimirror.core.digest import Digest, Hasher
from ocimirror.errors import (
    BlobNotFound,
    DigestMismatch,
    InvalidDigest,
    InvalidLayout,
    SizeMismatch,
    TagNotFound,
)

__all__ = [
    "CONTAINERD_NAME_ANNOTATION",
    "INDEX_FILE",
    "INDEX_MEDIA_TYPE",
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "MAX_INDEX_SIZE",
    "REF_NAME_ANNOTATION",
    "LayoutReader",
    "LayoutRef",
    "LayoutWriter",
    "blob_path",
]

#: The file that marks a directory (or tar) as an OCI image layout.
LAYOUT_FILE: Final = "oci-layout"
#: The image index at the root of a layout.
INDEX_FILE: Final = "index.json"
#: The only ``imageLayoutVersion`` the image-spec defines.
LAYOUT_VERSION: Final = "1.0.0"
#: The annotation that gives an ``index.json`` entry its name (tag).
REF_NAME_ANNOTATION: Final = "org.opencontainers.image.ref.name"
#: containerd's (and ``docker save``'s) full image name annotation, read as a fallback.
CONTAINERD_NAME_ANNOTATION: Final = "io.containerd.image.name"
#: The media type of ``index.json``.
INDEX_MEDIA_TYPE: Final = "application/vnd.oci.image.index.v1+json"
#: The largest ``index.json`` a reader accepts (about 200,000 entries).
MAX_INDEX_SIZE: Final = 64 * 1024 * 1024

_MAX_LAYOUT_FILE_SIZE = 64 * 1024
_CHUNK = 1024 * 1024
_LAYOUT_FILE_BYTES = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()
# The ref name grammar containers/image accepts: looser than the image-spec's, so that every
# Docker tag (``_x``, ``a__b``) fits, but still no spaces, control characters or empty parts.
_REF_NAME = re.compile(r"[A-Za-z0-9._:@+-]+(?:/[A-Za-z0-9._:@+-]+)*")
_MAX_LINK_HOPS = 16


def blob_path(digest: Digest) -> str:
    """The path of a blob inside a layout: ``blobs/<algorithm>/<hex>``."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


@attrs.frozen
class LayoutRef:
    """One entry of ``index.json``: a descriptor and its ref name (tag), if any."""

    #: The entry's ``mediaType`` (an image manifest or an index).
    media_type: str
    #: The entry's ``digest``.
    digest: Digest
    #: The entry's ``size`` in bytes.
    size: int
    #: The ``org.opencontainers.image.ref.name`` annotation, else the tag part of
    #: ``io.containerd.image.name``, else ``None``.
    name: str | None
    #: The raw descriptor JSON, as it appears in ``index.json``.
    descriptor: dict[str, Any] = attrs.field(hash=False)

    @property
    def annotations(self) -> dict[str, str]:
        """The descriptor's annotations (empty if it has none)."""
        return dict(self.descriptor.get("annotations") or {})

    @property
    def platform(self) -> dict[str, Any] | None:
        """The descriptor's ``platform``, if it has one."""
        platform = self.descriptor.get("platform")
        return dict(platform) if isinstance(platform, dict) else None


def _oci_ref_name(annotations: Mapping[str, Any] | None) -> str | None:
    if not annotations:
        return None
    name = annotations.get(REF_NAME_ANNOTATION)
    return name if isinstance(name, str) and name else None


def _ref_name(annotations: Mapping[str, Any] | None) -> str | None:
    name = _oci_ref_name(annotations)
    if name is not None or not annotations:
        return name
    full = annotations.get(CONTAINERD_NAME_ANNOTATION)
    if not isinstance(full, str):
        return None
    # "registry:5000/repo:tag" -> "tag"; a name without a tag (or only a digest) has none.
    last = full.rsplit("/", 1)[-1].split("@", 1)[0]
    _, sep, tag = last.rpartition(":")
    return tag if sep and tag else None


def _parse_descriptor(raw: Any, where: str) -> LayoutRef:
    if not isinstance(raw, dict):
        raise InvalidLayout(f"{where} is not a JSON object")
    media_type = raw.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidLayout(f"{where} has no mediaType string")
    try:
        digest = Digest.parse(raw.get("digest"))  # type: ignore[arg-type]
    except InvalidDigest as e:
        raise InvalidLayout(f"{where} has an invalid digest: {e.message}") from e
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidLayout(f"{where} has no size, or a size that is not a non-negative integer")
    annotations = raw.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())
    ):
        raise InvalidLayout(f"{where} has annotations that are not a string-to-string object")
    return LayoutRef(media_type, digest, size, _ref_name(annotations), raw)


def _parse_index(data: bytes, label: str) -> list[LayoutRef]:
    try:
        index = json.loads(data)
    except ValueError as e:  # also UnicodeDecodeError
        raise InvalidLayout(f"{label}: index.json is not valid JSON: {e}") from e
    if not isinstance(index, dict):
        raise InvalidLayout(f"{label}: index.json is not a JSON object")
    if index.get("schemaVersion") != 2:
        raise InvalidLayout(
            f"{label}: index.json has schemaVersion {index.get('schemaVersion')!r}, expected 2"
        )
    media_type = index.get("mediaType", INDEX_MEDIA_TYPE)
    if media_type != INDEX_MEDIA_TYPE:
        raise InvalidLayout(
            f"{label}: index.json has mediaType {media_type!r}, expected {INDEX_MEDIA_TYPE}"
        )
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidLayout(f"{label}: index.json has no 'manifests' list")
    return [
        _parse_descriptor(raw, f"{label}: index.json manifests[{i}]")
        for i, raw in enumerate(manifests)
    ]


def _check_layout_file(data: bytes, label: str) -> None:
    try:
        layout = json.loads(data)
    except ValueError as e:
        raise InvalidLayout(f"{label}: oci-layout is not valid JSON: {e}") from e
    version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
    if version != LAYOUT_VERSION:
        raise InvalidLayout(
            f"{label}: unsupported imageLayoutVersion {version!r} in oci-layout "
            f"(this reader knows {LAYOUT_VERSION!r})"
        )


# --- reading -------------------------------------------------------------------------------


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes at ``start`` of a shared file.

    Every read seeks under the shared lock, so any number of windows (in any threads) can
    stream from the one open tar file at the same time.
    """

    def __init__(self, file: IO[bytes], lock: threading.Lock, start: int, size: int) -> None:
        super().__init__()
        self._file = file
        self._lock = lock
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._size - self._pos)
        if n <= 0:
            return 0
        with self._lock:
            self._file.seek(self._start + self._pos)
            got = self._file.readinto(view[:n])  # type: ignore[attr-defined]
        if not got:
            raise InvalidLayout("the layout tar file ended inside a member (truncated?)")
        self._pos += got
        return int(got)


class _Source:
    """Where a reader finds files: a directory or a scanned tar archive."""

    label: str

    def size(self, rel: str) -> int | None:
        raise NotImplementedError

    def open(self, rel: str) -> BinaryIO:
        raise NotImplementedError

    def blob_names(self) -> Iterator[tuple[str, str]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _DirSource(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)

    def size(self, rel: str) -> int | None:
        try:
            st = (self.root / rel).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def open(self, rel: str) -> BinaryIO:
        return open(self.root / rel, "rb")

    def blob_names(self) -> Iterator[tuple[str, str]]:
        try:
            algorithms = sorted(os.scandir(self.root / "blobs"), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for alg in algorithms:
            if alg.is_dir():
                for entry in sorted(os.scandir(alg.path), key=lambda e: e.name):
                    if entry.is_file():
                        yield alg.name, entry.name


class _TarSource(_Source):
    def __init__(self, file: IO[bytes], label: str, members: dict[str, tuple[int, int]]) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._members = members
        self.label = label

    def size(self, rel: str) -> int | None:
        member = self._members.get(rel)
        return None if member is None else member[1]

    def open(self, rel: str) -> BinaryIO:
        member = self._members.get(rel)
        if member is None:
            raise FileNotFoundError(rel)
        return io.BufferedReader(_Window(self._file, self._lock, *member), _CHUNK)

    def blob_names(self) -> Iterator[tuple[str, str]]:
        for name in sorted(self._members):
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == "blobs":
                yield parts[1], parts[2]

    def close(self) -> None:
        self._file.close()


def _clean_member_name(name: str, label: str) -> str:
    """The archive-relative path of a member; refuses absolute paths and ``..``."""
    if name.startswith("/") or "\\" in name or ".." in name.split("/"):
        raise InvalidLayout(f"{label}: tar member {name!r} escapes the archive (path traversal)")
    return posixpath.normpath(name).lstrip("/") if name else "."


def _scan_tar(file: IO[bytes], label: str) -> dict[str, tuple[int, int]]:
    """Map each readable file of a tar archive to ``(offset, size)``, resolving links."""
    try:
        with tarfile.open(fileobj=file, mode="r:") as archive:
            members = archive.getmembers()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InvalidLayout(f"{label} is not a readable tar archive: {e}") from e
    files: dict[str, tuple[int, int]] = {}
    links: dict[str, str] = {}
    for member in members:
        name = _clean_member_name(member.name, label)
        if member.issym():
            target = member.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise InvalidLayout(
                    f"{label}: tar symlink {member.name!r} -> {target!r} escapes the archive"
                )
            links[name] = resolved
            files.pop(name, None)
        elif member.islnk():
            links[name] = _clean_member_name(member.linkname, label)
            files.pop(name, None)
        elif member.isreg():
            if member.issparse():
                raise InvalidLayout(f"{label}: tar member {member.name!r} is a sparse file")
            files[name] = (member.offset_data, member.size)
            links.pop(name, None)
    for name, target in links.items():
        for _ in range(_MAX_LINK_HOPS):
            if target not in links:
                break
            target = links[target]
        if target in files:
            files[name] = files[target]
    return files


def _open_tar(path: Path) -> _TarSource:
    label = str(path)
    file: IO[bytes] = open(path, "rb")  # noqa: SIM115 - kept open by the source
    try:
        magic = file.read(4)
        file.seek(0)
        if magic[:2] == b"\x1f\x8b":
            # Random access into gzip means decompressing from the start every time: decompress
            # once into an anonymous temporary file and read that instead.
            plain = tempfile.TemporaryFile()  # noqa: SIM115 - kept open by the source
            try:
                with gzip.GzipFile(fileobj=file, mode="rb") as gz:
                    shutil.copyfileobj(gz, plain, _CHUNK)
            except (OSError, EOFError, zlib.error) as e:
                plain.close()
                raise InvalidLayout(f"{label} is not a readable gzip file: {e}") from e
            file.close()
            file = plain
            file.seek(0)
        elif magic == b"\x28\xb5\x2f\xfd":
            raise InvalidLayout(f"{label} is zstd-compressed: decompress it to a plain tar first")
        return _TarSource(file, label, _scan_tar(file, label))
    except BaseException:
        file.close()
        raise


class LayoutReader:
    """Reads an OCI image layout from a directory or a tar file (plain, or gzip-compressed).

    The constructor does no I/O; :meth:`open` (or the first use, or ``with``) reads and
    checks ``oci-layout`` and ``index.json``. Blobs are read on demand and are safe to read
    from several threads at once. Close the reader when done (it holds the tar file open).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._source: _Source | None = None
        self._index: bytes = b""
        self._refs: list[LayoutRef] = []
        self._closed = False
        self._load_lock = threading.Lock()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Self:
        """Open the layout at ``path``; raise :class:`InvalidLayout` if it is not one."""
        reader = cls(path)
        reader._ensure()
        return reader

    @property
    def path(self) -> Path:
        """The directory or tar file read."""
        return self._path

    @property
    def is_tar(self) -> bool:
        """Whether the layout is a tar file rather than a directory."""
        return not self._path.is_dir()

    def _ensure(self) -> _Source:
        if self._closed:
            raise ValueError(f"LayoutReader for {self._path} is closed")
        if self._source is not None:
            return self._source
        with self._load_lock:
            if self._source is None:
                self._source = self._load()
        return self._source

    def _load(self) -> _Source:
        path = self._path
        if path.is_dir():
            source: _Source = _DirSource(path)
        elif path.is_file():
            source = _open_tar(path)
        else:
            raise InvalidLayout(f"{path}: no such directory or tar file")
        try:
            if source.size(LAYOUT_FILE) is None:
                raise InvalidLayout(
                    f"{source.label} has no oci-layout file: it is not an OCI image layout"
                )
            _check_layout_file(_read_capped(source, LAYOUT_FILE, _MAX_LAYOUT_FILE_SIZE), path.name)
            if source.size(INDEX_FILE) is None:
                raise InvalidLayout(f"{source.label} has no index.json")
            self._index = _read_capped(source, INDEX_FILE, MAX_INDEX_SIZE)
            self._refs = _parse_index(self._index, source.label)
        except BaseException:
            source.close()
            raise
        return source

    def refs(self) -> list[LayoutRef]:
        """The entries of ``index.json``, in order."""
        self._ensure()
        return list(self._refs)

    def ref(self, name: str) -> LayoutRef:
        """The last ``index.json`` entry named ``name``; raise :class:`TagNotFound`."""
        self._ensure()
        for ref in reversed(self._refs):
            if ref.name == name:
                return ref
        raise TagNotFound(f"{self._path} has no index.json entry named {name!r}")

    def index_bytes(self) -> bytes:
        """The raw bytes of ``index.json``."""
        self._ensure()
        return self._index

    def digests(self) -> Iterator[Digest]:
        """Every blob present under ``blobs/`` (files whose names are not digests are skipped)."""
        for algorithm, hexpart in self._ensure().blob_names():
            try:
                yield Digest(algorithm, hexpart)
            except InvalidDigest:
                continue

    def has_blob(self, digest: Digest) -> bool:
        """Whether the blob is present."""
        return self._ensure().size(blob_path(digest)) is not None

    def blob_size(self, digest: Digest) -> int:
        """The size of a blob in bytes; raise :class:`BlobNotFound` if absent."""
        size = self._ensure().size(blob_path(digest))
        if size is None:
            raise BlobNotFound(f"blob {digest} is not in {self._path}")
        return size

    def read_blob(self, digest: Digest, *, max_size: int | None = None) -> bytes:
        """A small blob (manifest, config), verified against its digest.

        Raises :class:`BlobNotFound` if absent, :class:`InvalidLayout` if it is larger than
        ``max_size`` and :class:`DigestMismatch` if its bytes do not hash to ``digest``.
        """
        size = self.blob_size(digest)
        if max_size is not None and size > max_size:
            raise InvalidLayout(
                f"blob {digest} in {self._path} is {size} bytes, over the limit of {max_size}"
            )
        with self.open_blob(digest) as f:
            data = f.read(size + 1)
        actual = Digest.of(data, digest.algorithm)
        if actual != digest:
            raise DigestMismatch(
                f"blob {digest} in {self._path} hashes to {actual}: the layout is corrupt"
            )
        return data

    def open_blob(self, digest: Digest) -> BinaryIO:
        """A binary stream of a blob, for big layers; the caller verifies the digest."""
        try:
            return self._ensure().open(blob_path(digest))
        except (FileNotFoundError, NotADirectoryError) as e:
            raise BlobNotFound(f"blob {digest} is not in {self._path}") from e

    def close(self) -> None:
        """Release the open tar file (if any); further use raises ``ValueError``."""
        self._closed = True
        if self._source is not None:
            self._source.close()
            self._source = None

    def __enter__(self) -> Self:
        self._ensure()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_capped(source: _Source, rel: str, cap: int) -> bytes:
    size = source.size(rel)
    if size is not None and size > cap:
        raise InvalidLayout(f"{source.label}: {rel} is {size} bytes, over the limit of {cap}")
    with source.open(rel) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise InvalidLayout(f"{source.label}: {rel} is over the limit of {cap} bytes")
    return data


# --- writing -------------------------------------------------------------------------------


def _create_exclusive(directory: Path, prefix: str) -> tuple[Path, BinaryIO]:
    """A new file next to its final place (so ``os.replace`` is atomic), mode 0666 & ~umask."""
    while True:
        path = directory / f"{prefix}{secrets.token_hex(8)}.partial"
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
        except FileExistsError:
            continue
        return path, os.fdopen(fd, "wb")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp, f = _create_exclusive(path.parent, f".{path.name}.")
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_verified(
    digest: Digest, chunks: Iterable[bytes], size: int | None, out: IO[bytes]
) -> int:
    """Copy ``chunks`` to ``out``; raise if they are not ``size`` bytes hashing to ``digest``."""
    hasher = Hasher(digest.algorithm)
    for chunk in chunks:
        hasher.update(chunk)
        if size is not None and hasher.size > size:
            raise SizeMismatch(f"blob {digest} is longer than the {size} bytes announced")
        out.write(chunk)
    if size is not None and hasher.size != size:
        raise SizeMismatch(f"blob {digest} is {hasher.size} bytes, not the {size} announced")
    actual = hasher.digest()
    if actual != digest:
        raise DigestMismatch(f"blob announced as {digest} hashes to {actual}")
    return hasher.size


def _tar_info(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    # Fixed owner, mode and time: the same content always gives the same archive.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o644
    return info


class LayoutWriter:
    """Writes an OCI image layout as a directory or, with ``tar=True``, a tar file.

    Blobs are streamed in constant memory and verified against their digest (and size, when
    given) before they become visible. ``oci-layout`` and ``index.json`` are written by
    :meth:`close`; until then (and after :meth:`abort`, which ``with`` calls on an exception)
    the output does not look like a complete layout: a directory has no new ``index.json`` and
    a tar file is only a hidden ``.partial`` file next to ``path``, removed on abort.

    A directory that already holds a layout is extended: present blobs are skipped and its
    ``index.json`` entries kept, except those whose ref name is added again (the tag moves).
    A tar file is always written anew. The constructor does no I/O; methods are thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str], *, tar: bool = False) -> None:
        self._path = Path(path)
        self._tar = tar
        self._lock = threading.Lock()
        self._started = False
        self._closed: str | None = None
        self._refs: list[dict[str, Any]] = []
        self._written: set[Digest] = set()
        self._tmp_path: Path | None = None
        self._file: BinaryIO | None = None
        self._archive: tarfile.TarFile | None = None
        self._tar_dirs: set[str] = set()

    @property
    def path(self) -> Path:
        """The directory or tar file written."""
        return self._path

    def _ensure(self) -> None:
        if self._closed is not None:
            raise ValueError(f"LayoutWriter for {self._path} is {self._closed}")
        if not self._started:
            with self._lock:
                if not self._started:
                    self._start()
                    self._started = True

    def _start(self) -> None:
        if self._tar:
            self._tmp_path, self._file = _create_exclusive(
                self._path.parent, f".{self._path.name}."
            )
            try:
                self._archive = tarfile.open(  # noqa: SIM115 - closed by close()
                    fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT
                )
                self._add_tar_member(LAYOUT_FILE, _LAYOUT_FILE_BYTES)
            except BaseException:
                self._discard_tar()
                raise
            return
        if self._path.exists() and not self._path.is_dir():
            raise InvalidLayout(f"{self._path} exists and is not a directory")
        (self._path / "blobs").mkdir(parents=True, exist_ok=True)
        if (self._path / INDEX_FILE).exists():
            with LayoutReader.open(self._path) as existing:
                self._refs = [copy.deepcopy(ref.descriptor) for ref in existing.refs()]
        elif (self._path / LAYOUT_FILE).exists():
            _check_layout_file((self._path / LAYOUT_FILE).read_bytes(), str(self._path))

    def _add_tar_member(self, name: str, data: bytes) -> None:
        assert self._archive is not None
        self._archive.addfile(_tar_info(name, len(data)), io.BytesIO(data))

    def _add_tar_dirs(self, algorithm: str) -> None:
        assert self._archive is not None
        for name in ("blobs/", f"blobs/{algorithm}/"):
            if name not in self._tar_dirs:
                self._archive.addfile(_tar_info(name, directory=True))
                self._tar_dirs.add(name)

    def has_blob(self, digest: Digest) -> bool:
        """Whether the blob is already in the output."""
        self._ensure()
        if self._tar:
            return digest in self._written
        return (self._path / blob_path(digest)).is_file()

    def write_blob(
        self, digest: Digest, chunks: Iterable[bytes] | bytes, *, size: int | None = None
    ) -> None:
        """Stream a blob in, verifying it is ``size`` bytes (if given) hashing to ``digest``.

        Raises :class:`SizeMismatch` or :class:`DigestMismatch` and stores nothing if not.
        If the blob is already present, returns at once without consuming ``chunks``.
        """
        if isinstance(chunks, bytes | bytearray | memoryview):
            chunks = (bytes(chunks),)
        if self.has_blob(digest):
            return
        if self._tar:
            self._write_tar_blob(digest, chunks, size)
        else:
            self._write_dir_blob(digest, chunks, size)

    def _write_dir_blob(self, digest: Digest, chunks: Iterable[bytes], size: int | None) -> None:
        final = self._path / blob_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp, f = _create_exclusive(final.parent, ".tmp-")
        try:
            with f:
                _copy_verified(digest, chunks, size, f)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _write_tar_blob(self, digest: Digest, chunks: Iterable[bytes], size: int | None) -> None:
        # A tar header holds the size, so spool to a temporary file first (verifying on the
        # way), then append it under the lock; several threads can spool at once.
        with tempfile.TemporaryFile(dir=self._path.parent) as spool:
            length = _copy_verified(digest, chunks, size, spool)
            spool.seek(0)
            with self._lock:
                if self._closed is not None:
                    raise ValueError(f"LayoutWriter for {self._path} is {self._closed}")
                if digest in self._written:
                    return
                assert self._archive is not None
                try:
                    self._add_tar_dirs(digest.algorithm)
                    self._archive.addfile(_tar_info(blob_path(digest), length), spool)
                except BaseException:
                    # A half-written member ruins the archive: give up on it.
                    self._discard_tar()
                    self._closed = "aborted by an error while writing the tar file"
                    raise
                self._written.add(digest)

    def add_ref(self, descriptor: Mapping[str, Any], name: str | None = None) -> None:
        """Add an ``index.json`` entry; ``name`` goes in its ref name annotation.

        An earlier entry with the same ref name is replaced; an unnamed entry for a digest
        that already has one is not added twice.
        """
        self._ensure()
        entry = copy.deepcopy(dict(descriptor))
        ref = _parse_descriptor(entry, "descriptor")
        if name is not None:
            if not isinstance(name, str) or not _REF_NAME.fullmatch(name):
                raise InvalidLayout(
                    f"ref name {name!r} is not valid: use letters, digits and ._:@+- "
                    f"in '/'-separated parts"
                )
            entry["annotations"] = {**(entry.get("annotations") or {}), REF_NAME_ANNOTATION: name}
        else:
            name = _oci_ref_name(entry.get("annotations"))
        with self._lock:
            if name is not None:
                self._refs = [r for r in self._refs if _oci_ref_name(r.get("annotations")) != name]
            elif any(
                _oci_ref_name(r.get("annotations")) is None and r.get("digest") == str(ref.digest)
                for r in self._refs
            ):
                return
            self._refs.append(entry)

    def index_bytes(self) -> bytes:
        """The ``index.json`` that :meth:`close` will write."""
        with self._lock:
            index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": self._refs}
            return json.dumps(index, separators=(",", ":")).encode()

    def close(self) -> None:
        """Write ``oci-layout`` and ``index.json`` (and finish the tar file); idempotent."""
        if self._closed == "closed":
            return
        self._ensure()
        index = self.index_bytes()
        try:
            if self._tar:
                assert self._archive is not None and self._file is not None
                assert self._tmp_path is not None
                with self._lock:
                    self._add_tar_member(INDEX_FILE, index)
                    self._archive.close()
                    self._file.flush()
                    os.fsync(self._file.fileno())
                    self._file.close()
                    os.replace(self._tmp_path, self._path)
            else:
                _write_atomic(self._path / LAYOUT_FILE, _LAYOUT_FILE_BYTES)
                _write_atomic(self._path / INDEX_FILE, index)
        except BaseException:
            self.abort()
            raise
        self._closed = "closed"

    def abort(self) -> None:
        """Give up: a tar file is removed, a directory gets no new ``index.json``."""
        if self._closed == "closed":
            return
        with self._lock:
            self._discard_tar()
            self._closed = "aborted"

    def _discard_tar(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tmp_path is not None:
            self._tmp_path.unlink(missing_ok=True)
        self._archive = self._file = self._tmp_path = None

    def __enter__(self) -> Self:
        self._ensure()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()
