"""Reading an OCI image layout: :class:`LayoutReader`."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from ocimirror.core.digest import Digest
from ocimirror.errors import BlobNotFound, DigestMismatch, InvalidDigest, InvalidLayout, TagNotFound
from ocimirror.layout.index import (
    _MAX_LAYOUT_FILE_SIZE,
    INDEX_FILE,
    LAYOUT_FILE,
    MAX_INDEX_SIZE,
    LayoutRef,
    _check_layout_file,
    _parse_index,
    blob_path,
)
from ocimirror.layout.sources import _DirSource, _open_tar, _read_capped, _Source


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
