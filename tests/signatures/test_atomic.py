"""Atomic signature locations: names, lookaside URLs, and the registry signature API body."""

from __future__ import annotations

import base64
import json

import pytest

from ocimirror.core.digest import Digest
from ocimirror.errors import InvalidError, InvalidName, SignatureInvalid
from ocimirror.signatures.atomic import (
    ExtensionSignature,
    decode_extension,
    encode_extension,
    lookaside_url,
    signature_id,
    signature_name,
)

DIGEST = Digest.of(b"manifest")


def test_a_signature_id_is_32_hex_characters_fixed_by_the_bytes() -> None:
    """The same bytes give the same id (so a re-sync dedups), other bytes another."""
    first = signature_id(b"signature")
    assert len(first) == 32 and int(first, 16) >= 0
    assert first == signature_id(b"signature") != signature_id(b"signature2")


def test_a_signature_name_is_the_manifest_digest_at_the_id() -> None:
    """``<digest>@<id>``, as the signature API names signatures."""
    assert signature_name(str(DIGEST), b"sig") == f"{DIGEST}@{signature_id(b'sig')}"


@pytest.mark.parametrize(
    ("sigstore", "repository", "index", "expected"),
    [
        (
            "https://sigstore.example/sigs",
            "library/busybox",
            1,
            f"https://sigstore.example/sigs/library/busybox@sha256={DIGEST.hex}/signature-1",
        ),
        (
            "file:///var/lib/sigstore/",
            "app",
            3,
            f"file:///var/lib/sigstore/app@sha256={DIGEST.hex}/signature-3",
        ),
    ],
)
def test_lookaside_url(sigstore: str, repository: str, index: int, expected: str) -> None:
    """``<sigstore>/<repository>@<algo>=<hex>/signature-<n>``, with no doubled slash."""
    assert lookaside_url(sigstore, repository, DIGEST, index) == expected


def test_lookaside_signatures_are_numbered_from_one() -> None:
    """Index 0 does not exist in a lookaside store."""
    with pytest.raises(InvalidError, match="numbered from 1"):
        lookaside_url("https://s.example", "app", DIGEST, 0)


def test_a_lookaside_repository_cannot_climb_out_of_the_store() -> None:
    """A repository with ``..`` is not a repository name."""
    with pytest.raises(InvalidName):
        lookaside_url("https://s.example", "../etc", DIGEST, 1)


def test_an_encoded_answer_decodes_back_to_the_signatures() -> None:
    """encode_extension writes what decode_extension reads, content as bytes again."""
    items = [(signature_name(DIGEST, b"\x00one"), b"\x00one"), ("n2", b"two")]
    body = encode_extension(items)
    assert b" " not in body
    assert json.loads(body)["signatures"][0] == {
        "schemaVersion": 2,
        "type": "atomic",
        "name": items[0][0],
        "content": base64.b64encode(b"\x00one").decode(),
    }
    assert decode_extension(body) == [
        ExtensionSignature(name=items[0][0], content=b"\x00one"),
        ExtensionSignature(name="n2", content=b"two"),
    ]


def test_entries_of_another_type_or_schema_version_are_skipped() -> None:
    """Only atomic entries of schema version 2 are read; others are formats not known."""
    body = json.dumps(
        {
            "signatures": [
                {"schemaVersion": 2, "type": "cosign", "name": "a", "content": "!!"},
                {"schemaVersion": 3, "type": "atomic", "name": "b", "content": "eA=="},
                {"schemaVersion": 2, "type": "atomic", "name": "c", "content": "eA=="},
            ]
        }
    ).encode()
    assert decode_extension(body) == [ExtensionSignature(name="c", content=b"x")]


def test_null_signatures_mean_none() -> None:
    """A Go server writes an empty list as null."""
    assert decode_extension(b'{"signatures": null}') == []
    assert decode_extension(b'{"signatures": []}') == []


def _entry(**fields: object) -> bytes:
    entry: dict[str, object] = {
        "schemaVersion": 2,
        "type": "atomic",
        "name": "n",
        "content": "eA==",
    }
    entry.update(fields)
    return json.dumps({"signatures": [{k: v for k, v in entry.items() if v != "DROP"}]}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff", "not valid UTF-8"),
        (b"{", "not valid JSON"),
        (b"[]", "expected a JSON object, got array"),
        (b"{}", "signatures: missing"),
        (b'{"signatures": {}}', "signatures: expected an array, got object"),
        (b'{"signatures": [1]}', "signatures[0]: expected an object, got number"),
        (_entry(type="DROP"), "signatures[0].type: expected a string, missing"),
        (_entry(schemaVersion="2"), "signatures[0].schemaVersion: expected an integer"),
        (_entry(schemaVersion=True), "signatures[0].schemaVersion: expected an integer"),
        (_entry(name="DROP"), "signatures[0].name: expected a string, missing"),
        (_entry(content=5), "signatures[0].content: expected a string, got number"),
        (_entry(content="not base64!"), "signatures[0].content: not valid base64"),
        (_entry(content=""), "name and content must not be empty"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_malformed_answer_is_refused_naming_the_entry(body: bytes, message: str) -> None:
    """Malformed JSON, base64 or a missing field is SignatureInvalid, saying where."""
    with pytest.raises(SignatureInvalid) as caught:
        decode_extension(body)
    assert message in caught.value.message
