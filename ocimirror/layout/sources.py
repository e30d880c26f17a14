"""Where a reader finds a layout's files: a directory, or a (gzip-compressed) tar archive."""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from ocimirror.errors import InvalidLayout
from ocimirror.layout.index import _CHUNK, _MAX_LINK_HOPS


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


def _read_capped(source: _Source, rel: str, cap: int) -> bytes:
    size = source.size(rel)
    if size is not None and size > cap:
        raise InvalidLayout(f"{source.label}: {rel} is {size} bytes, over the limit of {cap}")
    with source.open(rel) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise InvalidLayout(f"{source.label}: {rel} is over the limit of {cap} bytes")
    return data
