"""Sinks: where a writer's bytes go (all methods are blocking and run in a thread).

Each sink publishes atomically: :class:`_LocalSink` through a temp file and ``os.replace``,
:class:`_FsspecSink` through an fsspec file at the final key (direct) or a temp path (staged).
"""

from __future__ import annotations

import contextlib
import os
import uuid
import weakref
from typing import Any, Protocol

from fsspec.spec import AbstractBufferedFile

#: What a writer hands its store: the buffered pieces of a blob, in order (see
#: :class:`~ocimirror.backends.blobs.streams.BufferedBlobWriter`).
Chunks = list[bytes | bytearray]


class _Sink(Protocol):
    def write(self, chunks: Chunks) -> None: ...

    def publish(self, final: str) -> bool: ...

    def discard(self) -> None: ...


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


class _LocalSink:
    """A temp file in ``uploads/``: fsync, then ``os.replace`` into place (same filesystem)."""

    def __init__(self, uploads: str) -> None:
        os.makedirs(uploads, exist_ok=True)
        self._tmp = os.path.join(uploads, uuid.uuid4().hex)
        self._f = open(self._tmp, "xb")  # noqa: SIM115 - closed by publish() or discard()
        # A writer dropped without abort() leaves its temp file for cleanup_uploads(); close
        # the descriptor quietly at least.
        weakref.finalize(self, self._f.close)

    def write(self, chunks: Chunks) -> None:
        self._f.writelines(chunks)

    def publish(self, final: str) -> bool:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        if os.path.exists(final):
            os.unlink(self._tmp)
            return False
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        os.replace(self._tmp, final)
        _fsync_dir(parent)
        return True

    def discard(self) -> None:
        try:
            self._f.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)


def _disarm(f: Any) -> None:
    # An fsspec buffered file closed by the garbage collector completes its upload. Mark it
    # closed instead, so a writer dropped without abort() never publishes anything.
    with contextlib.suppress(AttributeError):
        f.closed = True


class _FsspecSink:
    """An fsspec file opened ``wb``, either at the final key (direct) or at a temp path (staged).

    On an object store an upload stays invisible until the file is closed; :meth:`discard`
    aborts it instead (``f.discard()``), so a failed write never publishes anything. A staged
    file is moved into place after closing (a server-side copy on object stores).
    """

    def __init__(self, fs: Any, path: str, *, staged: bool, object_store: bool) -> None:
        self._fs = fs
        self._path = path
        self._staged = staged
        self._object_store = object_store
        self._f = fs.open(path, "wb")
        self._file_closed = False
        self._finalizer = (
            weakref.finalize(self, _disarm, self._f)
            if isinstance(self._f, AbstractBufferedFile)
            else None
        )

    def write(self, chunks: Chunks) -> None:
        for chunk in chunks:
            self._f.write(chunk)

    def _exists(self, path: str) -> bool:
        self._fs.invalidate_cache(path)
        return bool(self._fs.exists(path))

    def _close(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        self._file_closed = True
        self._f.close()

    def publish(self, final: str) -> bool:
        if not self._staged:
            assert self._path == final, "a direct upload is published under its own key"
            if self._exists(final):
                self.discard()
                return False
            self._close()
            return True
        self._close()
        if self._exists(final):
            self._fs.rm_file(self._path)
            return False
        if not self._object_store:
            self._fs.makedirs(self._fs._parent(final), exist_ok=True)
        self._fs.mv(self._path, final)
        return True

    def discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        if not self._file_closed:
            self._file_closed = True
            try:
                with contextlib.suppress(FileNotFoundError):  # already aborted by a cleanup
                    self._f.discard()
            finally:
                _disarm(self._f)
            if self._object_store:
                return  # an aborted upload leaves nothing behind
        if self._staged:  # never remove a final key: another writer may have published it
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm_file(self._path)
