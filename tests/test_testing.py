"""The random image generator: deterministic, and its images are valid OCI and Docker images."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocimirror.core.digest import Digest
from ocimirror.errors import InvalidManifest, InvalidPlatform
from ocimirror.layout import LayoutReader
from ocimirror.testing import (
    CREATED,
    Blob,
    Image,
    Index,
    artifact,
    random_image,
    random_index,
    random_layer,
    write_layout,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def _manifest(image: Image | Index) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(image.manifest)
    return parsed


def _untar(layer: Blob) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.data))) as archive:
        return [(m, archive.extractfile(m).read()) for m in archive]  # type: ignore[union-attr]


def test_the_same_seed_gives_byte_identical_images() -> None:
    a = random_image(seed="s", layers=3, platform="linux/arm/v7")
    b = random_image(seed="s", layers=3, platform="linux/arm/v7")
    assert a == b
    assert a.manifest == b.manifest and a.digest == b.digest
    assert [x.data for x in a.blobs()] == [x.data for x in b.blobs()]
    assert random_index(seed=7).manifest == random_index(seed=7).manifest


def test_seeds_are_compared_as_strings() -> None:
    assert random_image(seed=3).digest == random_image(seed="3").digest


def test_different_seeds_give_different_layers_configs_and_manifests() -> None:
    a, b = random_image(seed=1), random_image(seed=2)
    assert a.digest != b.digest and a.config.digest != b.config.digest
    assert not {x.digest for x in a.layers} & {x.digest for x in b.layers}
    assert random_layer(10, seed=1).digest != random_layer(10, seed=2).digest


def test_layers_of_one_image_differ_from_each_other() -> None:
    image = random_image(layers=4)
    assert len({layer.digest for layer in image.layers}) == 4


@pytest.mark.parametrize("size", [0, 1, 1024, 65535, 65536, 200_000])
def test_a_random_layer_is_a_gzipped_tar_of_one_file_of_that_size(size: int) -> None:
    layer = random_layer(size, seed="layer")
    assert layer.media_type == OCI_LAYER and layer.data[:2] == b"\x1f\x8b"
    [(member, content)] = _untar(layer)
    assert member.isreg() and member.size == size and len(content) == size


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=0, max_value=300_000), seed=st.integers() | st.text())
def test_every_random_layer_gunzips_to_a_tar_of_its_size(size: int, seed: int | str) -> None:
    [(member, content)] = _untar(random_layer(size, seed=seed))
    assert member.size == len(content) == size


def test_an_uncompressed_layer_media_type_gives_a_plain_tar() -> None:
    layer = random_layer(100, seed=0, media_type="application/vnd.oci.image.layer.v1.tar")
    with tarfile.open(fileobj=io.BytesIO(layer.data), mode="r:") as archive:
        assert [m.size for m in archive] == [100]
    image = random_image(layers=0, base=[layer])
    assert json.loads(image.config.data)["rootfs"]["diff_ids"] == [str(layer.digest)]


def test_shared_base_layers_come_first_with_equal_digests() -> None:
    base = random_image(seed="base", layers=2).layers
    one = random_image(seed="one", base=base, layers=1)
    two = random_image(seed="two", base=base, layers=3)
    assert one.layers[:2] == two.layers[:2] == base
    assert len(one.layers) == 3 and len(two.layers) == 5
    assert one.layers[2].digest != two.layers[2].digest
    layer_digests = [d["digest"] for d in _manifest(two)["layers"]]
    assert layer_digests[:2] == [str(b.digest) for b in base]


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_rootfs_diff_ids_are_the_sha256_of_each_uncompressed_layer(docker: bool) -> None:
    base = random_image(seed="base", layers=1).layers
    image = random_image(seed="diff", base=base, layers=2, docker=docker)
    config = json.loads(image.config.data)
    assert config["rootfs"]["type"] == "layers"
    assert config["rootfs"]["diff_ids"] == [
        str(Digest.of(gzip.decompress(layer.data))) for layer in image.layers
    ]
    assert len(config["history"]) == len(image.layers)


@pytest.mark.parametrize(
    ("docker", "manifest_type", "config_type", "layer_type"),
    [
        (
            False,
            OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            OCI_LAYER,
        ),
        (
            True,
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
    ],
    ids=["oci", "docker"],
)
def test_an_image_manifest_is_valid_with_the_right_media_types(
    docker: bool, manifest_type: str, config_type: str, layer_type: str
) -> None:
    image = random_image(seed="valid", docker=docker, layers=2)
    manifest = _manifest(image)
    assert image.manifest == json.dumps(manifest, separators=(",", ":")).encode()
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == manifest_type
    assert image.media_type == manifest_type
    assert manifest["config"] == image.config.descriptor()
    assert manifest["config"]["mediaType"] == config_type
    assert manifest["layers"] == [layer.descriptor() for layer in image.layers]
    for descriptor, blob in zip(manifest["layers"], image.layers, strict=True):
        assert descriptor["mediaType"] == layer_type
        assert descriptor["digest"] == str(Digest.of(blob.data))
        assert descriptor["size"] == len(blob.data)
    assert image.digest == Digest.of(image.manifest) and image.size == len(image.manifest)


def test_an_image_config_is_a_real_image_config_with_a_fixed_creation_time() -> None:
    config = json.loads(random_image(platform="linux/arm64/v8").config.data)
    assert config["created"] == CREATED
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert config["config"]["Cmd"] == ["/bin/sh"]
    default = json.loads(random_image().config.data)
    assert (default["os"], default["architecture"]) == ("linux", "amd64")
    assert "variant" not in default


def test_an_image_descriptor_carries_its_platform_only_if_it_has_one() -> None:
    assert "platform" not in random_image().descriptor()
    desc = random_image(platform="windows/amd64").descriptor(annotations={"a": "b"})
    assert desc["platform"] == {"architecture": "amd64", "os": "windows"}
    assert desc["annotations"] == {"a": "b"}


def test_annotations_go_in_an_oci_manifest_and_are_refused_for_docker() -> None:
    image = random_image(annotations={"org.example": "yes"})
    assert _manifest(image)["annotations"] == {"org.example": "yes"}
    with pytest.raises(InvalidManifest):
        random_image(docker=True, annotations={"org.example": "yes"})


@pytest.mark.parametrize("platform", ["linux", "linux/", "/amd64", "a/b/c/d", ""])
def test_a_malformed_platform_is_refused(platform: str) -> None:
    with pytest.raises(InvalidPlatform):
        random_image(platform=platform)


@pytest.mark.parametrize(
    ("docker", "media_type"),
    [(False, OCI_INDEX), (True, "application/vnd.docker.distribution.manifest.list.v2+json")],
    ids=["oci", "docker"],
)
def test_an_index_lists_one_image_per_platform(docker: bool, media_type: str) -> None:
    platforms = ("linux/amd64", "linux/arm64/v8", "linux/s390x")
    index = random_index(seed="idx", platforms=platforms, docker=docker, layers=2)
    manifest = _manifest(index)
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == media_type
    assert index.media_type == media_type
    assert manifest["manifests"] == [child.descriptor() for child in index.children]
    listed = [
        "/".join(filter(None, (p["os"], p["architecture"], p.get("variant"))))
        for p in (d["platform"] for d in manifest["manifests"])
    ]
    assert listed == list(platforms)
    for child, platform in zip(index.images(), platforms, strict=True):
        config = json.loads(child.config.data)
        assert (
            "/".join(filter(None, (config["os"], config["architecture"], config.get("variant"))))
            == platform
        )
        assert len(child.layers) == 2
    assert len({child.digest for child in index.children}) == 3


def test_an_index_walks_its_images_blobs_and_manifests_children_first() -> None:
    inner = random_index(seed="inner")
    image = random_image(seed="outer")
    outer = Index(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [inner.descriptor(), image.descriptor(), image.descriptor()],
            }
        ).encode(),
        OCI_INDEX,
        (inner, image, image),
    )
    assert outer.images() == [*inner.images(), image]
    assert outer.manifests() == [*inner.images(), inner, image, outer]
    blobs = outer.blobs()
    assert len(blobs) == len({b.digest for b in blobs})
    assert {b.digest for b in blobs} == {b.digest for i in outer.images() for b in i.blobs()}


def test_an_artifact_refers_to_its_subject_with_the_empty_config() -> None:
    subject = random_index(seed="subject")
    sbom = artifact(subject, artifact_type="application/spdx+json", payload=b'{"spdx":1}')
    manifest = _manifest(sbom)
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["artifactType"] == "application/spdx+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": OCI_EMPTY_DIGEST,
        "size": 2,
    }
    assert manifest["subject"] == subject.descriptor()
    assert manifest["layers"] == [
        {
            "mediaType": "application/spdx+json",
            "digest": str(Digest.of(b'{"spdx":1}')),
            "size": 10,
        }
    ]
    assert manifest["annotations"]["org.opencontainers.image.created"] == CREATED
    assert sbom.blobs()[1].data == b'{"spdx":1}'


def test_write_layout_writes_every_blob_and_manifest_and_names_entries(tmp_path: Path) -> None:
    image = random_image(seed="w")
    index = random_index(seed="w")
    sbom = artifact(image)
    write_layout(tmp_path / "l", [("img", image), ("idx", index), (None, sbom)])
    with LayoutReader.open(tmp_path / "l") as reader:
        assert [(r.name, r.digest) for r in reader.refs()] == [
            ("img", image.digest),
            ("idx", index.digest),
            (None, sbom.digest),
        ]
        for top in (image, index, sbom):
            for manifest in top.manifests():
                assert reader.read_blob(manifest.digest) == manifest.manifest
            for blob in top.blobs():
                assert reader.read_blob(blob.digest) == blob.data
