"""Media types of manifests, configs and layers, and predicates over them.

Media types are open-ended: anything not listed here (Helm charts, cosign signatures, SBOMs)
is still a valid media type and is carried through untouched. The predicates ignore
parameters such as ``; charset=utf-8`` and letter case.
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = ["MANIFEST_TYPES", "MediaType"]


class MediaType:
    """The media types ocimirror knows by name, and predicates that classify any media type."""

    # Docker image manifest v2 (schema2) and its friends.
    DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
    DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
    DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

    # OCI image-spec.
    OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
    OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
    OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
    OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
    OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
    OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
    OCI_NONDISTRIBUTABLE_LAYER: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    OCI_NONDISTRIBUTABLE_LAYER_GZIP: Final = (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    )
    OCI_NONDISTRIBUTABLE_LAYER_ZSTD: Final = (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
    )
    #: The empty descriptor's media type: the two bytes ``{}`` used as config of OCI 1.1 artifacts.
    OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"

    #: Every manifest type, best first, for an ``Accept`` header; schema1 comes last.
    MANIFEST_TYPES: ClassVar[tuple[str, ...]] = (
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_MANIFEST,
        DOCKER_SCHEMA1_SIGNED,
        DOCKER_SCHEMA1,
    )

    _INDEXES: ClassVar[frozenset[str]] = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
    _IMAGES: ClassVar[frozenset[str]] = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
    _SCHEMA1: ClassVar[frozenset[str]] = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
    _LAYERS: ClassVar[frozenset[str]] = frozenset(
        {
            DOCKER_LAYER,
            DOCKER_FOREIGN_LAYER,
            OCI_LAYER,
            OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD,
            OCI_NONDISTRIBUTABLE_LAYER,
            OCI_NONDISTRIBUTABLE_LAYER_GZIP,
            OCI_NONDISTRIBUTABLE_LAYER_ZSTD,
        }
    )
    _NON_DISTRIBUTABLE: ClassVar[frozenset[str]] = frozenset(
        {
            DOCKER_FOREIGN_LAYER,
            OCI_NONDISTRIBUTABLE_LAYER,
            OCI_NONDISTRIBUTABLE_LAYER_GZIP,
            OCI_NONDISTRIBUTABLE_LAYER_ZSTD,
        }
    )

    @staticmethod
    def base(mt: str) -> str:
        """``mt`` without parameters, trimmed and lowercased (``"A/B; q=1"`` -> ``"a/b"``)."""
        return mt.partition(";")[0].strip().lower()

    @staticmethod
    def is_index(mt: str) -> bool:
        """True for an OCI image index or a Docker manifest list."""
        return MediaType.base(mt) in MediaType._INDEXES

    @staticmethod
    def is_image_manifest(mt: str) -> bool:
        """True for an OCI image manifest or a Docker schema2 manifest."""
        return MediaType.base(mt) in MediaType._IMAGES

    @staticmethod
    def is_schema1(mt: str) -> bool:
        """True for a legacy Docker schema1 manifest, signed or not."""
        return MediaType.base(mt) in MediaType._SCHEMA1

    @staticmethod
    def is_manifest(mt: str) -> bool:
        """True for any manifest type ocimirror can parse: image, index or schema1."""
        return MediaType.base(mt) in _ALL_MANIFESTS

    @staticmethod
    def is_layer(mt: str) -> bool:
        """True for a known Docker or OCI layer type (artifact blobs are not recognised)."""
        return MediaType.base(mt) in MediaType._LAYERS

    @staticmethod
    def is_distributable(mt: str) -> bool:
        """False for foreign and non-distributable layers, which registries do not serve."""
        return MediaType.base(mt) not in MediaType._NON_DISTRIBUTABLE

    @staticmethod
    def is_docker(mt: str) -> bool:
        """True for a Docker media type (``application/vnd.docker.*``)."""
        return MediaType.base(mt).startswith("application/vnd.docker.")

    @staticmethod
    def is_oci(mt: str) -> bool:
        """True for an OCI media type (``application/vnd.oci.*``)."""
        return MediaType.base(mt).startswith("application/vnd.oci.")


_ALL_MANIFESTS: Final = frozenset(MediaType.MANIFEST_TYPES)

#: Every manifest type, best first, for an ``Accept`` header; schema1 comes last.
MANIFEST_TYPES: Final[tuple[str, ...]] = MediaType.MANIFEST_TYPES
