"""``GET|HEAD /v2/<name>/blobs/<digest>`` (end-2), in constant memory at any size.

The served version must hold the blob. How the bytes go out depends on the store:

* a local file (:class:`~ocimirror.backends.blobs.BlobLocalPath`): whole-blob answers hand the
  path to the server through the ASGI ``http.response.pathsend`` extension when it offers it
  (granian does), else to Starlette's ``FileResponse``, so the bytes need not pass through
  Python;
* with ``redirect_blobs`` and a store that signs URLs (S3): ``307`` to a presigned URL (GET
  only: a HEAD is answered here, since a URL signed for GET would refuse a HEAD);
* otherwise, and for ranges: streamed from :meth:`~ocimirror.backends.blobs.BlobStore.reader`.

Ranges (RFC 9110 section 14): one ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` gives ``206``
with ``Content-Range``; a range starting at or beyond the end, a backwards range
(``bytes=5-4``), a zero-length suffix (``bytes=-0``) and any range of an empty blob are
unsatisfiable: ``416`` with ``Content-Range: bytes */<size>`` (as Distribution answers).
Everything else (several ranges, other units, malformed ranges) is ignored and the whole blob
is sent with ``200``, as RFC 9110 allows; so is
a range whose ``If-Range`` does not match the ETag, and any range on a HEAD request.
``If-None-Match`` naming the ETag (``"<digest>"``) gives ``304``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import TYPE_CHECKING, Literal

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import Message, Receive, Scope, Send

from ocimirror.backends.blobs import BlobLocalPath, BlobPresigner
from ocimirror.core.digest import Digest
from ocimirror.errors import BlobNotFound, OcimirrorError, RangeNotSatisfiable
from ocimirror.push import Push
from ocimirror.server.content import Content, Served
from ocimirror.server.errors import exception_response
from ocimirror.server.references import digest_or

if TYPE_CHECKING:
    from ocimirror.ondemand import ClosingChunks

__all__ = ["delete_blob", "get_blob", "parse_range"]

log = logging.getLogger("ocimirror.server")

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)

#: :func:`parse_range`'s answers besides a range.
Unsatisfiable = Literal["unsatisfiable"]
UNSATISFIABLE: Unsatisfiable = "unsatisfiable"

_CHUNK = 1 << 20


def parse_range(value: str, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """The ``[start, end)`` a ``Range`` header asks of ``size`` bytes.

    ``None`` means "ignore the header and send everything"; :data:`UNSATISFIABLE` means 416.
    """
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last = match.groups()
    try:
        start = int(first) if first else None
        end = int(last) if last else None
    except ValueError:  # more digits than int() takes: not a range anyone means
        return None
    if start is None:
        if end is None:
            return None
        if end == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - end), size
    if end is not None and end < start:
        return UNSATISFIABLE  # as Distribution (Go's ServeContent) answers a backwards range
    if start >= size:
        return UNSATISFIABLE
    return start, size if end is None else min(end + 1, size)


class _Stream(Response):
    """Streams a stored blob's :class:`BlobReader`, or a blob arriving from its remote
    (:meth:`ocimirror.ondemand.OnDemand.read`), closing it whatever happens (disconnects
    included).

    If an arriving blob fails or does not verify, the response is broken off: the client has
    had at most all but the last byte, so it sees a failed transfer, never wrong bytes.
    """

    def __init__(self, status: int, headers: dict[str, str], chunks: ClosingChunks) -> None:
        super().__init__(None, status_code=status, headers=headers)
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def disconnected() -> None:
            message: Message = {"type": ""}
            while message["type"] != "http.disconnect":
                message = await receive()

        watcher = asyncio.ensure_future(disconnected())
        try:
            start = {"status": self.status_code, "headers": self.raw_headers}
            await send({"type": "http.response.start", **start})
            async for chunk in self.chunks:
                if watcher.done():
                    return  # the client went away
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OcimirrorError as exc:
            log.warning("breaking off a blob response: %s", exc)
            raise _BrokenOff(str(exc)) from None
        except Exception:
            log.exception("streaming blob failed after the response started")
            raise
        finally:
            watcher.cancel()
            await self.chunks.aclose()


class _BrokenOff(Exception):
    """Raised out of a response that has started: the server drops the connection."""


class _PathSend(Response):
    """Hands a file to the server (``http.response.pathsend``): no bytes through Python."""

    def __init__(self, headers: dict[str, str], path: str) -> None:
        super().__init__(None, headers=headers)
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.pathsend", "path": self.path})


class _WholeFile(FileResponse):
    """Starlette's FileResponse, blind to the request's ``Range`` (the decision is made) and
    adding no headers of its own (its ETag and Last-Modified describe the file, not the blob,
    and would differ from the pathsend and HEAD answers)."""

    def set_stat_headers(self, stat_result: os.stat_result) -> None:
        pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if any(k in (b"range", b"if-range") for k, _ in scope["headers"]):
            scope = {
                **scope,
                "headers": [h for h in scope["headers"] if h[0] not in (b"range", b"if-range")],
            }
        await super().__call__(scope, receive, send)


async def get_blob(
    content: Content, request: Request, name: str, reference: str, *, redirect: bool = False
) -> Response:
    """The blob ``reference`` in the version ``name`` serves (whole, a range, or a redirect)."""
    digest = digest_or(reference, BlobNotFound, "blob", field="digest")
    key = str(digest)

    async def holds(served: Served) -> bool | None:
        return await content.has(served, "container.blob", key) or None

    _, present = await content.read(name, holds)
    if not present:
        raise BlobNotFound(f"blob {key} is not in {name!r}", detail={"digest": key})

    head = request.method == "HEAD"
    range_value = if_range = if_none_match = None
    for k, v in request.scope["headers"]:
        if k == b"range":
            range_value = v.decode("latin-1")
        elif k == b"if-range":
            if_range = v.decode("latin-1")
        elif k == b"if-none-match":
            if_none_match = v.decode("latin-1")
    etag = f'"{key}"'
    headers = {
        "content-type": "application/octet-stream",
        "docker-content-digest": key,
        "etag": etag,
        "accept-ranges": "bytes",
    }
    if if_none_match is not None and any(
        t.strip() in ("*", etag, "W/" + etag) for t in if_none_match.split(",")
    ):
        return Response(None, status_code=304, headers=headers)

    store = content.registry.blobs
    if redirect and not head and isinstance(store, BlobPresigner):
        url = await store.presigned_url(digest)
        if url is not None:
            return Response(
                None,
                status_code=307,
                headers={"location": url, "docker-content-digest": key, "content-length": "0"},
            )

    local = store.local_path(digest) if isinstance(store, BlobLocalPath) else None
    stat: os.stat_result | None = None
    if local is not None:
        local = os.path.abspath(local)
        try:
            stat = await asyncio.to_thread(os.stat, local)
        except FileNotFoundError:
            return await _remote_blob(content, request, digest, headers, range_value, if_range)
        size = stat.st_size
    else:
        stored = await store.stat(digest)
        if stored is None:
            return await _remote_blob(content, request, digest, headers, range_value, if_range)
        size = stored

    wanted = _wanted_range(request, key, size, range_value, if_range)
    if isinstance(wanted, Response):
        return wanted
    if wanted is not None:
        start, end = wanted
        headers["content-length"] = str(end - start)
        headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        reader = await store.reader(digest, offset=start, length=end - start, chunk_size=_CHUNK)
        return _Stream(206, headers, reader)

    headers["content-length"] = str(size)
    if head:
        return Response(None, headers=headers)
    if local is not None:
        assert stat is not None
        if "http.response.pathsend" in request.scope.get("extensions", {}):
            return _PathSend(headers, local)
        return _WholeFile(local, headers=headers, stat_result=stat)
    return _Stream(200, headers, await store.reader(digest, chunk_size=_CHUNK))


def _wanted_range(
    request: Request, key: str, size: int, range_value: str | None, if_range: str | None
) -> tuple[int, int] | Response | None:
    """The range to send (``None``: the whole blob), or the 416 answer."""
    if range_value is None or request.method == "HEAD":
        return None
    if if_range is not None and if_range.strip() != f'"{key}"':
        return None
    wanted = parse_range(range_value, size)
    if wanted == UNSATISFIABLE:
        return exception_response(
            RangeNotSatisfiable(
                f"range {range_value!r} is not satisfiable: the blob has {size} bytes",
                detail={"digest": key, "size": size},
            ),
            headers={"content-range": f"bytes */{size}"},
        )
    return wanted


async def _remote_blob(
    content: Content,
    request: Request,
    digest: Digest,
    headers: dict[str, str],
    range_value: str | None,
    if_range: str | None,
) -> Response:
    """A blob the version holds that storage does not: on-demand content, fetched from its
    remote while it is sent (see :mod:`ocimirror.ondemand`)."""
    key = str(digest)
    record = await content.registry.metadata.get_blob(key)
    if record is None:
        raise BlobNotFound(f"blob {key} is missing from storage", detail={"digest": key})
    size = record.size
    wanted = _wanted_range(request, key, size, range_value, if_range)
    if isinstance(wanted, Response):
        return wanted
    if request.method == "HEAD":
        sources = await content.registry.metadata.blob_sources(key)
        if not sources:
            raise BlobNotFound(f"blob {key} is missing from storage", detail={"digest": key})
        headers["content-length"] = str(size)
        return Response(None, headers=headers)
    on_demand = content.registry.on_demand
    if wanted is None:
        headers["content-length"] = str(size)
        return _Stream(200, headers, await on_demand.read(digest, size))
    start, end = wanted
    headers["content-length"] = str(end - start)
    headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    return _Stream(206, headers, await on_demand.read(digest, size, start, end))


async def delete_blob(push: Push, request: Request, name: str, reference: str) -> Response:
    """``DELETE``: remove the blob from the repository (``202``); its bytes go with the next
    orphan cleanup, once no version holds them."""
    digest = digest_or(reference, BlobNotFound, "blob", field="digest")
    await push.delete_blob(name, digest)
    return Response(b"", status_code=202, headers={"content-length": "0"})
