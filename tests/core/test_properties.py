"""Properties of the core parsers over generated input (hypothesis).

Parsers fed anything raise only ocimirror errors; valid values round-trip through ``str()``;
generated valid manifests parse, keep their descriptors and hash to the sha256 of their bytes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ocimirror.core.descriptor import Platform
from ocimirror.core.digest import ALGORITHMS, Digest
from ocimirror.core.manifest import ImageIndex, ImageManifest, parse_manifest
from ocimirror.core.mediatype import MANIFEST_TYPES, MediaType
from ocimirror.core.reference import (
    Reference,
    is_digest_reference,
    validate_repository_name,
    validate_tag,
)
from ocimirror.errors import OcimirrorError

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def raises_only_ocimirror_errors(parse: Callable[..., object], *args: object) -> None:
    """Call ``parse``; an OcimirrorError is fine, any other exception fails the test."""
    with contextlib.suppress(OcimirrorError):
        parse(*args)


# Strategies ---------------------------------------------------------------------------------

hex_digests = st.sampled_from(sorted(ALGORITHMS)).flatmap(
    lambda alg: st.integers(0, 16 ** ALGORITHMS[alg] - 1).map(
        lambda n: f"{alg}:{n:0{ALGORITHMS[alg]}x}"
    )
)
components = st.from_regex(r"[a-z0-9]{1,8}(?:(?:\.|_|__|-{1,3})[a-z0-9]{1,8}){0,2}", fullmatch=True)
repositories = st.lists(components, min_size=1, max_size=4).map("/".join)
tags = st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", fullmatch=True)
labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
ports = st.integers(1, 65535).map(lambda p: f":{p}")
registries = st.one_of(
    st.builds(lambda a, b, port: f"{a}.{b}{port}", labels, labels, st.just("") | ports),
    st.builds(lambda port: f"localhost{port}", st.just("") | ports),
    st.builds(lambda a, port: f"{a}{port}", labels, ports),
)

media_types = st.sampled_from(
    [
        MediaType.OCI_CONFIG,
        MediaType.OCI_EMPTY,
        MediaType.OCI_LAYER_ZSTD,
        MediaType.DOCKER_LAYER,
        MediaType.DOCKER_FOREIGN_LAYER,
        "application/octet-stream",
    ]
) | st.from_regex(r"application/[a-z0-9][a-z0-9.+-]{0,30}", fullmatch=True)
annotation_maps = st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=3)
platform_objects = st.fixed_dictionaries(
    {"architecture": st.text(min_size=1, max_size=8), "os": st.text(min_size=1, max_size=8)},
    optional={
        "variant": st.text(min_size=1, max_size=4),
        "os.version": st.text(min_size=1, max_size=12),
        "os.features": st.lists(st.text(max_size=6), max_size=2),
        "features": st.lists(st.text(max_size=6), max_size=2),
    },
)
descriptor_objects = st.fixed_dictionaries(
    {"mediaType": media_types, "digest": hex_digests, "size": st.integers(0, 2**63 - 1)},
    optional={
        "urls": st.lists(st.text(max_size=20), max_size=2),
        "annotations": annotation_maps,
        "platform": platform_objects,
        "artifactType": media_types,
    },
)
image_objects = st.fixed_dictionaries(
    {
        "schemaVersion": st.just(2),
        "config": descriptor_objects,
        "layers": st.lists(descriptor_objects, max_size=5),
    },
    optional={
        "mediaType": st.sampled_from([MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST]),
        "annotations": annotation_maps,
        "subject": descriptor_objects,
        "artifactType": media_types,
    },
)
index_objects = st.fixed_dictionaries(
    {"schemaVersion": st.just(2), "manifests": st.lists(descriptor_objects, max_size=5)},
    optional={
        "mediaType": st.sampled_from([MediaType.OCI_INDEX, MediaType.DOCKER_MANIFEST_LIST]),
        "annotations": annotation_maps,
        "subject": descriptor_objects,
        "artifactType": media_types,
    },
)

# Near-manifests: manifest-shaped JSON with random values where the fields go.
KEYS = st.sampled_from(
    [
        *("schemaVersion", "mediaType", "config", "layers", "manifests", "subject"),
        *("annotations", "artifactType", "digest", "size", "urls", "platform"),
        *("architecture", "os", "variant", "os.version", "os.features", "features"),
        *("fsLayers", "blobSum", "name", "tag", "signatures"),
    ]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 2**64)
    | st.floats()
    | st.text(max_size=10)
    | hex_digests
    | st.sampled_from([*MANIFEST_TYPES, MediaType.OCI_EMPTY, 1, 2, "sha256:"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=30,
)
near_manifests = st.builds(
    lambda version, body: {"schemaVersion": version, **body},
    st.sampled_from([1, 2, 2, 2, "2", None]),
    st.dictionaries(KEYS, json_values, max_size=8),
)
hints = st.none() | st.sampled_from([*MANIFEST_TYPES, "application/json"]) | st.text(max_size=20)
dumps_options = st.fixed_dictionaries(
    {
        "indent": st.sampled_from([None, 2, 3, "\t"]),
        "sort_keys": st.booleans(),
        "ensure_ascii": st.booleans(),
    }
)


def without_empty(obj: dict[str, Any]) -> dict[str, Any]:
    """A descriptor or platform object as to_json writes it: empty arrays and objects dropped."""
    return {
        key: without_empty(value) if isinstance(value, dict) and key == "platform" else value
        for key, value in obj.items()
        if value not in ([], {})
    }


# Only ocimirror errors ----------------------------------------------------------------------

PARSERS: list[Callable[[str], object]] = [
    Digest.parse,
    Reference.parse,
    validate_repository_name,
    validate_tag,
    Platform.parse,
    is_digest_reference,
]


@FAST
@given(text=st.text(max_size=300) | st.from_regex(r"[a-z0-9:/@._-]{0,80}", fullmatch=True))
def test_string_parsers_raise_only_ocimirror_errors_on_any_text(text: str) -> None:
    """Digest, reference, name, tag and platform parsers turn any text into a value or an
    OcimirrorError, never another exception."""
    for parse in PARSERS:
        raises_only_ocimirror_errors(parse, text)


@FAST
@given(raw=st.binary(max_size=400), hint=hints)
def test_parse_manifest_raises_only_ocimirror_errors_on_any_bytes(
    raw: bytes, hint: str | None
) -> None:
    """parse_manifest turns arbitrary bytes into a manifest or an OcimirrorError."""
    raises_only_ocimirror_errors(parse_manifest, raw, hint)


@FAST
@given(obj=near_manifests, hint=hints, options=dumps_options)
def test_parse_manifest_raises_only_ocimirror_errors_on_manifest_shaped_json(
    obj: dict[str, Any], hint: str | None, options: dict[str, Any]
) -> None:
    """Manifest-shaped JSON with wrong types anywhere gives a manifest or an OcimirrorError."""
    raises_only_ocimirror_errors(parse_manifest, json.dumps(obj, **options).encode(), hint)


# Round trips --------------------------------------------------------------------------------


@FAST
@given(text=hex_digests)
def test_valid_digests_round_trip_through_str(text: str) -> None:
    """Any well-formed digest string parses and prints back unchanged."""
    digest = Digest.parse(text)
    assert str(digest) == text
    assert Digest.parse(str(digest)) == digest
    assert is_digest_reference(text)


@FAST
@given(
    registry=st.none() | registries,
    repository=repositories,
    tag=st.none() | tags,
    digest=st.none() | hex_digests.map(Digest.parse),
)
def test_valid_references_round_trip_through_str(
    registry: str | None, repository: str, tag: str | None, digest: Digest | None
) -> None:
    """A reference built from valid parts prints to a string that parses back to it."""
    first = repository.split("/")[0]
    # Without a registry, 'a.b/c' reads as registry 'a.b'; such a pair has no text of its own.
    assume(
        registry is not None or "/" not in repository or not ("." in first or first == "localhost")
    )
    ref = Reference(repository=repository, registry=registry, tag=tag, digest=digest)
    assert Reference.parse(str(ref)) == ref
    assert validate_repository_name(ref.repository) == ref.repository


@FAST
@given(
    parts=st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,10}", fullmatch=True), min_size=2, max_size=3)
)
def test_valid_platform_strings_round_trip_through_str(parts: list[str]) -> None:
    """os/arch[/variant] parses and prints back unchanged."""
    text = "/".join(parts)
    assert str(Platform.parse(text)) == text


# Generated manifests ------------------------------------------------------------------------


@FAST
@given(obj=image_objects, options=dumps_options)
def test_generated_image_manifests_parse_and_hash_to_the_sha256_of_their_bytes(
    obj: dict[str, Any], options: dict[str, Any]
) -> None:
    """A valid image manifest parses; digest is sha256(raw) and its descriptors survive."""
    raw = json.dumps(obj, **options).encode()
    manifest = parse_manifest(raw)
    assert isinstance(manifest, ImageManifest)
    assert manifest.raw == raw
    assert manifest.digest == Digest.of(raw)
    assert manifest.media_type == obj.get("mediaType", MediaType.OCI_MANIFEST)
    expected = [without_empty(d) for d in [obj["config"], *obj["layers"]]]
    assert [d.to_json() for d in manifest.blobs()] == expected
    assert manifest.annotations == obj.get("annotations", {})
    if "subject" in obj:
        assert manifest.subject is not None
        assert manifest.subject.to_json() == without_empty(obj["subject"])


@FAST
@given(obj=index_objects, options=dumps_options)
def test_generated_indexes_parse_and_hash_to_the_sha256_of_their_bytes(
    obj: dict[str, Any], options: dict[str, Any]
) -> None:
    """A valid index parses; digest is sha256(raw) and its children survive."""
    raw = json.dumps(obj, **options).encode()
    manifest = parse_manifest(raw, expected=Digest.of(raw))
    assert isinstance(manifest, ImageIndex)
    assert manifest.digest == Digest.of(raw)
    assert [d.to_json() for d in manifest.children()] == [
        without_empty(d) for d in obj["manifests"]
    ]
