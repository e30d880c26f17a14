"""Digest: the validated ``algorithm:hex`` value type, and incremental hashing."""

from __future__ import annotations

import hashlib

import pytest

from ocimirror.core.digest import Digest, Hasher
from ocimirror.errors import InvalidDigest, InvalidError

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_SHA512 = "sha512:" + hashlib.sha512(b"").hexdigest()


@pytest.mark.parametrize("text", [EMPTY_SHA256, EMPTY_SHA512, "sha256:" + "0" * 64])
def test_a_valid_digest_parses_and_prints_back_unchanged(text: str) -> None:
    """A valid digest string parses, and str() gives back exactly the same string."""
    assert str(Digest.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "no ':'"),
        ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "no ':'"),
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm 'md5'"),
        ("SHA256:" + "0" * 64, "unsupported digest algorithm"),
        ("sha256:" + "A" * 64, "64 lowercase hex"),
        ("sha256:" + "0" * 63, "64 lowercase hex"),
        ("sha256:" + "0" * 65, "64 lowercase hex"),
        ("sha256:" + "g" * 64, "64 lowercase hex"),
        ("sha256:", "64 lowercase hex"),
        ("sha512:" + "0" * 64, "128 lowercase hex"),
        ("sha256:" + "0" * 64 + "\n", "64 lowercase hex"),
        (" sha256:" + "0" * 64, "unsupported digest algorithm"),
    ],
)
def test_a_malformed_digest_is_refused_with_a_message_saying_why(text: str, complaint: str) -> None:
    """Malformed digests raise InvalidDigest whose message names the problem."""
    with pytest.raises(InvalidDigest, match=complaint):
        Digest.parse(text)


def test_a_non_string_digest_is_refused_as_invalid_digest() -> None:
    """Parsing something that is not a string raises InvalidDigest, not TypeError."""
    with pytest.raises(InvalidDigest, match="must be a string"):
        Digest.parse(b"sha256:00")  # type: ignore[arg-type]


def test_invalid_digest_is_an_invalid_error_and_a_value_error() -> None:
    """InvalidDigest can be caught as InvalidError or ValueError."""
    assert issubclass(InvalidDigest, InvalidError)
    assert issubclass(InvalidDigest, ValueError)


def test_parse_returns_a_digest_given_a_digest() -> None:
    """Parsing a Digest returns it unchanged, so callers can accept either form."""
    digest = Digest.parse(EMPTY_SHA256)
    assert Digest.parse(digest) is digest


def test_the_constructor_validates_like_parse() -> None:
    """A Digest cannot be built with bad parts even without parse()."""
    with pytest.raises(InvalidDigest):
        Digest("sha256", "xyz")
    with pytest.raises(InvalidDigest):
        Digest("crc32", "0" * 8)


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("sha256", EMPTY_SHA256), ("sha512", EMPTY_SHA512)]
)
def test_of_hashes_bytes_with_the_named_algorithm(algorithm: str, expected: str) -> None:
    """Digest.of gives the well-known digest of the empty string for each algorithm."""
    assert str(Digest.of(b"", algorithm)) == expected


def test_parts_are_exposed_as_algorithm_hex_encoded_and_short() -> None:
    """A digest exposes its algorithm, hex (also called encoded) and a 12-character short form."""
    digest = Digest.parse(EMPTY_SHA256)
    assert digest.algorithm == "sha256"
    assert digest.hex == digest.encoded == EMPTY_SHA256.removeprefix("sha256:")
    assert digest.short == "e3b0c44298fc"


def test_digests_compare_by_value_hash_and_sort() -> None:
    """Equal digests are equal and hash alike; digests sort by algorithm then hex."""
    low, high = Digest.parse("sha256:" + "0" * 64), Digest.parse("sha256:" + "f" * 64)
    assert Digest.parse("sha256:" + "0" * 64) == low
    assert len({low, Digest.parse(str(low))}) == 1
    assert sorted([high, low]) == [low, high]


def test_digests_are_immutable() -> None:
    """Assigning to a digest's fields fails."""
    digest = Digest.parse(EMPTY_SHA256)
    with pytest.raises(AttributeError):
        digest.hex = "0" * 64  # type: ignore[misc]


def test_hasher_fed_in_pieces_gives_the_digest_of_the_whole_and_counts_bytes() -> None:
    """Hashing in chunks equals hashing at once, and size counts every byte fed."""
    hasher = Hasher()
    for chunk in (b"hello ", bytearray(b"wor"), memoryview(b"ld")):
        hasher.update(chunk)
    assert hasher.digest() == Digest.of(b"hello world")
    assert hasher.size == 11


def test_a_hasher_copy_continues_independently() -> None:
    """A copy resumes from the same state without affecting the original."""
    hasher = Hasher("sha512")
    hasher.update(b"abc")
    copy = hasher.copy()
    copy.update(b"def")
    assert hasher.digest() == Digest.of(b"abc", "sha512")
    assert copy.digest() == Digest.of(b"abcdef", "sha512")
    assert (hasher.size, copy.size) == (3, 6)


def test_a_hasher_refuses_an_unknown_algorithm() -> None:
    """Hasher('md5') raises InvalidDigest."""
    with pytest.raises(InvalidDigest, match="unsupported"):
        Hasher("md5")
