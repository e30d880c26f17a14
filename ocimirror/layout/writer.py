"""Writing an OCI image layout: :class:`LayoutWriter`."""

from __future__ import annotations

import copy
import io
import json
import os
import secrets
import tarfile
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO, Self

from ocimirror.core.digest import Digest, Hasher
from ocimirror.errors import DigestMismatch, InvalidLayout, SizeMismatch
from ocimirror.layout.index import (
    _LAYOUT_FILE_BYTES,
    _REF_NAME,
    INDEX_FILE,
    INDEX_MEDIA_TYPE,
    LAYOUT_FILE,
    REF_NAME_ANNOTATION,
    _check_layout_file,
    _oci_ref_name,
    _parse_descriptor,
    blob_path,
)
from ocimirror.layout.reader import LayoutReader


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
