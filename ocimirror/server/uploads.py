"""Blob uploads (end-4a/4b, end-5, end-6, end-11, end-13): ``/v2/<name>/blobs/uploads/...``.

* ``POST`` starts an upload (``202`` with ``Location``, ``Docker-Upload-UUID``, ``Range``);
  with ``?digest=`` and a body it is a whole upload in one request (``201``); with
  ``?mount=<digest>&from=<name>`` it mounts a blob the caller may pull from another
  repository (``201``), else starts an ordinary upload.
* ``PATCH`` appends a chunk: with ``Content-Range: <start>-<end>`` the chunk must start where
  the upload ends (``416`` otherwise, with ``Range`` saying what was received); without it,
  the body is streamed as the next chunk.
* ``PUT ?digest=`` completes the upload, with an optional last chunk; the digest is verified
  (``400 DIGEST_INVALID`` and nothing kept on a mismatch).
* ``GET`` reports progress (``204`` with ``Range``); ``DELETE`` cancels.

Bodies are streamed to the blob store as they arrive; nothing is held in memory. The work is
:class:`ocimirror.push.Push`'s; this module speaks HTTP.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import Response

from ocimirror.backends.metadata import UploadRecord
from ocimirror.core.digest import Digest
from ocimirror.errors import ChunkOutOfOrder, InvalidDigest, InvalidUpload
from ocimirror.push import Push
from ocimirror.server.errors import exception_response

__all__ = [
    "cancel_upload",
    "finish_upload",
    "patch_upload",
    "query",
    "start_upload",
    "upload_status",
]

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})")


def query(request: Request) -> dict[str, str]:
    """The query string's parameters (the first value of each)."""
    raw = request.scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def blob_location(request: Request, name: str, digest: Digest) -> str:
    """Where a stored blob is served."""
    return f"{_root(request)}/v2/{name}/blobs/{digest}"


def _progress(request: Request, name: str, upload_id: str, size: int) -> dict[str, str]:
    """Where an upload continues and the bytes it holds (``Range: 0-0`` when none)."""
    return {
        "location": f"{_root(request)}/v2/{name}/blobs/uploads/{quote(upload_id)}",
        "docker-upload-uuid": upload_id,
        "range": f"0-{size - 1 if size else 0}",
    }


def _upload_headers(request: Request, name: str, record: UploadRecord) -> dict[str, str]:
    return {**_progress(request, name, record.id, record.size), "content-length": "0"}


def _created(request: Request, name: str, digest: Digest) -> Response:
    return Response(
        b"",
        status_code=201,
        headers={
            "location": blob_location(request, name, digest),
            "docker-content-digest": str(digest),
            "content-length": "0",
        },
    )


def _digest(params: dict[str, str]) -> Digest:
    value = params.get("digest")
    if not value:
        raise InvalidDigest("completing an upload needs ?digest=<algorithm>:<hex>")
    return Digest.parse(value)


def _length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 19:
        raise InvalidUpload(f"Content-Length {value[:40]!r} is not a byte count")
    return int(value)


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def start_upload(push: Push, request: Request, name: str, *, may_mount: bool) -> Response:
    """``POST``: mount, a whole upload, or a new upload session."""
    params = query(request)
    mount, source = params.get("mount"), params.get("from")
    if mount and source and may_mount:
        digest = Digest.parse(mount)
        if await push.mount(name, digest, source):
            return _created(request, name, digest)
    if "digest" in params:
        digest = _digest(params)
        record = await push.start_upload(name)
        await push.finish(name, record.id, digest, _body(request), length=_length(request))
        return _created(request, name, digest)
    record = await push.start_upload(name)
    return Response(b"", status_code=202, headers=_upload_headers(request, name, record))


def _chunk(request: Request) -> tuple[int | None, int | None]:
    """Where a chunk starts (its ``Content-Range``, if any) and how long it is."""
    length = _length(request)
    header = request.headers.get("content-range")
    if header is None:
        return None, length
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        raise InvalidUpload(f"Content-Range {header[:60]!r} is not <start>-<end>")
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise InvalidUpload(f"Content-Range {header[:60]!r} ends before it starts")
    if length is not None and length != end - start + 1:
        raise InvalidUpload(
            f"Content-Range {header[:60]!r} announces {end - start + 1} bytes, "
            f"Content-Length {length}"
        )
    return start, end - start + 1


def _out_of_order(request: Request, name: str, upload_id: str, exc: ChunkOutOfOrder) -> Response:
    """``416`` saying what was received, so the client can resend from there."""
    received = exc.detail.get("received") if isinstance(exc.detail, dict) else None
    if not isinstance(received, int):
        raise exc
    return exception_response(exc, headers=_progress(request, name, upload_id, received))


async def patch_upload(push: Push, request: Request, name: str, upload_id: str) -> Response:
    """``PATCH``: one chunk, at the offset its ``Content-Range`` names, or streamed."""
    start, length = _chunk(request)
    try:
        record = await push.append(name, upload_id, _body(request), start=start, length=length)
    except ChunkOutOfOrder as exc:
        return _out_of_order(request, name, upload_id, exc)
    return Response(b"", status_code=202, headers=_upload_headers(request, name, record))


async def finish_upload(push: Push, request: Request, name: str, upload_id: str) -> Response:
    """``PUT ?digest=``: complete the upload, with the body as its last chunk."""
    digest = _digest(query(request))
    start, length = _chunk(request)
    try:
        await push.finish(name, upload_id, digest, _body(request), start=start, length=length)
    except ChunkOutOfOrder as exc:
        return _out_of_order(request, name, upload_id, exc)
    return _created(request, name, digest)


async def upload_status(push: Push, request: Request, name: str, upload_id: str) -> Response:
    """``GET``: ``204`` with the ``Range`` received so far."""
    record = await push.upload(name, upload_id)
    return Response(b"", status_code=204, headers=_upload_headers(request, name, record))


async def cancel_upload(push: Push, request: Request, name: str, upload_id: str) -> Response:
    """``DELETE``: cancel the upload and discard its bytes."""
    await push.cancel(name, upload_id)
    return Response(b"", status_code=204, headers={"content-length": "0"})
