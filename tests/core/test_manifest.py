"""parse_manifest and the manifest types, on real-world-shaped samples."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from ocimirror.core.descriptor import Descriptor, Platform
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import (
    MAX_MANIFEST_SIZE,
    ImageIndex,
    ImageManifest,
    Manifest,
    Schema1Manifest,
    parse_manifest,
)
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import DigestMismatch, InvalidManifest, ManifestTooLarge

M = MediaType


def sha(n: int) -> str:
    """A distinct, valid sha256 digest string for test data."""
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


# Docker schema2, exactly as Docker Hub serves it (three-space indent, no trailing newline).
DOCKER_SCHEMA2 = b"""{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1471,
      "digest": "sha256:05455a08881ea9cf0e752bc48e61bbd71a34c029bb13df01e40e3e70e0d007bd"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 3408729,
         "digest": "sha256:4abcf20661432fb2d719aaf90656f55c287f8ca915dc1c92ec14ff61e67fbaf8"
      },
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 112,
         "digest": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
      }
   ]
}"""

DOCKER_MANIFEST_LIST = json.dumps(
    {
        "manifests": [
            {
                "digest": sha(1),
                "mediaType": M.DOCKER_MANIFEST,
                "platform": {"architecture": "amd64", "os": "linux"},
                "size": 528,
            },
            {
                "digest": sha(2),
                "mediaType": M.DOCKER_MANIFEST,
                "platform": {"architecture": "arm", "os": "linux", "variant": "v6"},
                "size": 528,
            },
            {
                "digest": sha(3),
                "mediaType": M.DOCKER_MANIFEST,
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
                "size": 528,
            },
            {
                "digest": sha(4),
                "mediaType": M.DOCKER_MANIFEST,
                "platform": {
                    "architecture": "amd64",
                    "os": "windows",
                    "os.version": "10.0.17763.5696",
                },
                "size": 1125,
            },
        ],
        "mediaType": M.DOCKER_MANIFEST_LIST,
        "schemaVersion": 2,
    },
    indent=3,
).encode()

# An OCI layout-style index whose entry is itself an index (buildx / oras output).
OCI_NESTED_INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": M.OCI_INDEX,
        "manifests": [
            {
                "mediaType": M.OCI_INDEX,
                "digest": sha(10),
                "size": 856,
                "annotations": {"org.opencontainers.image.ref.name": "3.19"},
            },
            {
                "mediaType": M.OCI_MANIFEST,
                "digest": sha(11),
                "size": 566,
                "annotations": {
                    "vnd.docker.reference.digest": sha(10),
                    "vnd.docker.reference.type": "attestation-manifest",
                },
                "platform": {"architecture": "unknown", "os": "unknown"},
            },
        ],
        "annotations": {"org.opencontainers.image.created": "2024-01-27T00:00:00Z"},
    }
).encode()

EMPTY_CONFIG = {
    "mediaType": M.OCI_EMPTY,
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
    "data": "e30=",
}

# An OCI 1.1 artifact (an SBOM) attached to an image through `subject`.
OCI_ARTIFACT = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": M.OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": EMPTY_CONFIG,
        "layers": [
            {
                "mediaType": "application/spdx+json",
                "digest": sha(20),
                "size": 14729,
                "annotations": {"org.opencontainers.image.title": "sbom.spdx.json"},
            }
        ],
        "subject": {"mediaType": M.OCI_MANIFEST, "digest": sha(21), "size": 1040},
        "annotations": {"org.opencontainers.image.created": "2024-03-01T12:00:00Z"},
    }
).encode()

# A cosign signature: no artifactType, simple-signing layer, no mediaType field at all.
COSIGN_SIGNATURE = json.dumps(
    {
        "schemaVersion": 2,
        "config": {"mediaType": M.OCI_CONFIG, "size": 233, "digest": sha(30)},
        "layers": [
            {
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "size": 250,
                "digest": sha(31),
                "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQDx..."},
            }
        ],
    }
).encode()

# Artifacts pushed by older tools: an opaque config, and no layers at all.
OCTET_STREAM_CONFIG = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": M.OCI_MANIFEST,
        "config": {"mediaType": "application/octet-stream", "size": 0, "digest": sha(40)},
        "layers": [],
    }
).encode()

# Docker schema1, signed, as old registries served it.
SCHEMA1_SIGNED = json.dumps(
    {
        "schemaVersion": 1,
        "name": "library/hello-world",
        "tag": "latest",
        "architecture": "amd64",
        "fsLayers": [
            {"blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"},
            {"blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"},
            {"blobSum": sha(50)},
        ],
        "history": [{"v1Compatibility": '{"id":"abc","created":"2016-01-01T00:00:00Z"}'}],
        "signatures": [
            {
                "header": {
                    "jwk": {"crv": "P-256", "kid": "XXXX:YYYY", "kty": "EC", "x": "x", "y": "y"},
                    "alg": "ES256",
                },
                "signature": "c2lnbmF0dXJl",
                "protected": "eyJmb3JtYXRMZW5ndGgiOjUwOCwiZm9ybWF0VGFpbCI6IkNuMCJ9",
            }
        ],
    },
    indent=3,
).encode()


def manifest_bytes(**fields: Any) -> bytes:
    """A small valid OCI image manifest with fields replaced (Ellipsis removes one)."""
    obj: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": M.OCI_MANIFEST,
        "config": {"mediaType": M.OCI_CONFIG, "digest": sha(60), "size": 10},
        "layers": [
            {"mediaType": M.OCI_LAYER_GZIP, "digest": sha(61), "size": 20},
            {"mediaType": M.OCI_LAYER_GZIP, "digest": sha(62), "size": 30},
        ],
    }
    obj.update(fields)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


def index_bytes(**fields: Any) -> bytes:
    """A small valid OCI index with fields replaced (Ellipsis removes one)."""
    obj: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": M.OCI_INDEX,
        "manifests": [{"mediaType": M.OCI_MANIFEST, "digest": sha(70), "size": 100}],
    }
    obj.update(fields)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


# Samples ------------------------------------------------------------------------------------


def test_a_docker_schema2_manifest_parses_into_config_and_layers() -> None:
    """A Docker Hub manifest gives an ImageManifest with its config and layers in order."""
    manifest = parse_manifest(DOCKER_SCHEMA2, M.DOCKER_MANIFEST)
    assert isinstance(manifest, ImageManifest)
    assert manifest.media_type == M.DOCKER_MANIFEST
    assert manifest.config == Descriptor(
        M.DOCKER_CONFIG,
        "sha256:05455a08881ea9cf0e752bc48e61bbd71a34c029bb13df01e40e3e70e0d007bd",
        1471,
    )
    assert [layer.size for layer in manifest.layers] == [3408729, 112]
    assert manifest.blobs() == (manifest.config, *manifest.layers)
    assert manifest.children() == ()
    assert manifest.references() == manifest.blobs()
    assert not manifest.is_index and not manifest.is_schema1
    assert manifest.subject is None and manifest.artifact_type is None
    assert manifest.annotations == {}


@pytest.mark.parametrize(
    "raw",
    [DOCKER_SCHEMA2, DOCKER_MANIFEST_LIST, OCI_NESTED_INDEX, OCI_ARTIFACT, SCHEMA1_SIGNED],
)
def test_a_manifest_keeps_its_exact_bytes_and_their_sha256(raw: bytes) -> None:
    """raw is the input byte for byte, digest is its sha256 and size its length."""
    manifest = parse_manifest(raw)
    assert manifest.raw == raw
    assert manifest.digest == Digest("sha256", hashlib.sha256(raw).hexdigest())
    assert manifest.size == len(raw)
    assert manifest.descriptor == Descriptor(manifest.media_type, manifest.digest, len(raw))


def test_a_docker_manifest_list_lists_children_with_their_platforms() -> None:
    """A manifest list gives an ImageIndex whose children carry platforms, and no blobs."""
    index = parse_manifest(DOCKER_MANIFEST_LIST)
    assert isinstance(index, ImageIndex)
    assert index.is_index
    assert index.media_type == M.DOCKER_MANIFEST_LIST
    assert [str(d.platform) for d in index.manifests] == [
        "linux/amd64",
        "linux/arm/v6",
        "linux/arm64/v8",
        "windows/amd64",
    ]
    assert index.manifests[3].platform == Platform("amd64", "windows", os_version="10.0.17763.5696")
    assert index.blobs() == ()
    assert index.children() == index.references() == index.manifests


def test_an_oci_index_may_list_another_index_and_attestations() -> None:
    """Nested indexes and 'unknown/unknown' attestation entries are ordinary children."""
    index = parse_manifest(OCI_NESTED_INDEX)
    assert isinstance(index, ImageIndex)
    nested, attestation = index.children()
    assert M.is_index(nested.media_type)
    assert nested.annotations["org.opencontainers.image.ref.name"] == "3.19"
    assert attestation.platform == Platform("unknown", "unknown")
    assert index.annotations == {"org.opencontainers.image.created": "2024-01-27T00:00:00Z"}


def test_an_oci_artifact_has_artifact_type_subject_and_an_empty_config() -> None:
    """An OCI 1.1 artifact keeps artifactType, subject and annotations; the empty config is a
    blob but the subject is not a reference."""
    artifact = parse_manifest(OCI_ARTIFACT)
    assert isinstance(artifact, ImageManifest)
    assert artifact.artifact_type == "application/spdx+json"
    assert artifact.config.media_type == M.OCI_EMPTY
    assert artifact.subject == Descriptor(M.OCI_MANIFEST, sha(21), 1040)
    assert artifact.subject not in artifact.references()
    assert [d.media_type for d in artifact.blobs()] == [M.OCI_EMPTY, "application/spdx+json"]
    referrer = artifact.referrer_descriptor()
    assert referrer.artifact_type == "application/spdx+json"
    assert referrer.annotations == {"org.opencontainers.image.created": "2024-03-01T12:00:00Z"}
    assert (referrer.digest, referrer.size) == (artifact.digest, artifact.size)


def test_a_referrer_without_artifact_type_is_typed_by_its_config() -> None:
    """The referrers API falls back to the config's media type (a cosign signature here)."""
    signature = parse_manifest(COSIGN_SIGNATURE)
    assert signature.media_type == M.OCI_MANIFEST  # guessed: there is a config
    assert signature.artifact_type is None
    assert signature.referrer_descriptor().artifact_type == M.OCI_CONFIG


def test_an_opaque_config_and_an_empty_layer_list_are_accepted() -> None:
    """application/octet-stream configs and artifacts without layers parse."""
    manifest = parse_manifest(OCTET_STREAM_CONFIG)
    assert isinstance(manifest, ImageManifest)
    assert manifest.config.media_type == "application/octet-stream"
    assert manifest.layers == ()
    assert manifest.blobs() == (manifest.config,)


def test_an_image_manifest_without_layers_field_has_no_layers() -> None:
    """A missing layers field reads as an empty list rather than an error."""
    manifest = parse_manifest(manifest_bytes(layers=...))
    assert isinstance(manifest, ImageManifest)
    assert manifest.layers == ()


def test_a_signed_schema1_manifest_is_recognised_but_exposes_no_blobs() -> None:
    """Schema1 parses to Schema1Manifest with name, tag and fsLayers (repeats kept), no blobs."""
    manifest = parse_manifest(SCHEMA1_SIGNED)
    assert isinstance(manifest, Schema1Manifest)
    assert manifest.media_type == M.DOCKER_SCHEMA1_SIGNED
    assert manifest.is_schema1
    assert (manifest.name, manifest.tag) == ("library/hello-world", "latest")
    assert len(manifest.fs_layers) == 3
    assert manifest.fs_layers[0] == manifest.fs_layers[1]
    assert manifest.blobs() == manifest.children() == manifest.references() == ()


def test_an_unsigned_schema1_manifest_is_told_apart_from_a_signed_one() -> None:
    """Without 'signatures', schema1 is the plain v1+json type."""
    obj = json.loads(SCHEMA1_SIGNED)
    del obj["signatures"]
    manifest = parse_manifest(json.dumps(obj).encode())
    assert manifest.media_type == M.DOCKER_SCHEMA1


def test_unknown_fields_are_ignored() -> None:
    """Vendor fields at the top level and in descriptors do not stop parsing."""
    raw = manifest_bytes(**{"x-vendor": {"a": [1, None]}, "config": {**EMPTY_CONFIG, "x": 1}})
    assert isinstance(parse_manifest(raw), ImageManifest)


def test_parse_accepts_bytearray_and_memoryview() -> None:
    """Bytes-like input is accepted and stored as bytes."""
    raw = manifest_bytes()
    assert parse_manifest(bytearray(raw)).raw == raw  # type: ignore[arg-type]
    assert parse_manifest(memoryview(raw)).raw == raw  # type: ignore[arg-type]


# Media type ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "given", "expected"),
    [
        (manifest_bytes(), None, M.OCI_MANIFEST),
        (manifest_bytes(mediaType=...), None, M.OCI_MANIFEST),
        (manifest_bytes(mediaType=...), M.DOCKER_MANIFEST, M.DOCKER_MANIFEST),
        (manifest_bytes(mediaType=...), f"{M.DOCKER_MANIFEST}; charset=utf-8", M.DOCKER_MANIFEST),
        (manifest_bytes(), "application/json", M.OCI_MANIFEST),
        (manifest_bytes(), "text/plain; charset=utf-8", M.OCI_MANIFEST),
        (manifest_bytes(), "", M.OCI_MANIFEST),
        (manifest_bytes(), M.OCI_MANIFEST.upper(), M.OCI_MANIFEST),
        (manifest_bytes(mediaType=M.OCI_MANIFEST + "; charset=utf-8"), None, M.OCI_MANIFEST),
        (index_bytes(mediaType=...), None, M.OCI_INDEX),
        (index_bytes(mediaType=...), M.DOCKER_MANIFEST_LIST, M.DOCKER_MANIFEST_LIST),
        (index_bytes(mediaType=M.DOCKER_MANIFEST_LIST), None, M.DOCKER_MANIFEST_LIST),
        (SCHEMA1_SIGNED, M.DOCKER_SCHEMA1_SIGNED, M.DOCKER_SCHEMA1_SIGNED),
        (SCHEMA1_SIGNED, "application/json", M.DOCKER_SCHEMA1_SIGNED),
    ],
)
def test_the_media_type_comes_from_the_hint_else_the_field_else_the_content(
    raw: bytes, given: str | None, expected: str
) -> None:
    """A manifest-type hint wins, then the mediaType field, then a guess from the content;
    parameters and case are dropped and non-manifest hints are ignored."""
    assert parse_manifest(raw, given).media_type == expected


@pytest.mark.parametrize(
    ("raw", "given"),
    [
        (manifest_bytes(), M.DOCKER_MANIFEST),
        (manifest_bytes(), M.OCI_INDEX),
        (index_bytes(), M.DOCKER_MANIFEST_LIST),
    ],
)
def test_a_hint_that_contradicts_the_mediatype_field_is_refused(raw: bytes, given: str) -> None:
    """The OCI spec requires the Content-Type and the mediaType field to agree."""
    with pytest.raises(InvalidManifest, match="does not match"):
        parse_manifest(raw, given)


def test_a_hint_that_contradicts_the_content_is_refused() -> None:
    """An image manifest sent as an index (no mediaType field) lacks 'manifests'."""
    with pytest.raises(InvalidManifest, match=r"^manifests: missing"):
        parse_manifest(manifest_bytes(mediaType=...), M.OCI_INDEX)


# Malformed input ----------------------------------------------------------------------------

MALFORMED: list[tuple[bytes, str]] = [
    (b"", r"not valid JSON"),
    (b"\xff\xfe{}", r"not valid UTF-8 \(byte 0\)"),
    (b"{", r"not valid JSON"),
    (b'{"schemaVersion": 2,}', r"not valid JSON"),
    (b'{"schemaVersion": NaN}', r"not valid JSON: NaN"),
    (b"[" * 100_000 + b"]" * 100_000, r"not valid JSON"),
    (b'{"schemaVersion": 1' + b"0" * 5000 + b"}", r"not valid JSON"),
    (b"[]", r"must be a JSON object, got array"),
    (b'"manifest"', r"must be a JSON object, got string"),
    (b"null", r"must be a JSON object, got null"),
    (manifest_bytes(schemaVersion=...), r"^schemaVersion: expected 2 .*missing"),
    (manifest_bytes(schemaVersion=3), r"^schemaVersion: expected 2 .*got 3"),
    (manifest_bytes(schemaVersion="2"), r"^schemaVersion: .*got '2'"),
    (manifest_bytes(schemaVersion=2.0), r"^schemaVersion: .*got 2.0"),
    (manifest_bytes(schemaVersion=True), r"^schemaVersion: .*got True"),
    (manifest_bytes(schemaVersion=1), r"schemaVersion 1 does not fit"),
    (manifest_bytes(mediaType=7), r"^mediaType: expected a string, got number"),
    (
        manifest_bytes(mediaType="application/vnd.oci.artifact.manifest.v1+json"),
        r"unsupported manifest media type 'application/vnd.oci.artifact.manifest.v1\+json'",
    ),
    (manifest_bytes(mediaType=M.OCI_CONFIG), r"unsupported manifest media type"),
    (b'{"schemaVersion": 2}', r"cannot tell the manifest's type"),
    (manifest_bytes(config=...), r"^config: missing"),
    (manifest_bytes(config="sha256:x"), r"^config: expected a descriptor object"),
    (
        manifest_bytes(config={"mediaType": M.OCI_CONFIG, "digest": "sha256:0", "size": 1}),
        r"^config\.digest: sha256 digest must be 64",
    ),
    (manifest_bytes(layers={}), r"^layers: expected an array of descriptors, got object"),
    (
        manifest_bytes(layers=[{"mediaType": M.OCI_LAYER, "digest": sha(1), "size": 1}, None]),
        r"^layers\[1\]: expected a descriptor object, got null",
    ),
    (
        manifest_bytes(layers=[{"mediaType": M.OCI_LAYER, "digest": sha(1), "size": -5}]),
        r"^layers\[0\]\.size: ",
    ),
    (index_bytes(manifests=...), r"^manifests: missing"),
    (index_bytes(manifests="x"), r"^manifests: expected an array"),
    (
        index_bytes(
            manifests=[
                {"mediaType": M.OCI_MANIFEST, "digest": sha(1), "size": 1, "platform": {"os": 1}}
            ]
        ),
        r"^manifests\[0\]\.platform\.architecture: ",
    ),
    (manifest_bytes(subject={"mediaType": M.OCI_MANIFEST}), r"^subject\.digest: missing"),
    (manifest_bytes(subject=[]), r"^subject: expected a descriptor object"),
    (manifest_bytes(annotations={"a": 1}), r"^annotations\['a'\]: expected a string"),
    (manifest_bytes(annotations="a=b"), r"^annotations: expected an object"),
    (manifest_bytes(artifactType=1), r"^artifactType: expected a string"),
    (b'{"schemaVersion": 1, "name": "a", "tag": "b"}', r"^fsLayers: expected an array, missing"),
    (b'{"schemaVersion": 1, "fsLayers": [7]}', r"^fsLayers\[0\]: expected an object"),
    (b'{"schemaVersion": 1, "fsLayers": [{}]}', r"^fsLayers\[0\]\.blobSum: missing"),
    (
        b'{"schemaVersion": 1, "fsLayers": [{"blobSum": "sha256:abc"}]}',
        r"^fsLayers\[0\]\.blobSum: sha256 digest must be 64",
    ),
    (b'{"schemaVersion": 1, "fsLayers": [], "name": 5}', r"^name: expected a string"),
]


@pytest.mark.parametrize(("raw", "complaint"), MALFORMED)
def test_malformed_manifests_raise_invalid_manifest_naming_the_problem(
    raw: bytes, complaint: str
) -> None:
    """Every malformed manifest raises InvalidManifest whose message locates the fault."""
    with pytest.raises(InvalidManifest, match=complaint):
        parse_manifest(raw)


def test_a_manifest_over_the_size_cap_is_refused_before_it_is_parsed() -> None:
    """One byte over MAX_MANIFEST_SIZE raises ManifestTooLarge, an InvalidManifest."""
    with pytest.raises(ManifestTooLarge, match="the limit is 4194304 bytes"):
        parse_manifest(b" " * (MAX_MANIFEST_SIZE + 1))
    assert issubclass(ManifestTooLarge, InvalidManifest)


def test_a_manifest_of_exactly_the_size_cap_is_accepted() -> None:
    """The cap is inclusive: a valid manifest padded to exactly 4 MiB parses."""
    raw = manifest_bytes()
    raw += b" " * (MAX_MANIFEST_SIZE - len(raw))
    assert parse_manifest(raw).size == MAX_MANIFEST_SIZE


# Expected digest ----------------------------------------------------------------------------


def test_an_expected_digest_that_matches_is_accepted() -> None:
    """Passing the right digest as expected parses normally."""
    expected = Digest.of(DOCKER_SCHEMA2)
    assert parse_manifest(DOCKER_SCHEMA2, expected=expected).digest == expected


def test_an_expected_digest_that_differs_raises_digest_mismatch() -> None:
    """Bytes that do not hash to the expected digest raise DigestMismatch naming both."""
    wrong = Digest.parse(sha(99))
    with pytest.raises(DigestMismatch, match=f"expected {wrong}"):
        parse_manifest(DOCKER_SCHEMA2, expected=wrong)


def test_the_digest_check_comes_before_parsing() -> None:
    """Corrupted bytes are reported as a digest mismatch, not as bad JSON."""
    with pytest.raises(DigestMismatch):
        parse_manifest(b"not json", expected=Digest.of(b"something else"))


def test_an_expected_sha512_digest_makes_the_manifest_digest_sha512() -> None:
    """The manifest's digest uses the expected digest's algorithm."""
    expected = Digest.of(OCI_ARTIFACT, "sha512")
    assert parse_manifest(OCI_ARTIFACT, expected=expected).digest == expected


# Value behaviour ----------------------------------------------------------------------------


def test_repr_does_not_dump_the_raw_bytes() -> None:
    """A manifest's repr names its type and digest but leaves the bytes out."""
    manifest = parse_manifest(DOCKER_SCHEMA2)
    text = repr(manifest)
    assert text.startswith("ImageManifest(")
    assert str(manifest.digest.hex) in text
    assert "raw=" not in text and "schemaVersion" not in text


def test_equal_bytes_give_equal_hashable_manifests() -> None:
    """Parsing the same bytes twice gives equal manifests that hash alike."""
    assert len({parse_manifest(OCI_ARTIFACT), parse_manifest(OCI_ARTIFACT)}) == 1


def test_manifests_are_immutable() -> None:
    """Assigning to a parsed manifest's fields fails."""
    manifest = parse_manifest(OCI_ARTIFACT)
    with pytest.raises(AttributeError):
        manifest.raw = b"{}"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "cls"),
    [
        (DOCKER_SCHEMA2, ImageManifest),
        (OCI_NESTED_INDEX, ImageIndex),
        (SCHEMA1_SIGNED, Schema1Manifest),
    ],
)
def test_every_parsed_manifest_is_a_manifest(raw: bytes, cls: type[Manifest]) -> None:
    """Each concrete type is a Manifest subclass, so callers can handle them uniformly."""
    manifest = parse_manifest(raw)
    assert type(manifest) is cls
    assert isinstance(manifest, Manifest)
