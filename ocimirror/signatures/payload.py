"""The "simple signing" payload: the JSON document an image signature vouches for.

Both signature formats sign the same document (containers-signature(5)); only ``critical.type``
tells them apart::

    {"critical": {"identity": {"docker-reference": "registry.example/app:1.0"},
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "type": "atomic container signature"},
     "optional": {"creator": "...", "timestamp": 1700000000}}

``critical`` must hold exactly those members and consumers must reject anything else in it,
so :func:`parse_payload` is strict there (duplicate keys included: two parsers could pick
different ones). ``optional`` is free-form; cosign writes ``null`` or its annotations.

:func:`identity_matches` answers whether the claimed ``docker-reference`` names the image
being checked: the repository must match, a tag must be one of the image's tags, a digest must
be its digest. This module does no I/O and checks no cryptography: parse a payload only after
its signature verified.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Any, NoReturn

import attrs

from ocimirror.core.descriptor import json_type
from ocimirror.core.digest import Digest
from ocimirror.core.reference import Reference
from ocimirror.errors import InvalidDigest, InvalidError, SignatureInvalid

__all__ = [
    "ATOMIC_TYPE",
    "COSIGN_TYPE",
    "MAX_PAYLOAD_SIZE",
    "SimpleSigning",
    "identity_matches",
    "make_payload",
    "parse_payload",
]

#: ``critical.type`` of a GPG-signed signature (containers-signature(5), skopeo, podman).
ATOMIC_TYPE = "atomic container signature"
#: ``critical.type`` of a cosign signature (cosign's SIGNATURE_SPEC.md).
COSIGN_TYPE = "cosign container image signature"
#: Payloads are a few hundred bytes; anything above this is refused unread.
MAX_PAYLOAD_SIZE = 1024 * 1024

#: Host names that all mean Docker Hub.
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DOCKER_HUB = "docker.io"


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen
class SimpleSigning:
    """A parsed payload: who the image claims to be, which manifest, and the signature type.

    ``optional`` is read-only and left out of the hash (it may hold lists and objects).
    """

    #: The claimed identity, ``host[:port]/path[:tag][@digest]`` (or less, from old signers).
    docker_reference: str
    #: The digest of the manifest that is signed.
    manifest_digest: Digest
    #: ``critical.type``: :data:`ATOMIC_TYPE` or :data:`COSIGN_TYPE` for the formats known.
    type: str
    #: ``optional``: creator, timestamp, cosign annotations; never needed to verify.
    optional: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)


def _fail(message: str) -> NoReturn:
    raise SignatureInvalid(f"signature payload: {message}")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook`` that refuses a key given twice (which one would count?)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            _fail(f"member {key!r} appears twice in one object")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> NoReturn:
    _fail(f"not valid JSON: {name} is not a JSON value")


def _decode(data: bytes) -> object:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SignatureInvalid(f"a signature payload must be bytes, got {type(data).__name__}")
    if len(data) > MAX_PAYLOAD_SIZE:
        _fail(f"{len(data)} bytes; the limit is {MAX_PAYLOAD_SIZE}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"not valid UTF-8 (byte {exc.start})")
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except RecursionError:
        _fail("not valid JSON: nested too deeply")
    except ValueError as exc:  # JSONDecodeError, and ints too long to convert
        _fail(f"not valid JSON: {exc}")


def _exact_object(value: object, where: str, members: Collection[str]) -> dict[str, Any]:
    """``value`` as an object that has every one of ``members`` and nothing else."""
    if not isinstance(value, dict):
        _fail(f"{where}: expected an object, got {json_type(value)}")
    for name in members:
        if name not in value:
            _fail(f"{where}.{name}: missing")
    extra = sorted(set(value) - set(members))
    if extra:
        _fail(f"{where}: unexpected member {extra[0]!r} (consumers must reject it)")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(f"{where}: expected a non-empty string, got {json_type(value)}")
    return value


def _optional(obj: dict[str, Any]) -> dict[str, Any]:
    """``optional``: absent or null reads as empty; its two known members are type-checked."""
    value = obj.get("optional")
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(f"optional: expected an object, got {json_type(value)}")
    creator = value.get("creator")
    if creator is not None and not isinstance(creator, str):
        _fail(f"optional.creator: expected a string, got {json_type(creator)}")
    timestamp = value.get("timestamp")
    if timestamp is not None and type(timestamp) is not int:
        _fail(f"optional.timestamp: expected an integer, got {json_type(timestamp)}")
    return value


def parse_payload(data: bytes) -> SimpleSigning:
    """Read a simple-signing payload; raise :class:`SignatureInvalid` naming the bad member.

    ``critical`` must hold exactly ``type``, ``image`` and ``identity``, ``image`` exactly
    ``docker-manifest-digest`` (a valid digest) and ``identity`` exactly ``docker-reference``.
    The type is returned, not checked: the caller knows which format it expects.
    """
    obj = _decode(data)
    if not isinstance(obj, dict):
        _fail(f"expected a JSON object, got {json_type(obj)}")
    extra = sorted(set(obj) - {"critical", "optional"})
    if extra:
        _fail(f"unexpected top-level member {extra[0]!r}")
    if "critical" not in obj:
        _fail("critical: missing")
    critical = _exact_object(obj["critical"], "critical", ("type", "image", "identity"))
    image = _exact_object(critical["image"], "critical.image", ("docker-manifest-digest",))
    identity = _exact_object(critical["identity"], "critical.identity", ("docker-reference",))
    where = "critical.image.docker-manifest-digest"
    try:
        digest = Digest.parse(_string(image["docker-manifest-digest"], where))
    except InvalidDigest as exc:
        _fail(f"{where}: {exc.message}")
    return SimpleSigning(
        docker_reference=_string(
            identity["docker-reference"], "critical.identity.docker-reference"
        ),
        manifest_digest=digest,
        type=_string(critical["type"], "critical.type"),
        optional=_optional(obj),
    )


def make_payload(
    docker_reference: str,
    digest: Digest | str,
    *,
    type: str = ATOMIC_TYPE,
    optional: Mapping[str, Any] | None = None,
) -> bytes:
    """The compact JSON payload that claims ``docker_reference`` for the manifest ``digest``.

    ``type`` is :data:`ATOMIC_TYPE` for GPG signatures, :data:`COSIGN_TYPE` for cosign ones.
    """
    if not isinstance(docker_reference, str) or not docker_reference:
        raise InvalidError("docker_reference must be a non-empty string")
    if not isinstance(type, str) or not type:
        raise InvalidError("type must be a non-empty string")
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": str(Digest.parse(digest))},
            "type": type,
        },
        "optional": dict(optional or {}),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _normalise(reference: Reference) -> str:
    """``host/path`` with Docker Hub's spellings made one: ``docker.io/library/x``."""
    registry = reference.registry
    if registry is None or registry in _DOCKER_HUB_ALIASES:
        registry = _DOCKER_HUB
    path = reference.repository
    if registry == _DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return f"{registry}/{path}"


def identity_matches(
    signed: str,
    *,
    repository: str,
    digest: Digest | str,
    tags: Collection[str] = (),
) -> bool:
    """Whether the claimed ``signed`` reference names this image.

    ``repository`` is the image's ``host[:port]/path``. Both sides are compared after Docker
    Hub normalisation (``docker.io/x`` is ``docker.io/library/x``; ``index.docker.io`` and
    ``registry-1.docker.io`` are ``docker.io``; no host means Docker Hub). A tag in ``signed``
    must be one of ``tags``; a digest in it must be ``digest``; a bare repository matches
    any tag, as older cosign signatures carry no more.

    A ``signed`` value that is no reference at all does not match. A malformed
    ``repository`` or ``digest`` is the caller's mistake and raises :class:`InvalidError`.
    """
    expected = _normalise(Reference.parse(repository))
    want = Digest.parse(digest)
    try:
        claimed = Reference.parse(signed)
    except InvalidError:
        return False
    if _normalise(claimed) != expected:
        return False
    if claimed.tag is not None and claimed.tag not in tags:
        return False
    return claimed.digest is None or claimed.digest == want
