"""Manifests: image manifests, indexes and legacy schema1, parsed from their exact bytes.

:func:`parse_manifest` is the only way in. A parsed manifest keeps the bytes it was given
(``raw``) and never re-serialises them, because its digest is the digest of those bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

from ocimirror.core.descriptor import Annotations, Descriptor, json_annotations, json_type
from ocimirror.core.digest import Digest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import DigestMismatch, InvalidDigest, InvalidManifest, ManifestTooLarge

__all__ = [
    "MAX_MANIFEST_SIZE",
    "ImageIndex",
    "ImageManifest",
    "Manifest",
    "Schema1Manifest",
    "parse_manifest",
]

#: Manifests larger than this are refused (the size registries commonly accept).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024


@attrs.frozen(kw_only=True)
class Manifest:
    """What every manifest has: its exact bytes, their digest, and its media type.

    Build manifests with :func:`parse_manifest`; the constructor does not check that
    ``digest`` is the digest of ``raw``.
    """

    #: The media type, without parameters (``application/vnd.oci.image.manifest.v1+json``).
    media_type: str
    #: The bytes exactly as received.
    raw: bytes = attrs.field(repr=False)
    #: The digest of ``raw``.
    digest: Digest
    annotations: Mapping[str, str] = attrs.field(factory=Annotations, converter=Annotations)
    #: The manifest this one refers to (OCI 1.1 referrers: signatures, SBOMs, attestations).
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @property
    def size(self) -> int:
        """The length of ``raw`` in bytes."""
        return len(self.raw)

    @property
    def is_index(self) -> bool:
        """True for an OCI index or a Docker manifest list."""
        return MediaType.is_index(self.media_type)

    @property
    def is_schema1(self) -> bool:
        """True for a legacy Docker schema1 manifest."""
        return MediaType.is_schema1(self.media_type)

    @property
    def descriptor(self) -> Descriptor:
        """A descriptor pointing at this manifest (media type, digest, size)."""
        return Descriptor(media_type=self.media_type, digest=self.digest, size=self.size)

    def referrer_descriptor(self) -> Descriptor:
        """The descriptor the referrers API lists for this manifest.

        It carries the annotations and the artifact type: ``artifactType`` if set, else the
        config's media type, as the distribution-spec says.
        """
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=self.size,
            annotations=self.annotations,
            artifact_type=self.artifact_type,
        )

    def blobs(self) -> tuple[Descriptor, ...]:
        """The blobs this manifest needs: config then layers for an image, else nothing."""
        return ()

    def children(self) -> tuple[Descriptor, ...]:
        """The manifests this one lists: an index's entries, else nothing."""
        return ()

    def references(self) -> tuple[Descriptor, ...]:
        """Everything this manifest points at (children then blobs), ``subject`` excluded."""
        return self.children() + self.blobs()


@attrs.frozen(kw_only=True)
class ImageManifest(Manifest):
    """A Docker schema2 or OCI image manifest, including OCI 1.1 artifacts.

    ``layers`` may be empty (artifacts), and the config may have any media type
    (``application/vnd.oci.empty.v1+json``, ``application/octet-stream``, cosign payloads).
    """

    config: Descriptor
    layers: tuple[Descriptor, ...] = ()

    def referrer_descriptor(self) -> Descriptor:
        """The descriptor the referrers API lists; see :meth:`Manifest.referrer_descriptor`."""
        return attrs.evolve(
            super().referrer_descriptor(),
            artifact_type=self.artifact_type or self.config.media_type,
        )

    def blobs(self) -> tuple[Descriptor, ...]:
        """The config, then the layers in order (foreign layers included)."""
        return (self.config, *self.layers)


@attrs.frozen(kw_only=True)
class ImageIndex(Manifest):
    """A Docker manifest list or an OCI image index; entries may themselves be indexes."""

    manifests: tuple[Descriptor, ...] = ()

    def children(self) -> tuple[Descriptor, ...]:
        """The listed manifests, in order."""
        return self.manifests


@attrs.frozen(kw_only=True)
class Schema1Manifest(Manifest):
    """A legacy Docker schema1 manifest: recognised so it can be mirrored as is, never converted.

    Its layers are in :attr:`fs_layers` (bare digests, top layer first, repeats kept) rather
    than in :meth:`blobs`, because schema1 gives neither their media types nor their sizes.
    The digest is that of the bytes as received, signatures included.
    """

    name: str = ""
    tag: str = ""
    fs_layers: tuple[Digest, ...] = ()


def _fail(message: str) -> NoReturn:
    raise InvalidManifest(message)


def _reject_constant(name: str) -> NoReturn:
    raise InvalidManifest(f"manifest is not valid JSON: {name} is not a JSON value")


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidManifest(f"manifest is not valid UTF-8 (byte {exc.start})") from exc
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise InvalidManifest("manifest is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and ints too long to convert
        raise InvalidManifest(f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidManifest(f"a manifest must be a JSON object, got {json_type(obj)}")
    return obj


def _media_type(obj: dict[str, Any], given: str | None, schema_version: int) -> str:
    """The manifest's media type from the caller's hint, the ``mediaType`` field, or a guess."""
    hint = MediaType.base(given) if given else None
    if hint is not None and not MediaType.is_manifest(hint):
        hint = None  # a Content-Type such as application/json says nothing
    field = obj.get("mediaType")
    if field is not None and not isinstance(field, str):
        _fail(f"mediaType: expected a string, got {json_type(field)}")
    declared = MediaType.base(field) if field else None
    if hint is not None and declared is not None and hint != declared:
        _fail(
            f"mediaType {declared!r} in the manifest does not match the media type "
            f"{hint!r} it was given with; they must be equal"
        )
    media_type = hint or declared
    if media_type is None:
        if schema_version == 1:
            signed = "signatures" in obj
            return MediaType.DOCKER_SCHEMA1_SIGNED if signed else MediaType.DOCKER_SCHEMA1
        if "manifests" in obj:
            return MediaType.OCI_INDEX
        if "config" in obj:
            return MediaType.OCI_MANIFEST
        _fail("cannot tell the manifest's type: it has no mediaType, config or manifests")
    if not MediaType.is_manifest(media_type):
        _fail(
            f"unsupported manifest media type {media_type!r}; expected one of "
            + ", ".join(MediaType.MANIFEST_TYPES)
        )
    if MediaType.is_schema1(media_type) != (schema_version == 1):
        _fail(f"schemaVersion {schema_version} does not fit media type {media_type!r}")
    return media_type


def _descriptors(obj: dict[str, Any], key: str, *, required: bool) -> tuple[Descriptor, ...]:
    value = obj.get(key)
    if value is None:
        if required:
            _fail(f"{key}: missing")
        return ()
    if not isinstance(value, list):
        _fail(f"{key}: expected an array of descriptors, got {json_type(value)}")
    return tuple(Descriptor.from_json(item, where=f"{key}[{i}]") for i, item in enumerate(value))


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        _fail(f"{key}: expected a string, got {json_type(value)}")
    return value or None


def _schema1(obj: dict[str, Any], common: dict[str, Any]) -> Schema1Manifest:
    layers = obj.get("fsLayers")
    if not isinstance(layers, list):
        got = "missing" if layers is None else f"got {json_type(layers)}"
        _fail(f"fsLayers: expected an array, {got}")
    fs_layers: list[Digest] = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            _fail(f"fsLayers[{i}]: expected an object, got {json_type(layer)}")
        if "blobSum" not in layer:
            _fail(f"fsLayers[{i}].blobSum: missing")
        try:
            fs_layers.append(Digest.parse(layer["blobSum"]))
        except InvalidDigest as exc:
            raise InvalidManifest(f"fsLayers[{i}].blobSum: {exc.message}") from exc
    return Schema1Manifest(
        **common,
        name=_optional_str(obj, "name") or "",
        tag=_optional_str(obj, "tag") or "",
        fs_layers=tuple(fs_layers),
    )


def parse_manifest(
    raw: bytes, media_type: str | None = None, *, expected: Digest | None = None
) -> Manifest:
    """Parse a manifest from its exact bytes.

    ``media_type`` is what the bytes came with (a ``Content-Type``; parameters are ignored,
    and so is a type that is not a manifest type). It must agree with the manifest's own
    ``mediaType`` field when both are present; with neither, the type is guessed from the
    content. With ``expected``, the bytes are hashed with its algorithm and
    :class:`DigestMismatch` is raised when they differ.

    Anything malformed raises :class:`InvalidManifest` (:class:`ManifestTooLarge` over
    :data:`MAX_MANIFEST_SIZE`) naming the field at fault, such as ``layers[2].digest``.
    """
    if isinstance(raw, bytearray | memoryview):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise InvalidManifest(f"a manifest must be bytes, got {type(raw).__name__}")
    if len(raw) > MAX_MANIFEST_SIZE:
        raise ManifestTooLarge(
            f"manifest is {len(raw)} bytes; the limit is {MAX_MANIFEST_SIZE} bytes"
        )
    if expected is not None:
        expected = Digest.parse(expected)
        digest = Digest.of(raw, expected.algorithm)
        if digest != expected:
            raise DigestMismatch(f"manifest digest is {digest}, expected {expected}")
    else:
        digest = Digest.of(raw)
    if media_type is not None and not isinstance(media_type, str):
        raise InvalidManifest(f"media type must be a string, got {type(media_type).__name__}")

    obj = _decode(raw)
    schema_version = obj.get("schemaVersion")
    if type(schema_version) is not int or schema_version not in (1, 2):
        got = "missing" if "schemaVersion" not in obj else f"got {schema_version!r:.40}"
        _fail(f"schemaVersion: expected 2 (or 1 for legacy Docker manifests), {got}")
    mt = _media_type(obj, media_type, schema_version)
    subject = obj.get("subject")
    common: dict[str, Any] = {
        "media_type": mt,
        "raw": raw,
        "digest": digest,
        "annotations": json_annotations(obj.get("annotations"), "annotations"),
        "subject": None if subject is None else Descriptor.from_json(subject, where="subject"),
        "artifact_type": _optional_str(obj, "artifactType"),
    }
    if MediaType.is_schema1(mt):
        return _schema1(obj, common)
    if MediaType.is_index(mt):
        return ImageIndex(**common, manifests=_descriptors(obj, "manifests", required=True))
    config = obj.get("config")
    if config is None:
        _fail("config: missing")
    return ImageManifest(
        **common,
        config=Descriptor.from_json(config, where="config"),
        layers=_descriptors(obj, "layers", required=False),
    )
