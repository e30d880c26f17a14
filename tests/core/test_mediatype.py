"""MediaType: constants and the predicates that classify any media type string."""

from __future__ import annotations

import pytest

from ocimirror.core.mediatype import MANIFEST_TYPES, MediaType

M = MediaType

# media type -> (is_index, is_image_manifest, is_schema1, is_manifest, is_distributable,
#                is_docker, is_oci, is_layer)
CASES: list[tuple[str, tuple[bool, ...]]] = [
    (M.OCI_INDEX, (True, False, False, True, True, False, True, False)),
    (M.DOCKER_MANIFEST_LIST, (True, False, False, True, True, True, False, False)),
    (M.OCI_MANIFEST, (False, True, False, True, True, False, True, False)),
    (M.DOCKER_MANIFEST, (False, True, False, True, True, True, False, False)),
    (M.DOCKER_SCHEMA1, (False, False, True, True, True, True, False, False)),
    (M.DOCKER_SCHEMA1_SIGNED, (False, False, True, True, True, True, False, False)),
    (M.DOCKER_CONFIG, (False, False, False, False, True, True, False, False)),
    (M.OCI_CONFIG, (False, False, False, False, True, False, True, False)),
    (M.OCI_EMPTY, (False, False, False, False, True, False, True, False)),
    (M.DOCKER_LAYER, (False, False, False, False, True, True, False, True)),
    (M.DOCKER_FOREIGN_LAYER, (False, False, False, False, False, True, False, True)),
    (M.OCI_LAYER, (False, False, False, False, True, False, True, True)),
    (M.OCI_LAYER_GZIP, (False, False, False, False, True, False, True, True)),
    (M.OCI_LAYER_ZSTD, (False, False, False, False, True, False, True, True)),
    (M.OCI_NONDISTRIBUTABLE_LAYER, (False, False, False, False, False, False, True, True)),
    (M.OCI_NONDISTRIBUTABLE_LAYER_GZIP, (False, False, False, False, False, False, True, True)),
    (M.OCI_NONDISTRIBUTABLE_LAYER_ZSTD, (False, False, False, False, False, False, True, True)),
    # Unknown media types are ordinary, distributable, unclassified content.
    ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", (False,) * 4 + (True,) + (False,) * 3),
    ("application/octet-stream", (False,) * 4 + (True,) + (False,) * 3),
    ("", (False,) * 4 + (True,) + (False,) * 3),
]


@pytest.mark.parametrize(("media_type", "expected"), CASES)
def test_each_predicate_classifies_known_and_unknown_media_types(
    media_type: str, expected: tuple[bool, ...]
) -> None:
    """Every predicate gives the expected answer for every known type and for unknown ones."""
    got = (
        M.is_index(media_type),
        M.is_image_manifest(media_type),
        M.is_schema1(media_type),
        M.is_manifest(media_type),
        M.is_distributable(media_type),
        M.is_docker(media_type),
        M.is_oci(media_type),
        M.is_layer(media_type),
    )
    assert got == expected


@pytest.mark.parametrize(
    ("media_type", "base"),
    [
        (M.OCI_MANIFEST, M.OCI_MANIFEST),
        (f"{M.OCI_MANIFEST}; charset=utf-8", M.OCI_MANIFEST),
        (f"  {M.DOCKER_MANIFEST.upper()} ;q=0.9", M.DOCKER_MANIFEST),
        ("", ""),
    ],
)
def test_base_strips_parameters_whitespace_and_case(media_type: str, base: str) -> None:
    """MediaType.base drops parameters, surrounding spaces and upper case."""
    assert M.base(media_type) == base


def test_predicates_ignore_parameters_and_case() -> None:
    """A Content-Type with parameters or odd case is classified like its base type."""
    assert M.is_index(f"{M.OCI_INDEX}; charset=utf-8")
    assert M.is_image_manifest(M.DOCKER_MANIFEST.upper())
    assert not M.is_distributable(f"{M.DOCKER_FOREIGN_LAYER};x=y")


def test_manifest_types_list_schema2_and_oci_first_and_schema1_last() -> None:
    """MANIFEST_TYPES holds the four modern types first and the two schema1 types last."""
    assert set(MANIFEST_TYPES[:4]) == {
        M.OCI_INDEX,
        M.OCI_MANIFEST,
        M.DOCKER_MANIFEST_LIST,
        M.DOCKER_MANIFEST,
    }
    assert set(MANIFEST_TYPES[4:]) == {M.DOCKER_SCHEMA1, M.DOCKER_SCHEMA1_SIGNED}
    assert MANIFEST_TYPES == M.MANIFEST_TYPES
    assert all(M.is_manifest(mt) for mt in MANIFEST_TYPES)


def test_constants_have_the_spec_spellings() -> None:
    """A few constants spelled out, as registries send them."""
    assert M.OCI_EMPTY == "application/vnd.oci.empty.v1+json"
    assert M.OCI_LAYER == "application/vnd.oci.image.layer.v1.tar"
    assert M.OCI_LAYER_ZSTD == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert M.DOCKER_SCHEMA1_SIGNED == "application/vnd.docker.distribution.manifest.v1+prettyjws"
