"""Repositories and versions, with Pulp's semantics, over SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

import ocimirror
from ocimirror.errors import (
    AlreadyExists,
    Conflict,
    InvalidName,
    InvalidReference,
    ManifestNotFound,
    RepositoryNotFound,
    TagNotFound,
    VersionNotFound,
)
from ocimirror.testing import Image, Index, random_image, random_index, random_layer


def store(registry: ocimirror.Registry, item: Image | Index) -> str:
    """Put an image or index (blobs, children, then itself) into the registry's content."""
    for blob in item.blobs():
        registry.put_blob(blob.data, expected=blob.digest, media_type=blob.media_type)
    if isinstance(item, Index):
        for child in item.children:
            store(registry, child)
    registry.put_manifest(item.manifest, item.media_type, expected=item.digest)
    return str(item.digest)


BASE = random_layer(2048, seed="base")


@pytest.fixture
def images(registry: ocimirror.Registry) -> dict[str, str]:
    """Two images sharing a base layer and a two-platform index, stored as content."""
    a = random_image(seed="a", base=[BASE], layers=1)
    b = random_image(seed="b", base=[BASE], layers=1)
    multi = random_index(seed="multi")
    return {"a": store(registry, a), "b": store(registry, b), "multi": store(registry, multi)}


def summary(version: ocimirror.RepositoryVersion) -> dict[str, dict[str, int]]:
    return version.content_summary.to_json()


def test_a_new_repository_has_an_empty_version_zero(registry: ocimirror.Registry) -> None:
    repo = registry.create_repository("foo", description="first")
    v0 = repo.latest_version()
    assert v0.number == 0
    assert v0.base_version is None
    assert summary(v0) == {"added": {}, "removed": {}, "present": {}}
    assert [r.name for r in registry.repositories()] == ["foo"]


def test_repository_names_are_unique(registry: ocimirror.Registry) -> None:
    registry.create_repository("foo")
    with pytest.raises(AlreadyExists):
        registry.create_repository("foo")


@pytest.mark.parametrize("name", ["", " padded", "tab\there", "x" * 256])
def test_bad_repository_names_are_refused(registry: ocimirror.Registry, name: str) -> None:
    with pytest.raises(InvalidName):
        registry.create_repository(name)
    assert registry.repositories() == []


def test_tagging_adds_the_manifest_and_its_blobs(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    v1 = repo.tag("latest", images["a"])
    assert v1.number == 1
    assert summary(v1) == {
        "added": {"container.blob": 3, "container.manifest": 1, "container.tag": 1},
        "removed": {},
        "present": {"container.blob": 3, "container.manifest": 1, "container.tag": 1},
    }
    assert repo.tags() == {"latest": images["a"]}


def test_a_change_that_changes_nothing_creates_no_version(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    repo.tag("latest", images["a"])
    again = repo.tag("latest", images["a"])
    assert again.number == 1
    assert [v.number for v in repo.versions()] == [1, 0]


def test_tagging_an_index_brings_every_child_manifest_and_blob(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    v1 = repo.tag("multi", images["multi"])
    # The index and two platform manifests; each platform has a config and one layer.
    assert v1.content_summary.present == {
        "container.blob": 4,
        "container.manifest": 3,
        "container.tag": 1,
    }


def test_untag_removes_only_the_tag(registry: ocimirror.Registry, images: dict[str, str]) -> None:
    repo = registry.create_repository("foo")
    repo.tag("latest", images["a"])
    v2 = repo.untag("latest")
    assert summary(v2)["removed"] == {"container.tag": 1}
    assert v2.content_summary.present == {"container.blob": 3, "container.manifest": 1}
    assert repo.has_manifest(ocimirror.Digest.parse(images["a"]))
    with pytest.raises(TagNotFound):
        repo.untag("latest")


def test_retagging_moves_the_tag(registry: ocimirror.Registry, images: dict[str, str]) -> None:
    repo = registry.create_repository("foo")
    repo.tag("latest", images["a"])
    v2 = repo.tag("latest", images["b"])
    # b's config and own layer are new (the base layer is shared); a stays, untagged.
    assert v2.content_summary.added == {
        "container.blob": 2,
        "container.manifest": 1,
        "container.tag": 1,
    }
    assert v2.content_summary.removed == {"container.tag": 1}
    assert repo.tags() == {"latest": images["b"]}
    assert repo.tags(1) == {"latest": images["a"]}


def test_removing_a_tag_removes_what_only_it_references(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    repo.add(tags={"a": images["a"], "b": images["b"]})
    v2 = repo.remove(tags=["a"])
    # a's manifest, config and own layer go; the shared base layer stays for b.
    assert v2.content_summary.removed == {
        "container.blob": 2,
        "container.manifest": 1,
        "container.tag": 1,
    }
    assert ocimirror.Digest.parse(str(BASE.digest)) in repo.blobs()


def test_removing_an_index_keeps_a_child_another_tag_points_to(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    multi = random_index(seed="multi")
    child = str(multi.children[0].digest)
    repo.add(tags={"multi": images["multi"], "amd64": child})
    v2 = repo.remove(tags=["multi"])
    assert v2.content_summary.removed == {
        "container.blob": 2,
        "container.manifest": 2,
        "container.tag": 1,
    }
    assert repo.tags() == {"amd64": child}


def test_removing_a_manifest_removes_the_tags_pointing_to_it(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    repo.add(tags={"x": images["a"], "y": images["a"]})
    v2 = repo.remove(manifests=[images["a"]])
    assert v2.content_summary.present == {}
    with pytest.raises(ManifestNotFound):
        repo.remove(manifests=[images["a"]])


def test_old_versions_never_change(registry: ocimirror.Registry, images: dict[str, str]) -> None:
    repo = registry.create_repository("foo")
    repo.add(tags={"a": images["a"], "b": images["b"]})
    repo.remove(tags=["a"])
    repo.tag("c", images["multi"])
    assert repo.tags(1) == {"a": images["a"], "b": images["b"]}
    assert repo.tags(2) == {"b": images["b"]}
    assert len(repo.manifests(1)) == 2
    assert len(repo.manifests(3)) == 4


def test_tags_are_listed_sorted_and_paginated(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    names = [f"t{i:03d}" for i in range(30)]
    repo.add(tags=dict.fromkeys(reversed(names), images["a"]))
    assert list(repo.tags()) == names
    assert list(repo.tags(n=5)) == names[:5]
    assert list(repo.tags(last="t009", n=3)) == ["t010", "t011", "t012"]
    assert repo.tags(last="t029") == {}


def test_bad_tags_are_refused_and_write_nothing(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    with pytest.raises(InvalidReference):
        repo.add(tags={"ok": images["a"], "-bad": images["a"]})
    assert repo.latest_version().number == 0


def test_tagging_an_unknown_manifest_is_refused(registry: ocimirror.Registry) -> None:
    repo = registry.create_repository("foo")
    with pytest.raises(ManifestNotFound):
        repo.tag("latest", "sha256:" + "0" * 64)
    assert repo.latest_version().number == 0


def test_copy_tags_from_another_repository_version(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    src = registry.create_repository("src")
    v1 = src.add(tags={"a": images["a"], "multi": images["multi"]})
    src.untag("a")
    dst = registry.create_repository("dst")
    copied = dst.copy_tags(v1)
    assert dst.tags() == {"a": images["a"], "multi": images["multi"]}
    assert copied.content_summary.present == v1.content_summary.present
    only = registry.create_repository("only")
    only.copy_tags(src, names=["multi"])
    assert only.tags() == {"multi": images["multi"]}
    with pytest.raises(TagNotFound):
        only.copy_tags(src, names=["a"])


def test_copy_manifests_brings_them_untagged(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    src = registry.create_repository("src")
    src.add(tags={"a": images["a"]})
    dst = registry.create_repository("dst")
    v1 = dst.copy_manifests(src)
    assert v1.content_summary.present == {"container.blob": 3, "container.manifest": 1}


def test_deleting_a_middle_version_folds_it_into_the_next(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    repo.tag("a", images["a"])  # 1
    repo.tag("b", images["b"])  # 2
    repo.remove(tags=["a"])  # 3
    repo.delete_version(2)
    assert [v.number for v in repo.versions()] == [3, 1, 0]
    v3 = repo.version(3)
    assert repo.tags(3) == {"b": images["b"]}
    assert repo.tags(1) == {"a": images["a"]}
    # Relative to version 1 now: b came in, a went out (each with a config and a layer).
    assert v3.content_summary.added == {
        "container.blob": 2,
        "container.manifest": 1,
        "container.tag": 1,
    }
    assert v3.content_summary.removed == {
        "container.blob": 2,
        "container.manifest": 1,
        "container.tag": 1,
    }
    with pytest.raises(VersionNotFound):
        repo.version(2)


def test_deleting_the_latest_version_goes_back_to_the_previous(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    repo.tag("a", images["a"])
    repo.tag("b", images["b"])
    repo.delete_version(2)
    assert repo.latest_version().number == 1
    assert repo.tags() == {"a": images["a"]}
    # Numbers are never reused.
    assert repo.tag("c", images["multi"]).number == 3
    assert repo.tags() == {"a": images["a"], "c": images["multi"]}


def test_the_only_version_cannot_be_deleted(registry: ocimirror.Registry) -> None:
    repo = registry.create_repository("foo")
    with pytest.raises(Conflict):
        repo.delete_version(0)


def test_a_version_served_by_a_distribution_is_kept(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    repo.tag("a", images["a"])
    registry.create_distribution(
        "pinned", base_path="foo/pinned", repository="foo", repository_version=1
    )
    repo.tag("b", images["b"])
    with pytest.raises(Conflict):
        repo.delete_version(1)
    repo.update(retain_repo_versions=1)
    assert [v.number for v in repo.versions()] == [2, 1]


def test_retention_keeps_the_newest_versions(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo", retain_repo_versions=2)
    repo.tag("a", images["a"])
    repo.tag("b", images["b"])
    repo.tag("c", images["multi"])
    assert [v.number for v in repo.versions()] == [3, 2]
    assert repo.tags(2) == {"a": images["a"], "b": images["b"]}
    assert repo.tags(3) == {"a": images["a"], "b": images["b"], "c": images["multi"]}
    assert repo.version(3).content_summary.present["container.tag"] == 3


def test_a_version_can_start_from_an_older_base(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    repo = registry.create_repository("foo")
    repo.tag("a", images["a"])  # 1
    repo.tag("b", images["b"])  # 2
    v3 = repo.add(tags={"c": images["multi"]}, base_version=1)
    assert v3.base_version == 1
    assert repo.tags() == {"a": images["a"], "c": images["multi"]}


def test_unknown_things_raise_lookup_errors(registry: ocimirror.Registry) -> None:
    with pytest.raises(RepositoryNotFound):
        registry.repository("nope")
    repo = registry.create_repository("foo")
    with pytest.raises(VersionNotFound):
        repo.version(7)
    with pytest.raises(TagNotFound):
        repo.resolve("latest")


def test_orphan_cleanup_removes_unreferenced_content_after_the_grace_period(
    registry: ocimirror.Registry, images: dict[str, str]
) -> None:
    keep = registry.create_repository("keep")
    keep.tag("b", images["b"])
    gone = registry.create_repository("gone")
    gone.tag("a", images["a"])
    registry.delete_repository("gone")
    nothing = registry.orphan_cleanup(grace=timedelta(hours=1))
    assert (nothing.manifests, nothing.blobs) == (0, 0)
    report = registry.orphan_cleanup(grace=timedelta(0))
    # a's manifest, the unreferenced multi index tree, a's config and own layer; the multi
    # tree's blobs are orphans too (4).
    assert report.manifests == 1 + 3
    assert report.blobs == 2 + 4
    aio = registry.aio
    assert registry._portal.call(aio.has_blob(BASE.digest))
    with pytest.raises(ManifestNotFound):
        registry.get_manifest(ocimirror.Digest.parse(images["a"]))
    assert keep.tags() == {"b": images["b"]}
    assert registry.repair().ok


def test_repair_finds_corrupt_and_missing_blobs(
    registry: ocimirror.Registry, images: dict[str, str], tmp_path: Path
) -> None:
    repo = registry.create_repository("foo")
    repo.tag("a", images["a"])
    assert registry.repair().ok
    layer = random_image(seed="a", base=[BASE], layers=1).layers[-1]
    path = tmp_path / "blobs" / "blobs" / "sha256" / layer.digest.hex[:2] / layer.digest.hex
    path.write_bytes(b"rot" + path.read_bytes()[3:])
    config = random_image(seed="a", base=[BASE], layers=1).config
    (tmp_path / "blobs" / "blobs" / "sha256" / config.digest.hex[:2] / config.digest.hex).unlink()
    report = registry.repair()
    assert report.corrupt == (str(layer.digest),)
    assert report.missing == (str(config.digest),)
    assert not path.exists()


def test_concurrent_writers_never_interleave_a_version(database_url: str, tmp_path: Path) -> None:
    storage = (tmp_path / "blobs").as_uri()
    first = ocimirror.open(database_url=database_url, storage_url=storage)
    second = ocimirror.open(database_url=database_url, storage_url=storage)
    try:
        image = random_image(seed="c")
        digest = store(first, image)
        first.create_repository("foo")
        errors: list[BaseException] = []

        def writer(reg: ocimirror.Registry, prefix: str) -> None:
            try:
                repo = reg.repository("foo")
                for i in range(10):
                    repo.tag(f"{prefix}{i}", digest)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=writer, args=(first, "x")),
            threading.Thread(target=writer, args=(second, "y")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        repo = first.repository("foo")
        versions = repo.versions()
        assert [v.number for v in versions] == list(range(20, -1, -1))
        # Each version added exactly one tag to its predecessor's.
        for v in versions[:-1]:
            assert v.content_summary.present["container.tag"] == v.number
            assert len(repo.tags(v)) == v.number
    finally:
        first.close()
        second.close()
