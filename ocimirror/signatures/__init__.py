"""Image signature formats: what sync and the server read, check and serve.

Two families sign the same "simple signing" payload (:mod:`.payload`), a JSON claim that a
manifest digest is a given image:

* atomic signatures (containers-signature(5)): the payload inside a GPG signed message, kept
  beside the image in a lookaside store or behind the registry signature API
  (:mod:`.atomic`), verified with the ``gpg`` program (:mod:`.gpg`);
* cosign signatures: the payload as a layer of a ``sha256-<hex>.sig`` image in the same
  repository, its ECDSA signature in a layer annotation (:mod:`.cosign`).

Importing this package is as light as ``ocimirror.core``: ``GPGVerifier`` and
``gpg_available`` (asyncio, a subprocess) load on first use, and :class:`CosignVerifier`
imports ``cryptography`` only when one is built. Verification failures raise
:class:`~ocimirror.errors.SignatureInvalid`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ocimirror._lazy import exports
from ocimirror.signatures.atomic import (
    ExtensionSignature,
    decode_extension,
    encode_extension,
    lookaside_url,
    signature_id,
    signature_name,
)
from ocimirror.signatures.cosign import (
    COMPANION_SUFFIXES,
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    CosignVerifier,
    companion_tag,
    parse_companion_tag,
    signature_layers,
    verify_signature_manifest,
)
from ocimirror.signatures.payload import (
    ATOMIC_TYPE,
    COSIGN_TYPE,
    SimpleSigning,
    identity_matches,
    make_payload,
    parse_payload,
)

if TYPE_CHECKING:
    from ocimirror.signatures.gpg import GPGVerifier, gpg_available

_LAZY = {
    "GPGVerifier": "ocimirror.signatures.gpg",
    "gpg_available": "ocimirror.signatures.gpg",
}


__getattr__, __dir__ = exports(__name__, _LAZY, globals())

__all__ = [
    "ATOMIC_TYPE",
    "COMPANION_SUFFIXES",
    "COSIGN_TYPE",
    "SIGNATURE_ANNOTATION",
    "SIMPLESIGNING_MEDIA_TYPE",
    "CosignVerifier",
    "ExtensionSignature",
    "GPGVerifier",
    "SimpleSigning",
    "companion_tag",
    "decode_extension",
    "encode_extension",
    "gpg_available",
    "identity_matches",
    "lookaside_url",
    "make_payload",
    "parse_companion_tag",
    "parse_payload",
    "signature_id",
    "signature_layers",
    "signature_name",
    "verify_signature_manifest",
]
