"""cosign signatures: companion tags, ``.sig`` manifests, and ECDSA verification.

cosign stores the signatures of ``repo@sha256:<hex>`` in the same repository, as an image
manifest tagged ``sha256-<hex>.sig`` (attestations and SBOMs go under ``.att`` and ``.sbom``;
the bare ``sha256-<hex>`` is the OCI referrers tag schema's fallback). Each layer of that
manifest is a simple-signing payload (``critical.type`` = :data:`COSIGN_TYPE`, media type
:data:`SIMPLESIGNING_MEDIA_TYPE`) and carries, in the :data:`SIGNATURE_ANNOTATION`
annotation, the base64 signature over exactly the layer's bytes.

A signature vouches for an image only if all of it holds (:func:`verify_signature_manifest`):
the layer's bytes hash to its descriptor, the signature verifies against a trusted key, the
payload is a cosign payload for this manifest digest, and its claimed identity names this
repository. Keys are PEM public keys (cosign's ``cosign.pub``): ECDSA, checked with SHA-256.

``cryptography`` is imported when a :class:`CosignVerifier` is built, not with this module:
the tag and manifest helpers are all a sync needs when it only mirrors signatures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from ocimirror.core.descriptor import Descriptor
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import ImageManifest, Manifest
from ocimirror.errors import InvalidError, SignatureInvalid
from ocimirror.signatures.payload import COSIGN_TYPE, identity_matches, parse_payload

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "COMPANION_SUFFIXES",
    "SIGNATURE_ANNOTATION",
    "SIMPLESIGNING_MEDIA_TYPE",
    "CosignVerifier",
    "companion_tag",
    "parse_companion_tag",
    "signature_layers",
    "verify_signature_manifest",
]

#: The layer annotation holding the base64 signature over the layer's bytes.
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
#: The media type of a signature layer: a simple-signing payload.
SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
#: The tag suffixes cosign uses: signatures, attestations, SBOMs.
COMPANION_SUFFIXES = (".sig", ".att", ".sbom")

_COMPANION = re.compile(r"sha256-([0-9a-f]{64})(|\.sig|\.att|\.sbom)")


def companion_tag(digest: Digest | str, suffix: str = "") -> str:
    """The tag of an image's companion: ``sha256-<hex>`` plus ``suffix`` (``.sig``...).

    With no suffix it is the OCI referrers tag schema's tag. Per that schema the algorithm is
    cut to 32 characters and the hex to 64, so only sha256 tags read back with
    :func:`parse_companion_tag`.
    """
    if suffix and suffix not in COMPANION_SUFFIXES:
        raise InvalidError(
            f"companion tag suffix {suffix!r} is not one of {', '.join(COMPANION_SUFFIXES)}"
        )
    parsed = Digest.parse(digest)
    return f"{parsed.algorithm[:32]}-{parsed.hex[:64]}{suffix}"


def parse_companion_tag(tag: str) -> tuple[Digest, str] | None:
    """``(digest, suffix)`` of a companion tag such as ``sha256-<hex>.sig``, else None.

    The suffix is ``""``, ``".sig"``, ``".att"`` or ``".sbom"``; any other tag gives None.
    """
    match = _COMPANION.fullmatch(tag) if isinstance(tag, str) else None
    if match is None:
        return None
    return Digest("sha256", match.group(1)), match.group(2)


def signature_layers(manifest: Manifest) -> list[tuple[Descriptor, str]]:
    """The layers of a ``.sig`` manifest that carry a signature, with its base64 text.

    Anything but an image manifest has none.
    """
    if not isinstance(manifest, ImageManifest):
        return []
    return [
        (layer, layer.annotations[SIGNATURE_ANNOTATION])
        for layer in manifest.layers
        if SIGNATURE_ANNOTATION in layer.annotations
    ]


def _load_key(key: bytes | str, index: int) -> ec.EllipticCurvePublicKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = key.encode("utf-8") if isinstance(key, str) else key
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidError(f"cosign public key {index}: expected PEM bytes or text")
    try:
        loaded = serialization.load_pem_public_key(bytes(data))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidError(f"cosign public key {index} is not a PEM public key: {exc}") from exc
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise InvalidError(
            f"cosign public key {index} is a {type(loaded).__name__}; only ECDSA keys "
            "(cosign generate-key-pair's P-256) are supported"
        )
    return loaded


def _key_id(key: ec.EllipticCurvePublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


class CosignVerifier:
    """Checks cosign signatures against a fixed set of trusted ECDSA public keys (PEM).

    Each key is named by its id: the first 16 hex characters of the sha256 of its DER
    SubjectPublicKeyInfo. Building one reads no file; verifying is pure computation.
    """

    __slots__ = ("_keys",)

    def __init__(self, public_keys: Sequence[bytes | str]) -> None:
        if isinstance(public_keys, str | bytes) or not public_keys:
            raise InvalidError("cosign verification needs a list of at least one public key")
        keys = [_load_key(key, i) for i, key in enumerate(public_keys)]
        self._keys: tuple[tuple[str, ec.EllipticCurvePublicKey], ...] = tuple(
            {_key_id(key): key for key in keys}.items()
        )

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of the trusted keys, in the order given (duplicates once)."""
        return tuple(key_id for key_id, _ in self._keys)

    def verify(self, payload: bytes, signature_b64: str) -> str:
        """The id of the trusted key whose ECDSA-SHA256 signature ``signature_b64`` is over
        exactly ``payload``; raise :class:`SignatureInvalid` when there is none."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise SignatureInvalid(f"cosign signature is not valid base64: {exc}") from None
        for key_id, key in self._keys:
            try:
                key.verify(signature, bytes(payload), ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                continue
            return key_id
        raise SignatureInvalid("the signature does not verify against any trusted cosign key")


def _check_layer(
    layer: Descriptor,
    signature_b64: str,
    data: bytes | None,
    *,
    digest: Digest,
    verifier: CosignVerifier,
    repository: str,
    tags: Collection[str],
) -> str:
    """The key id that vouches for one layer; raise :class:`SignatureInvalid` saying why not."""
    if data is None:
        raise SignatureInvalid(f"the bytes of layer {layer.digest} were not given")
    if len(data) != layer.size or Digest.of(data, layer.digest.algorithm) != layer.digest:
        raise SignatureInvalid(f"the bytes given for layer {layer.digest} are not that layer")
    key_id = verifier.verify(data, signature_b64)  # before parsing: only trusted JSON is read
    payload = parse_payload(data)
    if payload.type != COSIGN_TYPE:
        raise SignatureInvalid(f"payload type is {payload.type!r}, not {COSIGN_TYPE!r}")
    if payload.manifest_digest != digest:
        raise SignatureInvalid(f"the payload signs {payload.manifest_digest}, not {digest}")
    if not identity_matches(
        payload.docker_reference, repository=repository, digest=digest, tags=tags
    ):
        raise SignatureInvalid(
            f"the payload claims identity {payload.docker_reference!r}, which does not name "
            f"{repository}@{digest}" + (f" or its tags {sorted(tags)}" if tags else "")
        )
    return key_id


def verify_signature_manifest(
    manifest: Manifest,
    layer_bytes: Mapping[str, bytes],
    *,
    digest: Digest | str,
    verifier: CosignVerifier,
    repository: str,
    tags: Collection[str] = (),
) -> str:
    """The key id that vouches, through the ``.sig`` ``manifest``, for the image ``digest``.

    ``layer_bytes`` maps each signature layer's digest (a string) to its bytes. The first
    layer that passes every check wins; when none does, :class:`SignatureInvalid` says why the
    last one failed (every failure is in its ``detail``).
    """
    want = Digest.parse(digest)
    layers = signature_layers(manifest)
    if not layers:
        raise SignatureInvalid(
            f"signature manifest {manifest.digest} has no layer with a {SIGNATURE_ANNOTATION} "
            "annotation"
        )
    failures: list[str] = []
    for layer, signature_b64 in layers:
        try:
            return _check_layer(
                layer,
                signature_b64,
                layer_bytes.get(str(layer.digest)),
                digest=want,
                verifier=verifier,
                repository=repository,
                tags=tags,
            )
        except SignatureInvalid as exc:
            failures.append(f"layer {layer.digest}: {exc.message}")
    raise SignatureInvalid(
        f"no cosign signature vouches for {want}: {failures[-1]}", detail=failures
    )
