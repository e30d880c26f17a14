"""The simple-signing payload: strict parsing, compact writing, identity matching."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ocimirror.core.digest import Digest
from ocimirror.errors import InvalidError, SignatureInvalid
from ocimirror.signatures.payload import (
    ATOMIC_TYPE,
    COSIGN_TYPE,
    MAX_PAYLOAD_SIZE,
    SimpleSigning,
    identity_matches,
    make_payload,
    parse_payload,
)

DIGEST = Digest.of(b"manifest")
OTHER = Digest.of(b"another manifest")


def document(**critical: Any) -> dict[str, Any]:
    """A valid payload document, with members of ``critical`` replaced."""
    base: dict[str, Any] = {
        "identity": {"docker-reference": "registry.example/app:1.0"},
        "image": {"docker-manifest-digest": str(DIGEST)},
        "type": ATOMIC_TYPE,
    }
    base.update(critical)
    return {"critical": base, "optional": {"creator": "test", "timestamp": 1700000000}}


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_a_made_payload_parses_back_to_what_was_given() -> None:
    """make_payload and parse_payload round-trip every field."""
    data = make_payload("registry.example/app:1.0", DIGEST, optional={"creator": "me"})
    assert parse_payload(data) == SimpleSigning(
        docker_reference="registry.example/app:1.0",
        manifest_digest=DIGEST,
        type=ATOMIC_TYPE,
        optional={"creator": "me"},
    )


def test_a_made_payload_is_compact_json_with_the_members_the_format_names() -> None:
    """The payload is one line of JSON: critical identity, image and type, then optional."""
    data = make_payload("ghcr.io/x/y", str(DIGEST), type=COSIGN_TYPE)
    assert b" " not in data.replace(b"cosign container image signature", b"")
    assert json.loads(data) == {
        "critical": {
            "identity": {"docker-reference": "ghcr.io/x/y"},
            "image": {"docker-manifest-digest": str(DIGEST)},
            "type": COSIGN_TYPE,
        },
        "optional": {},
    }


def test_make_payload_refuses_a_bad_digest_or_an_empty_reference() -> None:
    """The caller's mistakes are InvalidError, not a payload that can never verify."""
    with pytest.raises(InvalidError):
        make_payload("registry.example/app", "sha256:nothex")
    with pytest.raises(InvalidError):
        make_payload("", DIGEST)


@pytest.mark.parametrize("optional", [None, "absent"])
def test_optional_may_be_null_or_absent_as_cosign_writes_it(optional: str | None) -> None:
    """cosign writes ``"optional": null``; both null and a missing member read as empty."""
    obj = document(type=COSIGN_TYPE)
    if optional is None:
        obj["optional"] = None
    else:
        del obj["optional"]
    parsed = parse_payload(encode(obj))
    assert parsed.optional == {} and parsed.type == COSIGN_TYPE


def test_the_parsed_payload_is_hashable_and_its_optional_part_read_only() -> None:
    """A frozen value: it can go in a set, and ``optional`` cannot be changed."""
    parsed = parse_payload(encode(document()))
    assert parsed in {parsed}
    with pytest.raises(TypeError):
        parsed.optional["creator"] = "someone else"  # type: ignore[index]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not valid UTF-8"),
        (b"{", "not valid JSON"),
        (b"[]", "expected a JSON object, got array"),
        (b'{"critical": NaN}', "NaN is not a JSON value"),
        (b'{"optional": {}}', "critical: missing"),
        (encode({**document(), "extra": 1}), "unexpected top-level member 'extra'"),
        (encode({"critical": "x", "optional": {}}), "critical: expected an object, got string"),
        (encode(document(extra=1)), "critical: unexpected member 'extra'"),
        (encode(document(type=1)), "critical.type: expected a non-empty string, got number"),
        (encode(document(image=None)), "critical.image: expected an object, got null"),
        (encode(document(image={})), "critical.image.docker-manifest-digest: missing"),
        (
            encode(document(image={"docker-manifest-digest": str(DIGEST), "size": 1})),
            "critical.image: unexpected member 'size'",
        ),
        (
            encode(document(image={"docker-manifest-digest": "md5:abc"})),
            "critical.image.docker-manifest-digest: unsupported digest algorithm 'md5'",
        ),
        (encode(document(identity={})), "critical.identity.docker-reference: missing"),
        (
            encode(document(identity={"docker-reference": ""})),
            "critical.identity.docker-reference: expected a non-empty string",
        ),
        (encode({**document(), "optional": []}), "optional: expected an object, got array"),
        (
            encode({**document(), "optional": {"timestamp": "now"}}),
            "optional.timestamp: expected an integer, got string",
        ),
        (
            encode({**document(), "optional": {"creator": 5}}),
            "optional.creator: expected a string, got number",
        ),
        (
            b'{"critical": {"type": "a", "type": "b"}}',
            "member 'type' appears twice in one object",
        ),
        (b" " * (MAX_PAYLOAD_SIZE + 1), "the limit is"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_malformed_payload_is_refused_naming_what_is_wrong(data: bytes, message: str) -> None:
    """Anything malformed is SignatureInvalid, and the message points at the member."""
    with pytest.raises(SignatureInvalid, match="signature payload") as caught:
        parse_payload(data)
    assert message in caught.value.message


def test_a_payload_that_is_not_bytes_is_refused() -> None:
    """A string is not a payload: signatures are over bytes."""
    with pytest.raises(SignatureInvalid, match="must be bytes"):
        parse_payload("{}")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("signed", "repository", "tags", "expected"),
    [
        ("registry.example/app", "registry.example/app", (), True),
        ("registry.example/app:1.0", "registry.example/app", ("1.0", "latest"), True),
        ("registry.example/app:2.0", "registry.example/app", ("1.0",), False),
        ("registry.example/app:1.0", "registry.example/app", (), False),
        (f"registry.example/app@{DIGEST}", "registry.example/app", (), True),
        (f"registry.example/app@{OTHER}", "registry.example/app", (), False),
        (f"registry.example/app:1.0@{DIGEST}", "registry.example/app", ("1.0",), True),
        (f"registry.example/app:1.0@{DIGEST}", "registry.example/app", (), False),
        ("registry.example/other", "registry.example/app", (), False),
        ("other.example/app", "registry.example/app", (), False),
        ("localhost:5000/app", "localhost:5000/app", (), True),
        ("localhost:5001/app", "localhost:5000/app", (), False),
        ("docker.io/library/busybox", "docker.io/busybox", (), True),
        ("docker.io/busybox:latest", "docker.io/library/busybox", ("latest",), True),
        ("index.docker.io/library/busybox", "docker.io/busybox", (), True),
        ("registry-1.docker.io/busybox", "docker.io/library/busybox", (), True),
        ("busybox", "docker.io/library/busybox", (), True),
        ("docker.io/someone/busybox", "docker.io/library/busybox", (), False),
        ("quay.io/busybox", "docker.io/busybox", (), False),
        ("not a reference!", "registry.example/app", (), False),
        ("", "registry.example/app", (), False),
    ],
)
def test_identity_matches(
    signed: str, repository: str, tags: tuple[str, ...], expected: bool
) -> None:
    """The claimed reference names the repository, one of its tags, or its digest."""
    assert identity_matches(signed, repository=repository, digest=DIGEST, tags=tags) is expected


def test_identity_matching_refuses_a_malformed_expected_repository() -> None:
    """A bad ``repository`` or ``digest`` from the caller raises instead of never matching."""
    with pytest.raises(InvalidError):
        identity_matches("registry.example/app", repository="Registry/App!", digest=DIGEST)
    with pytest.raises(InvalidError):
        identity_matches("registry.example/app", repository="registry.example/app", digest="x")
