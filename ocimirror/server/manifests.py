"""``/v2/<name>/manifests/<tag-or-digest>``: ``GET|HEAD`` (end-3), ``PUT`` (end-7) and
``DELETE`` (end-8, end-9).

A manifest is served byte for byte as stored, with its stored media type: never re-serialised,
never converted. When the client's ``Accept`` does not allow that type the answer is
``404 MANIFEST_UNKNOWN`` naming the stored type (as Pulp answers schema-1-only clients).

By digest, the served version must hold the manifest; by tag, the tag must be in it. A
reference that is neither a valid tag nor a valid digest cannot name anything: ``404``
(the spec's only failure status for this endpoint), never 400 or 500.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ocimirror.core.manifest import MAX_MANIFEST_SIZE
from ocimirror.errors import (
    InvalidReference,
    ManifestNotFound,
    ManifestTooLarge,
    TagNotFound,
)
from ocimirror.push import Push
from ocimirror.server.accept import acceptable
from ocimirror.server.content import Content, Served
from ocimirror.server.references import digest_or, tag_or

__all__ = ["delete_manifest", "get_manifest", "put_manifest", "read_capped"]


class _Raw(Response):
    """A response whose header list is built by the caller (the hot path skips re-encoding)."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.raw_headers = headers
        self.body = body
        self.background = None


async def get_manifest(content: Content, request: Request, name: str, reference: str) -> Response:
    """The manifest ``reference`` names in the version ``name`` serves."""
    if ":" in reference:
        digest = str(digest_or(reference, ManifestNotFound, "manifest"))

        async def holds(served: Served) -> bool | None:
            return await content.has(served, "container.manifest", digest) or None

        _, present = await content.read(name, holds)
        if not present:
            raise ManifestNotFound(
                f"manifest {digest} is not in {name!r}", detail={"digest": digest}
            )
    else:
        tag_or(reference, TagNotFound)

        async def tagged(served: Served) -> str | None:
            return await content.tag(served, reference)

        _, found = await content.read(name, tagged)
        if found is None:
            raise TagNotFound(f"tag {reference!r} is not in {name!r}", detail={"tag": reference})
        digest = found

    record = await content.manifest(digest)
    if record is None:
        raise ManifestNotFound(f"manifest {digest} is not stored", detail={"digest": digest})

    accept: list[str] = []
    if_none_match: str | None = None
    for key, value in request.scope["headers"]:
        if key == b"accept":
            accept.append(value.decode("latin-1"))
        elif key == b"if-none-match":
            if_none_match = value.decode("latin-1")
    if accept and not acceptable(accept, record.media_type):
        raise ManifestNotFound(
            f"manifest {digest} is stored as {record.media_type}, which the request's Accept "
            "header does not allow; it is served only as stored",
            detail={"digest": digest, "mediaType": record.media_type},
        )

    etag = f'"{digest}"'.encode()
    headers = [
        (b"content-type", record.media_type.encode("latin-1")),
        (b"docker-content-digest", digest.encode()),
        (b"etag", etag),
    ]
    if if_none_match is not None and _matches(if_none_match, etag):
        return _Raw(304, headers, b"")
    headers.append((b"content-length", str(len(record.data)).encode()))
    return _Raw(200, headers, b"" if request.method == "HEAD" else record.data)


def _matches(if_none_match: str, etag: bytes) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (weak comparison) or is ``*``."""
    wanted = etag.decode()
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused (ManifestTooLarge, before reading on) past ``limit`` bytes."""
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise ManifestTooLarge(f"the body is {announced} bytes; the limit is {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ManifestTooLarge(f"the body is over the limit of {limit} bytes")
    return bytes(body)


async def put_manifest(push: Push, request: Request, name: str, reference: str) -> Response:
    """``PUT``: store the manifest byte for byte under a tag or its digest (``201``)."""
    if ":" not in reference:
        tag_or(reference, InvalidReference)
    raw = await read_capped(request, MAX_MANIFEST_SIZE)
    media_type = request.headers.get("content-type")
    manifest = await push.put_manifest(name, reference, raw, media_type)
    root = request.scope.get("root_path", "")
    headers = {
        "location": f"{root}/v2/{name}/manifests/{manifest.digest}",
        "docker-content-digest": str(manifest.digest),
        "content-length": "0",
    }
    if manifest.subject is not None:
        headers["oci-subject"] = str(manifest.subject.digest)
    return Response(b"", status_code=201, headers=headers)


async def delete_manifest(push: Push, request: Request, name: str, reference: str) -> Response:
    """``DELETE``: a manifest by digest (with its tags), or one tag (``202``)."""
    if ":" in reference:
        await push.delete_manifest(name, digest_or(reference, ManifestNotFound, "manifest"))
    else:
        tag_or(reference, TagNotFound)
        await push.delete_tag(name, reference)
    return Response(b"", status_code=202, headers={"content-length": "0"})
