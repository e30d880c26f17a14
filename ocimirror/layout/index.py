"""``index.json`` and ``oci-layout``: the constants, :class:`LayoutRef` and their parsing."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ocimirror.core.digest import Digest
from ocimirror.errors import InvalidDigest, InvalidLayout

#: The file that marks a directory (or tar) as an OCI image layout.
LAYOUT_FILE: Final = "oci-layout"
#: The image index at the root of a layout.
INDEX_FILE: Final = "index.json"
#: The only ``imageLayoutVersion`` the image-spec defines.
LAYOUT_VERSION: Final = "1.0.0"
#: The annotation that gives an ``index.json`` entry its name (tag).
REF_NAME_ANNOTATION: Final = "org.opencontainers.image.ref.name"
#: containerd's (and ``docker save``'s) full image name annotation, read as a fallback.
CONTAINERD_NAME_ANNOTATION: Final = "io.containerd.image.name"
#: The media type of ``index.json``.
INDEX_MEDIA_TYPE: Final = "application/vnd.oci.image.index.v1+json"
#: The largest ``index.json`` a reader accepts (about 200,000 entries).
MAX_INDEX_SIZE: Final = 64 * 1024 * 1024

_MAX_LAYOUT_FILE_SIZE = 64 * 1024
_CHUNK = 1024 * 1024
_LAYOUT_FILE_BYTES = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()
# The ref name grammar containers/image accepts: looser than the image-spec's, so that every
# Docker tag (``_x``, ``a__b``) fits, but still no spaces, control characters or empty parts.
_REF_NAME = re.compile(r"[A-Za-z0-9._:@+-]+(?:/[A-Za-z0-9._:@+-]+)*")
_MAX_LINK_HOPS = 16


def blob_path(digest: Digest) -> str:
    """The path of a blob inside a layout: ``blobs/<algorithm>/<hex>``."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


@attrs.frozen
class LayoutRef:
    """One entry of ``index.json``: a descriptor and its ref name (tag), if any."""

    #: The entry's ``mediaType`` (an image manifest or an index).
    media_type: str
    #: The entry's ``digest``.
    digest: Digest
    #: The entry's ``size`` in bytes.
    size: int
    #: The ``org.opencontainers.image.ref.name`` annotation, else the tag part of
    #: ``io.containerd.image.name``, else ``None``.
    name: str | None
    #: The raw descriptor JSON, as it appears in ``index.json``.
    descriptor: dict[str, Any] = attrs.field(hash=False)

    @property
    def annotations(self) -> dict[str, str]:
        """The descriptor's annotations (empty if it has none)."""
        return dict(self.descriptor.get("annotations") or {})

    @property
    def platform(self) -> dict[str, Any] | None:
        """The descriptor's ``platform``, if it has one."""
        platform = self.descriptor.get("platform")
        return dict(platform) if isinstance(platform, dict) else None


def _oci_ref_name(annotations: Mapping[str, Any] | None) -> str | None:
    if not annotations:
        return None
    name = annotations.get(REF_NAME_ANNOTATION)
    return name if isinstance(name, str) and name else None


def _ref_name(annotations: Mapping[str, Any] | None) -> str | None:
    name = _oci_ref_name(annotations)
    if name is not None or not annotations:
        return name
    full = annotations.get(CONTAINERD_NAME_ANNOTATION)
    if not isinstance(full, str):
        return None
    # "registry:5000/repo:tag" -> "tag"; a name without a tag (or only a digest) has none.
    last = full.rsplit("/", 1)[-1].split("@", 1)[0]
    _, sep, tag = last.rpartition(":")
    return tag if sep and tag else None


def _parse_descriptor(raw: Any, where: str) -> LayoutRef:
    if not isinstance(raw, dict):
        raise InvalidLayout(f"{where} is not a JSON object")
    media_type = raw.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidLayout(f"{where} has no mediaType string")
    try:
        digest = Digest.parse(raw.get("digest"))  # type: ignore[arg-type]
    except InvalidDigest as e:
        raise InvalidLayout(f"{where} has an invalid digest: {e.message}") from e
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidLayout(f"{where} has no size, or a size that is not a non-negative integer")
    annotations = raw.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())
    ):
        raise InvalidLayout(f"{where} has annotations that are not a string-to-string object")
    return LayoutRef(media_type, digest, size, _ref_name(annotations), raw)


def _parse_index(data: bytes, label: str) -> list[LayoutRef]:
    try:
        index = json.loads(data)
    except ValueError as e:  # also UnicodeDecodeError
        raise InvalidLayout(f"{label}: index.json is not valid JSON: {e}") from e
    if not isinstance(index, dict):
        raise InvalidLayout(f"{label}: index.json is not a JSON object")
    if index.get("schemaVersion") != 2:
        raise InvalidLayout(
            f"{label}: index.json has schemaVersion {index.get('schemaVersion')!r}, expected 2"
        )
    media_type = index.get("mediaType", INDEX_MEDIA_TYPE)
    if media_type != INDEX_MEDIA_TYPE:
        raise InvalidLayout(
            f"{label}: index.json has mediaType {media_type!r}, expected {INDEX_MEDIA_TYPE}"
        )
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidLayout(f"{label}: index.json has no 'manifests' list")
    return [
        _parse_descriptor(raw, f"{label}: index.json manifests[{i}]")
        for i, raw in enumerate(manifests)
    ]


def _check_layout_file(data: bytes, label: str) -> None:
    try:
        layout = json.loads(data)
    except ValueError as e:
        raise InvalidLayout(f"{label}: oci-layout is not valid JSON: {e}") from e
    version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
    if version != LAYOUT_VERSION:
        raise InvalidLayout(
            f"{label}: unsupported imageLayoutVersion {version!r} in oci-layout "
            f"(this reader knows {LAYOUT_VERSION!r})"
        )
