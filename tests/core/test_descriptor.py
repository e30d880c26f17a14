"""Descriptor, Platform and Annotations: the pieces manifests are made of."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from ocimirror.core.descriptor import Annotations, Descriptor, Platform
from ocimirror.core.digest import Digest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import InvalidError, InvalidManifest, InvalidPlatform

DIGEST = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"


def layer_json(**overrides: Any) -> dict[str, Any]:
    """A Docker layer descriptor as it appears in a manifest, with fields replaced."""
    obj: dict[str, Any] = {"mediaType": MediaType.DOCKER_LAYER, "digest": DIGEST, "size": 3370628}
    obj.update(overrides)
    return {k: v for k, v in obj.items() if v is not ...}


# Platform ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "platform"),
    [
        ("linux/amd64", Platform("amd64", "linux")),
        ("linux/arm64/v8", Platform("arm64", "linux", variant="v8")),
        ("windows/amd64", Platform("amd64", "windows")),
        ("linux/ppc64le", Platform("ppc64le", "linux")),
        ("unknown/unknown", Platform("unknown", "unknown")),
    ],
)
def test_a_platform_string_parses_to_os_arch_variant_and_prints_back(
    text: str, platform: Platform
) -> None:
    """'os/arch[/variant]' parses to a Platform whose str() is the same text."""
    assert Platform.parse(text) == platform
    assert str(platform) == text


@pytest.mark.parametrize(
    "text", ["", "linux", "linux/", "/amd64", "linux/arm/v7/extra", "linux/amd 64", "linux//v7"]
)
def test_a_malformed_platform_string_is_refused_with_an_example(text: str) -> None:
    """Anything but two or three non-empty parts raises InvalidPlatform showing the format."""
    with pytest.raises(InvalidPlatform, match="os/architecture"):
        Platform.parse(text)


def test_a_platform_must_name_an_os_and_an_architecture() -> None:
    """Constructing a Platform with an empty architecture or os raises InvalidPlatform."""
    with pytest.raises(InvalidPlatform, match="architecture"):
        Platform("", "linux")
    with pytest.raises(InvalidPlatform, match="variant"):
        Platform("arm", "linux", variant="")


@pytest.mark.parametrize(
    ("wanted", "offered", "matches"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/arm64", True),
        ("linux/arm/v7", "linux/arm/v6", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/amd64", "linux/arm64", False),
    ],
)
def test_platforms_match_on_os_and_arch_and_on_variant_when_both_name_one(
    wanted: str, offered: str, matches: bool
) -> None:
    """matches() compares os and architecture, and variants only if both sides give one."""
    assert Platform.parse(wanted).matches(Platform.parse(offered)) is matches


def test_a_full_platform_object_reads_and_writes_every_oci_field() -> None:
    """from_json and to_json cover os.version, os.features, variant and features."""
    obj = {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.5696",
        "os.features": ["win32k"],
        "variant": "v3",
        "features": ["sse4"],
    }
    platform = Platform.from_json(obj)
    assert platform == Platform("amd64", "windows", "v3", "10.0.17763.5696", ("win32k",), ("sse4",))
    assert platform.to_json() == obj


def test_a_minimal_platform_object_writes_only_os_and_architecture() -> None:
    """Empty optional fields are left out of to_json, and an empty variant reads as none."""
    platform = Platform.from_json({"architecture": "amd64", "os": "linux", "variant": ""})
    assert platform.variant is None
    assert platform.to_json() == {"architecture": "amd64", "os": "linux"}


@pytest.mark.parametrize(
    ("obj", "complaint"),
    [
        ([], r"^platform: expected a JSON object, got array"),
        ({"os": "linux"}, r"^platform\.architecture: .* missing"),
        ({"architecture": "amd64", "os": 1}, r"^platform\.os: .* got number"),
        ({"architecture": "", "os": "linux"}, r"^platform\.architecture: expected a non-empty"),
        ({"architecture": "arm", "os": "linux", "variant": 7}, r"^platform\.variant: "),
        ({"architecture": "a", "os": "b", "os.features": "x"}, r"^platform\.os\.features: "),
        ({"architecture": "a", "os": "b", "features": [1]}, r"^platform\.features\[0\]: "),
    ],
)
def test_a_malformed_platform_object_names_the_bad_field(obj: object, complaint: str) -> None:
    """Platform.from_json raises InvalidManifest whose message starts with the field's path."""
    with pytest.raises(InvalidManifest, match=complaint):
        Platform.from_json(obj)


# Annotations ---------------------------------------------------------------------------------


def test_annotations_are_a_read_only_hashable_mapping_equal_to_a_dict() -> None:
    """Annotations compare equal to a dict with the same items, hash, and cannot be changed."""
    annotations = Annotations({"org.opencontainers.image.title": "x", "a": "b"})
    assert annotations == {"a": "b", "org.opencontainers.image.title": "x"}
    assert annotations == MappingProxyType({"a": "b", "org.opencontainers.image.title": "x"})
    assert annotations != {"a": "b"}
    assert hash(annotations) == hash(
        Annotations([("a", "b"), ("org.opencontainers.image.title", "x")])
    )
    with pytest.raises(TypeError):
        annotations["a"] = "c"  # type: ignore[index]


def test_annotations_refuse_values_that_are_not_strings() -> None:
    """Annotations map strings to strings only."""
    with pytest.raises(InvalidError, match="strings to strings"):
        Annotations({"a": 1})  # type: ignore[arg-type]


def test_a_descriptor_copies_the_annotations_it_is_given() -> None:
    """Changing the dict a descriptor was built from does not change the descriptor."""
    source = {"a": "b"}
    descriptor = Descriptor(MediaType.OCI_LAYER, DIGEST, 1, annotations=source)
    source["a"] = "changed"
    assert descriptor.annotations == {"a": "b"}


# Descriptor ----------------------------------------------------------------------------------


def test_a_minimal_descriptor_reads_and_writes_back_the_same_object() -> None:
    """A descriptor with only mediaType, digest and size round-trips through JSON."""
    obj = layer_json()
    descriptor = Descriptor.from_json(obj)
    assert descriptor == Descriptor(MediaType.DOCKER_LAYER, Digest.parse(DIGEST), 3370628)
    assert descriptor.to_json() == obj


def test_a_full_descriptor_reads_and_writes_back_every_field() -> None:
    """urls, annotations, platform and artifactType survive a JSON round trip."""
    obj = layer_json(
        mediaType=MediaType.DOCKER_FOREIGN_LAYER,
        urls=["https://mcr.microsoft.com/v2/windows/servercore/blobs/" + DIGEST],
        annotations={"org.opencontainers.image.title": "base.tar.gz"},
        platform={"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.5696"},
        artifactType="application/vnd.example+type",
    )
    descriptor = Descriptor.from_json(obj)
    assert descriptor.platform == Platform("amd64", "windows", os_version="10.0.17763.5696")
    assert descriptor.annotations == {"org.opencontainers.image.title": "base.tar.gz"}
    assert descriptor.to_json() == obj
    assert json.loads(json.dumps(descriptor.to_json())) == obj


def test_unknown_fields_and_nulls_are_tolerated() -> None:
    """Extra fields (such as 'data') are ignored and null optional fields read as absent."""
    obj = layer_json(data="e30=", urls=None, annotations=None, platform=None, artifactType=None)
    obj["x-vendor"] = {"anything": [1, 2]}
    assert Descriptor.from_json(obj) == Descriptor.from_json(layer_json())


def test_descriptor_of_bytes_computes_digest_and_size() -> None:
    """Descriptor.of(media_type, data) describes exactly those bytes."""
    descriptor = Descriptor.of(MediaType.OCI_EMPTY, b"{}")
    assert descriptor.size == 2
    assert str(descriptor.digest) == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )


@pytest.mark.parametrize(
    ("obj", "complaint"),
    [
        ("sha256:x", r"^layers\[2\]: expected a descriptor object, got string"),
        (
            layer_json(mediaType=...),
            r"^layers\[2\]\.mediaType: expected a non-empty string, missing",
        ),
        (layer_json(mediaType=""), r"^layers\[2\]\.mediaType: "),
        (layer_json(mediaType=["a"]), r"^layers\[2\]\.mediaType: .*got array"),
        (layer_json(digest=...), r"^layers\[2\]\.digest: missing"),
        (layer_json(digest="sha256:abc"), r"^layers\[2\]\.digest: sha256 digest must be 64"),
        (layer_json(digest="md5:abc"), r"^layers\[2\]\.digest: unsupported digest algorithm"),
        (layer_json(digest=12), r"^layers\[2\]\.digest: a digest must be a string"),
        (layer_json(size=...), r"^layers\[2\]\.size: .*missing"),
        (layer_json(size=-1), r"^layers\[2\]\.size: .*got number -1"),
        (layer_json(size=1.0), r"^layers\[2\]\.size: "),
        (layer_json(size=True), r"^layers\[2\]\.size: .*got boolean"),
        (layer_json(size="12"), r"^layers\[2\]\.size: .*got string"),
        (layer_json(size=2**63), r"^layers\[2\]\.size: "),
        (layer_json(urls="https://x"), r"^layers\[2\]\.urls: expected an array"),
        (layer_json(urls=["https://x", 3]), r"^layers\[2\]\.urls\[1\]: "),
        (layer_json(annotations=["a"]), r"^layers\[2\]\.annotations: expected an object"),
        (layer_json(annotations={"a": 1}), r"^layers\[2\]\.annotations\['a'\]: "),
        (layer_json(platform="linux/amd64"), r"^layers\[2\]\.platform: expected a JSON object"),
        (layer_json(platform={"os": "linux"}), r"^layers\[2\]\.platform\.architecture: "),
        (layer_json(artifactType=5), r"^layers\[2\]\.artifactType: "),
    ],
)
def test_a_malformed_descriptor_names_the_bad_field_by_path(obj: object, complaint: str) -> None:
    """Descriptor.from_json raises InvalidManifest whose message starts with the field's path."""
    with pytest.raises(InvalidManifest, match=complaint):
        Descriptor.from_json(obj, where="layers[2]")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"media_type": ""},
        {"digest": "sha256:nope"},
        {"size": -1},
        {"size": True},
        {"urls": "https://x"},
        {"annotations": {"a": 1}},
        {"platform": "linux/amd64"},
        {"artifact_type": 1},
    ],
)
def test_a_descriptor_cannot_be_constructed_with_invalid_fields(kwargs: dict[str, Any]) -> None:
    """The constructor refuses bad values with InvalidError, just like from_json."""
    fields: dict[str, Any] = {"media_type": MediaType.OCI_LAYER, "digest": DIGEST, "size": 1}
    fields.update(kwargs)
    with pytest.raises(InvalidError):
        Descriptor(**fields)


def test_descriptors_are_hashable_values() -> None:
    """Equal descriptors hash alike, so they can be deduplicated in sets."""
    obj = layer_json(annotations={"a": "b"}, platform={"architecture": "arm", "os": "linux"})
    assert len({Descriptor.from_json(obj), Descriptor.from_json(dict(obj))}) == 1


def test_a_descriptor_accepts_its_digest_as_a_string() -> None:
    """The digest argument may be a string; it is parsed into a Digest."""
    assert Descriptor(MediaType.OCI_LAYER, DIGEST, 1).digest == Digest.parse(DIGEST)
