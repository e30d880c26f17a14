"""Where GPG ("atomic") signatures live: lookaside stores and the registry signature API.

An atomic signature is an opaque blob (a GPG-signed simple-signing payload, see
:mod:`ocimirror.signatures.payload`) kept beside the image rather than in it, in one of two
places:

* a lookaside store ("sigstore", containers-registries.d(5)): plain files at
  ``<sigstore>/<repository>@<algo>=<hex>/signature-<n>``, numbered from 1 with no gaps;
* the registry signature API extension (OpenShift's registry, skopeo and podman speak it):
  ``GET /extensions/v2/<name>/signatures/<digest>`` answers
  ``{"signatures": [{"schemaVersion": 2, "type": "atomic", "name": "<digest>@<id>",
  "content": "<base64>"}]}``.

Signature names are derived from the signature bytes (:func:`signature_id`), so syncing the
same signature twice stores it once. Everything here is pure: no I/O, no cryptography.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from typing import Any, NoReturn

import attrs

from ocimirror.core.descriptor import json_type
from ocimirror.core.digest import Digest
from ocimirror.core.reference import validate_repository_name
from ocimirror.errors import InvalidError, SignatureInvalid

__all__ = [
    "EXTENSION_SCHEMA_VERSION",
    "EXTENSION_TYPE",
    "ExtensionSignature",
    "decode_extension",
    "encode_extension",
    "lookaside_url",
    "signature_id",
    "signature_name",
]

#: ``type`` of the entries the signature API carries that this module reads and writes.
EXTENSION_TYPE = "atomic"
#: ``schemaVersion`` of those entries.
EXTENSION_SCHEMA_VERSION = 2


@attrs.frozen
class ExtensionSignature:
    """One entry of a signature API answer, its content decoded from base64."""

    #: ``<manifest digest>@<id>``: unique among the image's signatures.
    name: str
    #: The signature blob (a GPG-signed payload).
    content: bytes = attrs.field(repr=False)
    type: str = EXTENSION_TYPE
    schema_version: int = EXTENSION_SCHEMA_VERSION


def signature_id(data: bytes) -> str:
    """32 hex characters naming a signature by its bytes (the first half of their sha256).

    Deterministic, unlike the random names skopeo picks, so a re-sync finds it already there.
    """
    return hashlib.sha256(data).hexdigest()[:32]


def signature_name(manifest_digest: Digest | str, data: bytes) -> str:
    """The signature API's name for ``data``: ``<manifest digest>@<signature_id(data)>``."""
    return f"{Digest.parse(manifest_digest)}@{signature_id(data)}"


def lookaside_url(sigstore: str, repository: str, digest: Digest | str, index: int) -> str:
    """The URL of signature number ``index`` (from 1) of an image in a lookaside store.

    ``repository`` is the image's path without its registry host (``library/busybox``);
    it is validated, so it cannot climb out of the store with ``..``.
    """
    if type(index) is not int or index < 1:
        raise InvalidError(f"lookaside signatures are numbered from 1, got {index!r}")
    validate_repository_name(repository)
    parsed = Digest.parse(digest)
    return f"{sigstore.rstrip('/')}/{repository}@{parsed.algorithm}={parsed.hex}/signature-{index}"


def _fail(message: str) -> NoReturn:
    raise SignatureInvalid(f"signature API answer: {message}")


def _load(body: bytes) -> object:
    try:
        return json.loads(bytes(body).decode("utf-8"))
    except UnicodeDecodeError as exc:
        _fail(f"not valid UTF-8 (byte {exc.start})")
    except RecursionError:
        _fail("not valid JSON: nested too deeply")
    except ValueError as exc:
        _fail(f"not valid JSON: {exc}")


def _field(entry: dict[str, Any], key: str, kind: type[str] | type[int], where: str) -> Any:
    """``entry[key]``, which must be exactly a ``str`` or an ``int`` (not a boolean)."""
    value = entry.get(key)
    if type(value) is not kind:
        want = "a string" if kind is str else "an integer"
        got = "missing" if key not in entry else f"got {json_type(value)}"
        _fail(f"{where}.{key}: expected {want}, {got}")
    return value


def _entry(entry: object, where: str) -> ExtensionSignature | None:
    """One entry, or None for a type or schema version this module does not know."""
    if not isinstance(entry, dict):
        _fail(f"{where}: expected an object, got {json_type(entry)}")
    kind = _field(entry, "type", str, where)
    version = _field(entry, "schemaVersion", int, where)
    if kind != EXTENSION_TYPE or version != EXTENSION_SCHEMA_VERSION:
        return None
    name = _field(entry, "name", str, where)
    text = _field(entry, "content", str, where)
    if not name or not text:
        _fail(f"{where}: name and content must not be empty")
    try:
        content = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        _fail(f"{where}.content: not valid base64 ({exc})")
    return ExtensionSignature(name=name, content=content, type=kind, schema_version=version)


def decode_extension(body: bytes) -> list[ExtensionSignature]:
    """The atomic signatures of a signature API answer, in the order given.

    Entries of another ``type`` or ``schemaVersion`` are skipped (formats not defined yet);
    anything malformed raises :class:`SignatureInvalid` naming the entry.
    ``"signatures": null`` reads as none.
    """
    obj = _load(body)
    if not isinstance(obj, dict):
        _fail(f"expected a JSON object, got {json_type(obj)}")
    if "signatures" not in obj:
        _fail("signatures: missing")
    entries = obj["signatures"]
    if entries is None:
        return []
    if not isinstance(entries, list):
        _fail(f"signatures: expected an array, got {json_type(entries)}")
    found = (_entry(entry, f"signatures[{i}]") for i, entry in enumerate(entries))
    return [signature for signature in found if signature is not None]


def encode_extension(items: Iterable[tuple[str, bytes]]) -> bytes:
    """The signature API answer (compact JSON) for ``(name, content)`` pairs."""
    signatures = [
        {
            "schemaVersion": EXTENSION_SCHEMA_VERSION,
            "type": EXTENSION_TYPE,
            "name": name,
            "content": base64.b64encode(content).decode("ascii"),
        }
        for name, content in items
    ]
    return json.dumps({"signatures": signatures}, separators=(",", ":")).encode("utf-8")
