"""cosign: companion tags, ``.sig`` manifests and ECDSA verification."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fixtures.signing import CosignKey, cosign_manifest

from ocimirror.core.digest import Digest
from ocimirror.core.manifest import ImageManifest, parse_manifest
from ocimirror.errors import InvalidError, SignatureInvalid
from ocimirror.signatures.cosign import (
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    CosignVerifier,
    companion_tag,
    parse_companion_tag,
    signature_layers,
    verify_signature_manifest,
)
from ocimirror.signatures.payload import ATOMIC_TYPE, COSIGN_TYPE, make_payload

IMAGE = Digest.of(b"image manifest")
OTHER_IMAGE = Digest.of(b"another image manifest")
REPOSITORY = "registry.example/team/app"


# -- companion tags ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".sig", ".att", ".sbom"])
def test_a_companion_tag_is_the_digest_with_a_dash_and_reads_back(suffix: str) -> None:
    """``sha256-<hex><suffix>``, and parse_companion_tag gives the digest and suffix back."""
    tag = companion_tag(str(IMAGE), suffix)
    assert tag == f"sha256-{IMAGE.hex}{suffix}"
    assert parse_companion_tag(tag) == (IMAGE, suffix)


def test_a_companion_tag_refuses_an_unknown_suffix() -> None:
    """Only the suffixes cosign uses."""
    with pytest.raises(InvalidError, match="suffix"):
        companion_tag(IMAGE, ".exe")


def test_a_sha512_companion_tag_is_cut_to_the_referrers_schema_length() -> None:
    """The referrers tag schema keeps 64 hex characters, so the tag stays a valid tag."""
    digest = Digest.of(b"x", "sha512")
    assert companion_tag(digest, ".sig") == f"sha512-{digest.hex[:64]}.sig"


@pytest.mark.parametrize(
    "tag",
    [
        "latest",
        f"sha256-{IMAGE.hex}.exe",
        f"sha256-{IMAGE.hex[:-1]}.sig",
        f"sha256-{IMAGE.hex.upper()}.sig",
        f"sha256:{IMAGE.hex}",
        f"sha512-{IMAGE.hex}.sig",
        f"sha256-{IMAGE.hex}.sig.sig",
    ],
)
def test_other_tags_are_not_companion_tags(tag: str) -> None:
    """Anything but ``sha256-<64 hex>`` with a known suffix is an ordinary tag."""
    assert parse_companion_tag(tag) is None


# -- the .sig manifest ------------------------------------------------------------------------


def test_the_signature_layers_are_those_with_the_annotation(cosign_key: CosignKey) -> None:
    """Each signed layer comes with its base64 signature; others are left out."""
    payload = cosign_key.payload(IMAGE, REPOSITORY)
    raw, _ = cosign_key.signature_manifest(IMAGE, REPOSITORY)
    manifest = parse_manifest(raw)
    assert isinstance(manifest, ImageManifest)
    [(layer, signature)] = signature_layers(manifest)
    assert layer.media_type == SIMPLESIGNING_MEDIA_TYPE
    assert layer.digest == Digest.of(payload)
    assert signature == layer.annotations[SIGNATURE_ANNOTATION]
    assert base64.b64decode(signature, validate=True)


def test_an_index_has_no_signature_layers() -> None:
    """Only an image manifest can be a ``.sig`` manifest."""
    index = parse_manifest(b'{"schemaVersion": 2, "manifests": []}')
    assert signature_layers(index) == []


# -- keys -------------------------------------------------------------------------------------


def test_a_verifier_names_each_key_by_its_id(cosign_key: CosignKey) -> None:
    """16 hex characters of the public key's sha256, the same for the same key."""
    verifier = CosignVerifier([cosign_key.public_pem(), cosign_key.public_pem().decode()])
    [key_id] = verifier.key_ids
    assert len(key_id) == 16 and int(key_id, 16) >= 0
    assert CosignVerifier([cosign_key.public_pem()]).key_ids == (key_id,)


def test_a_signature_verifies_with_the_key_that_made_it(
    cosign_key: CosignKey, other_cosign_key: CosignKey
) -> None:
    """The id returned is the signing key's, whichever position it has."""
    verifier = CosignVerifier([other_cosign_key.public_pem(), cosign_key.public_pem()])
    signature = cosign_key.sign(b"payload")
    assert verifier.verify(b"payload", signature) == verifier.key_ids[1]


def test_a_changed_payload_does_not_verify(cosign_key: CosignKey) -> None:
    """One byte changed and the signature no longer holds."""
    verifier = CosignVerifier([cosign_key.public_pem()])
    with pytest.raises(SignatureInvalid, match="does not verify against any trusted"):
        verifier.verify(b"payloaD", cosign_key.sign(b"payload"))


def test_a_signature_by_another_key_does_not_verify(
    cosign_key: CosignKey, other_cosign_key: CosignKey
) -> None:
    """A key that is not trusted verifies nothing."""
    verifier = CosignVerifier([cosign_key.public_pem()])
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verifier.verify(b"payload", other_cosign_key.sign(b"payload"))


@pytest.mark.parametrize("signature", ["not base64!", "", "AAAA"])
def test_a_signature_that_is_no_signature_does_not_verify(
    cosign_key: CosignKey, signature: str
) -> None:
    """Bad base64 or bytes that are no DER signature: SignatureInvalid, not a crash."""
    verifier = CosignVerifier([cosign_key.public_pem()])
    with pytest.raises(SignatureInvalid):
        verifier.verify(b"payload", signature)


def test_keys_that_are_not_ecdsa_pem_public_keys_are_refused(cosign_key: CosignKey) -> None:
    """Garbage and RSA keys raise InvalidError naming the key's position."""
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InvalidError, match="key 1 is not a PEM public key"):
        CosignVerifier([cosign_key.public_pem(), b"garbage"])
    with pytest.raises(InvalidError, match=r"key 0 is a .*RSA.*only ECDSA"):
        CosignVerifier([rsa_pem])
    with pytest.raises(InvalidError, match="at least one"):
        CosignVerifier([])


# -- verify_signature_manifest ----------------------------------------------------------------


def check(
    raw: bytes,
    blobs: dict[str, bytes],
    key: CosignKey,
    *,
    digest: Digest = IMAGE,
    repository: str = REPOSITORY,
    tags: tuple[str, ...] = (),
) -> str:
    """verify_signature_manifest over a manifest and its blobs, trusting ``key``."""
    return verify_signature_manifest(
        parse_manifest(raw),
        blobs,
        digest=digest,
        verifier=CosignVerifier([key.public_pem()]),
        repository=repository,
        tags=tags,
    )


def test_a_signature_manifest_vouches_for_its_image(cosign_key: CosignKey) -> None:
    """Layer bytes, signature, type, digest and identity all hold: the key id is returned."""
    raw, blobs = cosign_key.signature_manifest(IMAGE, f"{REPOSITORY}:1.0")
    assert (
        check(raw, blobs, cosign_key, tags=("1.0",))
        == CosignVerifier([cosign_key.public_pem()]).key_ids[0]
    )


def test_a_signature_manifest_for_another_digest_is_refused(cosign_key: CosignKey) -> None:
    """The payload names the manifest it signs; another image's signature does not count."""
    raw, blobs = cosign_key.signature_manifest(OTHER_IMAGE, REPOSITORY)
    with pytest.raises(SignatureInvalid, match=f"signs {OTHER_IMAGE}, not {IMAGE}"):
        check(raw, blobs, cosign_key)


def test_a_signature_manifest_signed_by_another_key_is_refused(
    cosign_key: CosignKey, other_cosign_key: CosignKey
) -> None:
    """Only trusted keys vouch."""
    raw, blobs = other_cosign_key.signature_manifest(IMAGE, REPOSITORY)
    with pytest.raises(SignatureInvalid, match="does not verify against any trusted"):
        check(raw, blobs, cosign_key)


def test_a_changed_payload_with_the_old_signature_is_refused(cosign_key: CosignKey) -> None:
    """A layer whose payload was swapped (digest and all) keeps a signature that no longer fits."""
    honest = cosign_key.payload(OTHER_IMAGE, REPOSITORY)
    forged = cosign_key.payload(IMAGE, REPOSITORY)
    raw, blobs = cosign_manifest([(forged, cosign_key.sign(honest))])
    with pytest.raises(SignatureInvalid, match="does not verify"):
        check(raw, blobs, cosign_key)


def test_layer_bytes_that_do_not_hash_to_the_layer_are_refused(cosign_key: CosignKey) -> None:
    """The bytes given must be the layer the manifest names."""
    raw, blobs = cosign_key.signature_manifest(IMAGE, REPOSITORY)
    layer = next(d for d, data in blobs.items() if b"critical" in data)
    with pytest.raises(SignatureInvalid, match="are not that layer"):
        check(raw, {**blobs, layer: blobs[layer] + b" "}, cosign_key)
    with pytest.raises(SignatureInvalid, match="were not given"):
        check(raw, {}, cosign_key)


@pytest.mark.parametrize(
    ("signed", "tags"),
    [
        ("registry.example/team/other", ()),
        ("elsewhere.example/team/app", ()),
        ("registry.example/team/app:2.0", ("1.0",)),
        (f"registry.example/team/app@{OTHER_IMAGE}", ()),
    ],
)
def test_a_signature_for_another_identity_is_refused(
    cosign_key: CosignKey, signed: str, tags: tuple[str, ...]
) -> None:
    """The claimed identity must name this repository (and tag or digest, if it has one)."""
    raw, blobs = cosign_key.signature_manifest(IMAGE, signed)
    with pytest.raises(SignatureInvalid, match="claims identity"):
        check(raw, blobs, cosign_key, tags=tags)


def test_an_atomic_payload_is_not_a_cosign_signature(cosign_key: CosignKey) -> None:
    """``critical.type`` must be cosign's."""
    payload = make_payload(REPOSITORY, IMAGE, type=ATOMIC_TYPE)
    raw, blobs = cosign_manifest([(payload, cosign_key.sign(payload))])
    with pytest.raises(SignatureInvalid, match=f"not '{COSIGN_TYPE}'"):
        check(raw, blobs, cosign_key)


def test_a_manifest_without_signature_layers_is_refused(cosign_key: CosignKey) -> None:
    """No annotated layer, nothing that could vouch."""
    raw, blobs = cosign_manifest([])
    with pytest.raises(SignatureInvalid, match="has no layer with a"):
        check(raw, blobs, cosign_key)


def test_one_good_layer_among_bad_ones_vouches(
    cosign_key: CosignKey, other_cosign_key: CosignKey
) -> None:
    """Signatures accumulate in one manifest; any layer that passes every check is enough."""
    good = cosign_key.payload(IMAGE, REPOSITORY)
    stranger = other_cosign_key.payload(IMAGE, REPOSITORY, note="x")
    raw, blobs = cosign_manifest(
        [(stranger, other_cosign_key.sign(stranger)), (good, cosign_key.sign(good))]
    )
    assert check(raw, blobs, cosign_key) == CosignVerifier([cosign_key.public_pem()]).key_ids[0]


def test_when_every_layer_fails_each_failure_is_in_the_detail(
    cosign_key: CosignKey, other_cosign_key: CosignKey
) -> None:
    """The message gives the last failure; ``detail`` lists every layer's."""
    first = cosign_key.payload(OTHER_IMAGE, REPOSITORY)
    second = other_cosign_key.payload(IMAGE, REPOSITORY)
    raw, blobs = cosign_manifest(
        [(first, cosign_key.sign(first)), (second, other_cosign_key.sign(second))]
    )
    with pytest.raises(SignatureInvalid, match="does not verify") as caught:
        check(raw, blobs, cosign_key)
    assert len(caught.value.detail) == 2
    assert f"signs {OTHER_IMAGE}" in caught.value.detail[0]
