"""``GET /v2/<name>/referrers/<digest>`` (end-12a/12b): the manifests whose ``subject`` is
``<digest>``, as an OCI image index.

Each entry carries the referrer's media type, digest, size, ``artifactType`` (its own, else
its config's media type) and annotations. ``?artifactType=`` keeps the entries of that type
and says so in ``OCI-Filters-Applied``. A subject nothing refers to (or one that is not in the
repository at all) gives an empty index, never 404.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ocimirror.core.digest import Digest
from ocimirror.core.manifest import parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import InvalidDigest
from ocimirror.server.content import Content, Served
from ocimirror.server.uploads import query

__all__ = ["referrers"]


async def referrers(content: Content, request: Request, name: str, reference: str) -> Response:
    """The index of ``reference``'s referrers in the version ``name`` serves."""
    try:
        subject = str(Digest.parse(reference))
    except InvalidDigest as exc:
        raise InvalidDigest(
            f"{reference[:140]!r} is not a digest: {exc.message}",
            detail={"digest": reference[:140]},
        ) from None
    served: Served = await content.resolve(name)
    records = await content.registry.metadata.referrers(served.repository, served.version, subject)
    wanted = query(request).get("artifactType")
    entries: list[dict[str, Any]] = []
    for record in records:
        descriptor = parse_manifest(record.data, record.media_type).referrer_descriptor()
        if wanted is not None and descriptor.artifact_type != wanted:
            continue
        entries.append(dict(descriptor.to_json()))
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": entries},
        separators=(",", ":"),
    ).encode()
    headers = {"content-type": MediaType.OCI_INDEX, "content-length": str(len(body))}
    if wanted is not None:
        headers["oci-filters-applied"] = "artifactType"
    return Response(b"" if request.method == "HEAD" else body, headers=headers)
