"""The Docker signature API extension: ``/extensions/v2/<name>/signatures/<digest>``.

containers-image (skopeo, podman, CRI-O) reads atomic signatures here when the registry's
``/v2/`` answers ``X-Registry-Supports-Signatures: 1`` and no lookaside is configured for it:

* ``GET`` lists the signatures of a manifest in the version the distribution serves, as
  ``{"signatures": [{"schemaVersion": 2, "type": "atomic", "name": "<digest>@<id>",
  "content": "<base64>"}]}`` (an empty list for a manifest without signatures, 404 for one
  the version does not hold).
* ``PUT`` adds signatures: one signature object (as containers-image sends it, one at a time)
  or the whole ``{"signatures": [...]}`` document; 201. It needs push access and is refused on
  a repository that mirrors a remote, like any push.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from ocimirror.core.digest import Digest
from ocimirror.errors import InvalidDigest, InvalidManifest, ManifestNotFound
from ocimirror.push import Push
from ocimirror.server.content import Content, Served
from ocimirror.server.manifests import read_capped
from ocimirror.signatures.atomic import decode_extension, encode_extension

__all__ = ["MAX_SIGNATURES_BODY", "get_signatures", "put_signatures"]

#: The largest signature document a PUT may send.
MAX_SIGNATURES_BODY = 4 << 20


def _digest(reference: str) -> Digest:
    try:
        return Digest.parse(reference)
    except InvalidDigest as exc:
        raise InvalidDigest(
            f"{reference[:140]!r} is not a digest: {exc.message}",
            detail={"digest": reference[:140]},
        ) from None


async def get_signatures(content: Content, request: Request, name: str, reference: str) -> Response:
    """The signatures of one manifest in the served version."""
    digest = str(_digest(reference))

    async def holds(served: Served) -> bool | None:
        return await content.has(served, "container.manifest", digest) or None

    # As for a blob: a miss re-resolves the name, so a version another process published a
    # moment ago (the one whose manifest the client just got) is seen.
    served, present = await content.read(name, holds)
    if not present:
        raise ManifestNotFound(f"manifest {digest} is not in {name!r}", detail={"digest": digest})
    records = await content.signatures(served, digest)
    body = encode_extension((r.name, r.data) for r in records if r.sig_type == "atomic")
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    return Response(b"" if request.method == "HEAD" else body, headers=headers)


async def put_signatures(push: Push, request: Request, name: str, reference: str) -> Response:
    """Add the signatures in the body to the manifest (201)."""
    digest = _digest(reference)
    raw = await read_capped(request, MAX_SIGNATURES_BODY)
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidManifest("the signature body is not JSON (or is nested too deeply)") from None
    if isinstance(document, dict) and "signatures" not in document:
        raw = json.dumps({"signatures": [document]}).encode()
    signatures = decode_extension(raw)
    if not signatures:
        raise InvalidManifest('the body holds no signature of type "atomic"')
    await push.add_signatures(name, digest, [s.content for s in signatures])
    return Response(b"", status_code=201, headers={"content-length": "0"})
