"""Response bodies read under a size cap, and the OCI error bodies registries answer with.

An upstream decides how many bytes it sends; we decide how many we read. Every body this
package reads goes through :func:`read_capped` or :func:`cap_body`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, cast

import httpx

__all__ = [
    "ERROR_BODY_LIMIT",
    "body_chunks",
    "cap_body",
    "check_complete",
    "describe_errors",
    "oci_errors",
    "prefetched",
    "read_capped",
]

#: The most of an error body (or of a 401 body) that is read.
ERROR_BODY_LIMIT = 64 * 1024


class _CappedAsyncStream(httpx.AsyncByteStream):
    """Passes on at most ``limit`` bytes of another stream, then stops reading it."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        it = aiter(self._inner)
        try:
            async for chunk in it:
                room = self._limit - seen
                if len(chunk) >= room:
                    if room:
                        yield chunk[:room]
                    return
                seen += len(chunk)
                yield chunk
        finally:
            close = getattr(it, "aclose", None)
            if close is not None:
                await close()

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedSyncStream(httpx.SyncByteStream):
    """The blocking twin of :class:`_CappedAsyncStream`."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        it = iter(self._inner)
        try:
            for chunk in it:
                room = self._limit - seen
                if len(chunk) >= room:
                    if room:
                        yield chunk[:room]
                    return
                seen += len(chunk)
                yield chunk
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        self._inner.close()


def cap_body(response: httpx.Response, limit: int) -> None:
    """Make any later read of ``response`` stop after ``limit`` bytes (the rest is dropped).

    For responses httpx reads on its own, such as a 401 answered inside an auth flow.
    """
    if response.is_stream_consumed or response.is_closed:
        return
    stream = response.stream
    if isinstance(stream, httpx.AsyncByteStream):
        response.stream = _CappedAsyncStream(stream, limit)
    elif isinstance(stream, httpx.SyncByteStream):
        response.stream = _CappedSyncStream(stream, limit)


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read the (decoded) body up to ``limit`` bytes and close the response.

    Returns the bytes read and whether the body was longer than ``limit`` (then only the
    first ``limit`` bytes are returned, and the rest is never read).
    """
    buf = bytearray()
    over = False
    try:
        async with contextlib.aclosing(body_chunks(response)) as chunks:
            async for chunk in chunks:
                buf += chunk
                if len(buf) > limit:
                    over = True
                    break
    finally:
        await response.aclose()
    return bytes(buf[:limit]), over


def body_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """``response.aiter_bytes()``, typed as the async generator it is (so it can be closed)."""
    return cast(AsyncGenerator[bytes, None], response.aiter_bytes())


async def prefetched(
    chunks: AsyncGenerator[bytes, None], *, max_chunks: int = 32
) -> AsyncGenerator[bytes, None]:
    """Read ``chunks`` ahead in a task (at most ``max_chunks``: ~8 MiB of the aiohttp stack's
    256 KiB reads, 2 MiB of httpx's 64 KiB ones), so the consumer's own awaits (hashing and
    writing a blob) overlap receiving the next bytes.

    Errors of the source surface at the point of the stream where they happened.
    """
    queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(maxsize=max_chunks)

    async def pump() -> None:
        try:
            async for chunk in chunks:
                await queue.put(chunk)
        except Exception as exc:
            await queue.put(exc)
            return
        await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def check_complete(response: httpx.Response) -> None:
    """Raise :class:`httpx.RemoteProtocolError` if the body was shorter than its Content-Length.

    Real connections raise this themselves; this catches transports that do not (and keeps the
    rule in one place). Call it after reading the whole body.
    """
    announced = response.headers.get("content-length")
    if announced is None or not announced.isdigit():
        return
    received = response.num_bytes_downloaded
    if received < int(announced):
        raise httpx.RemoteProtocolError(
            f"the body ended after {received} of {announced} bytes", request=response.request
        )


def oci_errors(body: bytes) -> list[dict[str, Any]]:
    """The ``errors`` list of an OCI error body; empty when the body is not one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
        return []
    found: list[dict[str, Any]] = []
    for entry in data["errors"]:
        if not isinstance(entry, dict):
            continue
        item: dict[str, Any] = {}
        for key in ("code", "message"):
            if isinstance(entry.get(key), str):
                item[key] = entry[key]
        if "detail" in entry:
            item["detail"] = entry["detail"]
        if item:
            found.append(item)
    return found


def describe_errors(errors: list[dict[str, Any]], body: bytes) -> str:
    """A one-line summary of an error body: ``CODE: message; ...``, or a snippet of its text."""
    if errors:
        parts = []
        for entry in errors:
            code, message = entry.get("code"), entry.get("message")
            parts.append(": ".join(str(p) for p in (code, message) if p))
        return "; ".join(p for p in parts if p)
    text = body.decode("utf-8", errors="replace").strip()
    text = " ".join(text.split())
    return text[:200] + ("..." if len(text) > 200 else "")
