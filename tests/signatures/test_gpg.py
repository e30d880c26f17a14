"""GPG (atomic) signatures, checked by the real ``gpg`` against throwaway keys."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fixtures.signing import GPG_BINARY, GPGKey, co_sign

from ocimirror.core.digest import Digest
from ocimirror.errors import Conflict, InvalidError, SignatureInvalid
from ocimirror.signatures.gpg import GPGVerifier, gpg_available
from ocimirror.signatures.payload import (
    ATOMIC_TYPE,
    MAX_PAYLOAD_SIZE,
    identity_matches,
    make_payload,
    parse_payload,
)

DIGEST = Digest.of(b"image manifest")
PAYLOAD = make_payload("registry.example/app:1.0", DIGEST)


def create(*keys: bytes | str) -> GPGVerifier:
    """A verifier trusting ``keys``, built on a loop of its own."""
    return asyncio.run(GPGVerifier.create(list(keys), program=GPG_BINARY))


def verify(verifier: GPGVerifier, signature: bytes) -> tuple[bytes, str]:
    return asyncio.run(verifier.verify(signature))


@pytest.fixture
def verifier(gpg_key: GPGKey) -> Iterator[GPGVerifier]:
    """A verifier that trusts ``gpg_key`` only."""
    made = create(gpg_key.public_key_armored())
    yield made
    asyncio.run(made.aclose())


def test_a_good_signature_gives_the_payload_and_the_signer(
    verifier: GPGVerifier, gpg_key: GPGKey
) -> None:
    """The payload comes back byte for byte, with the signing key's fingerprint."""
    assert gpg_available(GPG_BINARY)
    payload, fingerprint = verify(verifier, gpg_key.sign(PAYLOAD))
    assert payload == PAYLOAD
    assert fingerprint == gpg_key.fingerprint == verifier.fingerprints[0]
    signed = parse_payload(payload)
    assert signed.type == ATOMIC_TYPE and signed.manifest_digest == DIGEST
    assert identity_matches(
        signed.docker_reference, repository="registry.example/app", digest=DIGEST, tags={"1.0"}
    )


def test_binary_keys_are_read_and_every_trusted_key_vouches(
    gpg_key: GPGKey, other_gpg_key: GPGKey
) -> None:
    """Keys may be binary bytes or armored text; the signer among them is the one named."""
    verifier = create(gpg_key.public_key_binary(), other_gpg_key.public_key_armored().encode())
    try:
        assert verifier.fingerprints == (gpg_key.fingerprint, other_gpg_key.fingerprint)
        assert verify(verifier, other_gpg_key.sign(b"x")) == (b"x", other_gpg_key.fingerprint)
        assert verify(verifier, gpg_key.sign(b"y")) == (b"y", gpg_key.fingerprint)
    finally:
        asyncio.run(verifier.aclose())


def test_a_signature_by_a_key_that_is_not_trusted_is_refused(
    verifier: GPGVerifier, other_gpg_key: GPGKey
) -> None:
    """The other key is not in the verifier's keyring: not trusted, and said so."""
    with pytest.raises(SignatureInvalid, match="which is not trusted"):
        verify(verifier, other_gpg_key.sign(PAYLOAD))


def test_a_tampered_signature_is_refused(verifier: GPGVerifier, gpg_key: GPGKey) -> None:
    """One bit flipped near the end of the message (in the signature): a bad signature.
    Uncompressed, so that the bit lands in the signature packet, never in a compressed
    stream (where it would break the message itself, sometimes)."""
    data = bytearray(gpg_key.sign(PAYLOAD, compress=False))
    data[-5] ^= 1
    with pytest.raises(SignatureInvalid, match="bad signature"):
        verify(verifier, bytes(data))


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"\x00" * 64, PAYLOAD])
def test_garbage_is_refused(verifier: GPGVerifier, garbage: bytes) -> None:
    """Bytes that are no signed message, the bare payload included."""
    with pytest.raises(SignatureInvalid, match="not a valid GPG-signed message"):
        verify(verifier, garbage)


def test_a_message_with_two_signatures_is_refused(gpg_key: GPGKey, other_gpg_key: GPGKey) -> None:
    """Exactly one signature is expected, even when both signers are trusted."""
    verifier = create(gpg_key.public_key_armored(), other_gpg_key.public_key_armored())
    try:
        with pytest.raises(SignatureInvalid, match="carries 2 signatures"):
            verify(verifier, co_sign(PAYLOAD, gpg_key, other_gpg_key))
    finally:
        asyncio.run(verifier.aclose())


def test_a_payload_over_the_limit_is_refused(verifier: GPGVerifier, gpg_key: GPGKey) -> None:
    """gpg stops writing at the limit, so a compressed bomb cannot fill the disk."""
    with pytest.raises(SignatureInvalid, match="too large"):
        verify(verifier, gpg_key.sign(b"{" * (MAX_PAYLOAD_SIZE + 1)))


def test_many_verifications_may_run_at_once(verifier: GPGVerifier, gpg_key: GPGKey) -> None:
    """Each call is its own gpg process over a keyring that is only read."""
    signatures = [gpg_key.sign(b"payload %d" % i) for i in range(16)]

    async def main() -> list[tuple[bytes, str]]:
        return await asyncio.gather(*(verifier.verify(s) for s in signatures))

    results = asyncio.run(main())
    assert results == [(b"payload %d" % i, gpg_key.fingerprint) for i in range(16)]


def test_a_closed_verifier_refuses_to_verify(gpg_key: GPGKey) -> None:
    """After aclose (or ``async with``) the private home is gone and so is the verifier."""

    async def main() -> None:
        async with await GPGVerifier.create([gpg_key.public_key_armored()]) as verifier:
            assert verifier.fingerprints == (gpg_key.fingerprint,)
        with pytest.raises(Conflict, match="closed"):
            await verifier.verify(gpg_key.sign(PAYLOAD))

    asyncio.run(main())


def test_a_key_gpg_cannot_read_is_refused_by_its_position(gpg_key: GPGKey) -> None:
    """InvalidError names which of the keys given is at fault."""
    with pytest.raises(InvalidError, match="public key 1 is not an OpenPGP public key"):
        create(gpg_key.public_key_armored(), "-----BEGIN PGP PUBLIC KEY BLOCK-----\nno\n")
    with pytest.raises(InvalidError, match="at least one public key"):
        create()


def test_without_the_gpg_program_verification_cannot_start() -> None:
    """A missing gpg is an InvalidError that says what to install."""
    with pytest.raises(InvalidError, match="needs the gpg program"):
        asyncio.run(GPGVerifier.create(["key"], program="/nonexistent/gpg"))
    assert gpg_available("/nonexistent/gpg") is False
