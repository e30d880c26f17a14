"""On-demand content: blobs a version holds that storage does not, fetched on first request.

A sync with the ``on_demand`` or ``streamed`` policy records tags, manifests and configs, and
records each layer as *remote content*: a blob record (so versions, content summaries and the
closure rule treat it like any blob) plus a row naming the remote it comes from. The first
request for such a blob comes here:

* :meth:`OnDemand.arrival` starts one download per digest and process (single flight): the
  upstream's bytes go into a spool file, and every client asking for the blob meanwhile, with
  or without a range, reads from that file as it grows. However many clients ask at once, the
  upstream sees one GET (per process; another process or machine makes its own, since a
  download in progress is not something a database row can share).
* The last byte of the blob goes to no client until the whole blob has verified (size and
  digest). A mismatch is never stored, and each client's response stops one byte short, so
  the client sees a broken transfer, never wrong bytes.
* ``on_demand`` then moves the verified bytes into the blob store (later requests are served
  from it); ``streamed`` keeps nothing: the spool file goes when the last reader is done.
* An upstream that fails (connection refused, 5xx, 429) puts the remote in a cooldown, kept in
  the database so that every process honours it: until it ends, requests for its content fail
  at once with ``UNAVAILABLE`` (503) and a ``Retry-After``, instead of hammering the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ocimirror.backends.blobs import BlobLocalPath
from ocimirror.core.digest import Digest, Hasher
from ocimirror.errors import (
    BlobNotFound,
    DigestMismatch,
    OcimirrorError,
    SizeMismatch,
    UpstreamError,
    UpstreamUnavailable,
)
from ocimirror.remote import Remote
from ocimirror.upstream import RegistryClient, SharedConnections, redact_text

if TYPE_CHECKING:
    from ocimirror.backends.blobs import BlobStore

__all__ = [
    "COOLDOWN_ENV",
    "DEFAULT_COOLDOWN",
    "Arrival",
    "ClosingChunks",
    "OnDemand",
    "OnDemandStore",
]

log = logging.getLogger("ocimirror.ondemand")

#: Seconds a remote that failed is left alone (Pulp's figure).
DEFAULT_COOLDOWN = 300.0
#: The environment variable that sets another cooldown (seconds; 0 turns it off).
COOLDOWN_ENV = "OCIMIRROR_REMOTE_COOLDOWN"

_READ = 1 << 20


class ClosingChunks(Protocol):
    """Bytes to stream that must be closed when done with (a store reader, an arrival)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class OnDemandStore(Protocol):
    """What on-demand fetching needs of the metadata store."""

    async def remote_sources(
        self, digest: str
    ) -> list[tuple[str, dict[str, Any], tuple[datetime, str] | None]]: ...

    async def set_remote_cooldown(self, remote: str, until: datetime, reason: str) -> None: ...


class Arrival:
    """One blob arriving from upstream into a spool file, readable while it arrives."""

    def __init__(self, digest: Digest, size: int, path: Path) -> None:
        self.digest = digest
        self.size = size
        self.path = path
        #: How many bytes of the spool file are written (a high-water mark).
        self.received = 0
        self.verified = False
        self.failed: BaseException | None = None
        self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _readable(self, pos: int, end: int) -> int:
        """Bytes ``[pos, n)`` may go out now: all once verified, else what arrived, holding
        back the blob's last byte until the digest is checked."""
        if self.verified:
            return end
        return max(pos, min(end, self.received, self.size - 1))

    async def _wait_beyond(self, pos: int, end: int) -> None:
        """Until bytes past ``pos`` may go out, or the download failed."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.failed is not None or self._readable(pos, end) > pos
            )

    def chunks(self, start: int = 0, end: int | None = None) -> _Chunks:
        """Bytes ``[start, end)`` of the blob as they arrive; raises the download's error
        (after which the caller must break off its response).

        The spool file is opened here, at once, so the download may remove it when it ends:
        an open file stays readable.
        """
        fd = os.open(self.path, os.O_RDONLY)
        return _Chunks(fd, self._chunks(fd, start, self.size if end is None else end))

    async def _chunks(self, fd: int, start: int, end: int) -> AsyncIterator[bytes]:
        try:
            pos = start
            while pos < end:
                await self._wait_beyond(pos, end)
                if self.failed is not None:
                    raise self.failed
                upto = self._readable(pos, end)
                data = await asyncio.to_thread(os.pread, fd, min(upto - pos, _READ), pos)
                if not data:  # the file is shorter than announced: never expected
                    raise SizeMismatch(f"blob {self.digest}: the spool file ended early")
                pos += len(data)
                yield data
        finally:
            os.close(fd)


class _Chunks:
    """An arrival's bytes for one reader: closing it closes its file, read or not."""

    def __init__(self, fd: int, chunks: AsyncIterator[bytes]) -> None:
        self._fd: int | None = fd
        self._chunks = chunks

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        self._fd = None  # the generator owns the file now, and closes it
        return await anext(self._chunks)

    async def aclose(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        await self._chunks.aclose()  # type: ignore[attr-defined]


class _SpoolWriter:
    """The upstream client's sink writer for an :class:`Arrival`: writes the spool file,
    hashes, and tells readers as bytes arrive. A restart writes the same bytes again (the blob
    is content addressed), so what readers were given stays true."""

    def __init__(self, arrival: Arrival, file: int) -> None:
        self._arrival = arrival
        self._file = file
        self._size = 0
        self._hasher = Hasher(arrival.digest.algorithm)

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        if self._size + len(data) > self._arrival.size:
            arrival = self._arrival
            raise SizeMismatch(
                f"blob {arrival.digest}: the upstream sent more than {arrival.size} bytes"
            )
        await asyncio.to_thread(os.pwrite, self._file, data, self._size)
        self._hasher.update(data)
        self._size += len(data)
        if self._size > self._arrival.received:
            self._arrival.received = self._size
            await self._arrival._notify()

    async def commit(self) -> Digest:
        arrival = self._arrival
        if self._size != arrival.size:
            raise SizeMismatch(
                f"blob {arrival.digest}: {self._size} bytes arrived, {arrival.size} expected"
            )
        actual = self._hasher.digest()
        if actual != arrival.digest:
            raise DigestMismatch(
                f"blob {arrival.digest} from upstream has digest {actual}",
                detail={"expected": str(arrival.digest), "actual": str(actual)},
            )
        return actual

    async def abort(self) -> None:
        self._size = 0
        self._hasher = Hasher(self._arrival.digest.algorithm)


class _SpoolSink:
    def __init__(self, arrival: Arrival, file: int) -> None:
        self._arrival = arrival
        self._file = file

    def writer(self, *, expected: Digest | None = None, size: int | None = None) -> _SpoolWriter:
        return _SpoolWriter(self._arrival, self._file)


class OnDemand:
    """Fetches remote content for the server and exports (see the module docstring).

    Args:
        metadata: The metadata store (blob sources, remotes, cooldowns).
        blobs: Where ``on_demand`` content is kept once verified.
        spool: The directory of spool files (default: the system's temporary directory).
        cooldown: Seconds a remote is left alone after it failed.
    """

    def __init__(
        self,
        metadata: OnDemandStore,
        blobs: BlobStore,
        *,
        spool: str | os.PathLike[str] | None = None,
        cooldown: float = DEFAULT_COOLDOWN,
    ) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.spool = Path(spool) if spool is not None else Path(tempfile.gettempdir())
        self.cooldown = cooldown
        #: Downloads starting or running, by digest (one per digest in this process).
        self._arrivals: dict[str, asyncio.Future[Arrival]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: SharedConnections | None = None

    async def arrival(self, digest: Digest, size: int) -> Arrival:
        """The download of ``digest`` (``size`` bytes), started now or already running.

        Raises :class:`BlobNotFound` when no remote provides it, and
        :class:`UpstreamUnavailable` while its remote cools down.
        """
        key = str(digest)
        starting = self._arrivals.get(key)
        if starting is None:
            # Claimed before the first await: concurrent requests share this one start.
            starting = asyncio.ensure_future(self._start(digest, size))
            self._arrivals[key] = starting
            starting.add_done_callback(lambda f: self._forget_failed_start(key, f))
        return await asyncio.shield(starting)

    def _forget_failed_start(self, key: str, started: asyncio.Future[Arrival]) -> None:
        if (started.cancelled() or started.exception() is not None) and (
            self._arrivals.get(key) is started
        ):
            del self._arrivals[key]

    async def _start(self, digest: Digest, size: int) -> Arrival:
        remote = await self._source(str(digest))
        arrival = Arrival(digest, size, self._spool_path(digest))
        fd = os.open(arrival.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        task = asyncio.ensure_future(self._download(arrival, remote, fd))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return arrival

    def _spool_path(self, digest: Digest) -> Path:
        self.spool.mkdir(parents=True, exist_ok=True)
        return self.spool / f"ocimirror-ondemand-{digest.hex[:32]}-{os.urandom(6).hex()}"

    async def _source(self, digest: str) -> Remote:
        """The remote to fetch ``digest`` from: the first of its sources not cooling down
        (one database read)."""
        sources = await self.metadata.remote_sources(digest)
        if not sources:
            raise BlobNotFound(
                f"blob {digest} is missing from storage and no remote provides it",
                detail={"digest": digest},
            )
        cooling: tuple[str, datetime, str] | None = None
        filtered: Remote | None = None
        now = datetime.now(UTC)
        for name, fields, cooldown in sources:
            if cooldown is not None and cooldown[0] > now:
                cooling = (name, *cooldown)
                continue
            remote = Remote.from_json(fields)
            if remote.policy == "immediate":
                # Only a platform filter leaves an immediate remote's content remote.
                filtered = filtered or remote
                continue
            return remote
        if filtered is not None and cooling is None:
            raise BlobNotFound(
                f"blob {digest} belongs to a platform that remote {filtered.name!r} leaves out "
                f"(its platform filter: {', '.join(filtered.platforms) or 'none'}); its "
                "policy is 'immediate', so it is not fetched on demand",
                detail={"digest": digest, "platforms": list(filtered.platforms)},
            )
        assert cooling is not None
        name, until, reason = cooling
        raise UpstreamUnavailable(
            f"remote {name!r} failed a moment ago ({reason}); it is left alone until "
            f"{until:%H:%M:%S} UTC",
            retry_after=max(1, int((until - now).total_seconds())),
        )

    def _upstream(self, remote: Remote) -> RegistryClient:
        if self._connections is None:
            self._connections = SharedConnections()
        return self._connections.client(remote)

    async def _download(self, arrival: Arrival, remote: Remote, fd: int) -> None:
        key = str(arrival.digest)
        client = self._upstream(remote)
        try:
            await client.download_blob(
                remote.upstream_name, arrival.digest, _SpoolSink(arrival, fd), size=arrival.size
            )
            # Verified: the readers get their last bytes now, while the blob is stored.
            arrival.verified = True
            await arrival._notify()
            if remote.policy == "on_demand":
                try:
                    # A local store takes the verified spool file as it is (a link); any
                    # other store gets its bytes, verified again as they go in.
                    path, digest, size = str(arrival.path), arrival.digest, arrival.size
                    store = self.blobs
                    if not (
                        isinstance(store, BlobLocalPath) and await store.adopt(path, digest, size)
                    ):
                        await self.blobs.put(_file_chunks(arrival.path), expected=digest, size=size)
                except (OcimirrorError, OSError) as exc:
                    # Verified, but not kept (the store failed): clients still get the bytes.
                    log.error(
                        "blob %s verified but could not be stored: %s", key, redact_text(str(exc))
                    )
        except (OcimirrorError, OSError) as exc:
            arrival.failed = self._failure(remote, arrival.digest, exc)
            if _is_outage(exc):
                await self._cool_down(remote, exc)
        except BaseException:
            arrival.failed = UpstreamUnavailable(f"fetching blob {key} was interrupted")
            raise
        finally:
            os.close(fd)
            self._arrivals.pop(key, None)
            # Readers hold the file open: removing it now leaves them their bytes.
            with contextlib.suppress(FileNotFoundError):
                arrival.path.unlink()
            await arrival._notify()
            with contextlib.suppress(Exception):
                await client.aclose()

    @staticmethod
    def _failure(remote: Remote, digest: Digest, exc: BaseException) -> OcimirrorError:
        said = redact_text(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, (DigestMismatch, SizeMismatch)):
            log.error("blob %s from remote %r did not verify: %s", digest, remote.name, said)
            return exc
        log.error("fetching blob %s from remote %r failed: %s", digest, remote.name, said)
        return UpstreamUnavailable(
            f"fetching blob {digest} from remote {remote.name!r} failed: {said}"
        )

    async def _cool_down(self, remote: Remote, exc: BaseException) -> None:
        if self.cooldown <= 0:
            return
        until = datetime.now(UTC) + timedelta(seconds=self.cooldown)
        reason = redact_text(f"{type(exc).__name__}: {exc}")[:500]
        try:
            await self.metadata.set_remote_cooldown(remote.name, until, reason)
        except (OcimirrorError, OSError) as err:
            log.warning("could not record the cooldown of remote %r: %s", remote.name, err)

    async def read(
        self, digest: Digest, size: int, start: int = 0, end: int | None = None
    ) -> ClosingChunks:
        """Bytes ``[start, end)`` of a blob: from storage when it is there, else as they
        arrive from its remote (see :meth:`arrival`). The first error is raised here, before
        any byte; a later one is raised by the iterator."""
        end = size if end is None else end
        for _ in range(3):
            if await self.blobs.stat(digest) == size:
                return await self.blobs.reader(digest, offset=start, length=end - start)
            arrival = await self.arrival(digest, size)
            try:
                chunks = arrival.chunks(start, end)
            except FileNotFoundError:
                continue  # it ended between the two calls: now stored, or to fetch again
            if start < end:
                # The first bytes, or the failure, before the caller answers: a remote that
                # cannot be reached is a clean error response, not a broken one.
                await arrival._wait_beyond(start, end)
                if arrival.failed is not None:
                    await chunks.aclose()
                    raise arrival.failed
            return chunks
        raise UpstreamUnavailable(f"blob {digest} could not be read from its remote")

    async def close(self) -> None:
        """Wait for downloads in flight, then close the shared connections."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connections is not None:
            await self._connections.aclose()
            self._connections = None


def _is_outage(exc: BaseException) -> bool:
    """Whether a failure says the remote is down or refusing load (connection refused, 5xx,
    429: the client raises those as UpstreamError), which earns it a cooldown; a 404, a
    corrupt blob or a local error (the spool's disk) does not."""
    if not isinstance(exc, UpstreamError) or isinstance(exc, UpstreamUnavailable):
        return False
    status = exc.status_code
    return status is None or status == 429 or status >= 500


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while True:
            data = await asyncio.to_thread(file.read, _READ)
            if not data:
                return
            yield data
