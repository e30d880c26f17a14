"""The metadata store conformance suite: every test runs over SQLite and PostgreSQL.

The tests speak only the protocols of :mod:`ocimirror.backends.metadata`, as the services do;
the fixture is the one place that names an implementation.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ocimirror.backends.metadata import (
    ContentBatch,
    ManifestRecord,
    MetadataStore,
    Reference,
    SignatureRecord,
)
from ocimirror.core.digest import Digest
from ocimirror.errors import (
    AlreadyExists,
    BlobNotFound,
    Conflict,
    DistributionNotFound,
    IncompleteContent,
    LeaseLost,
    ManifestNotFound,
    RemoteNotFound,
    RepositoryBusy,
    RepositoryNotFound,
    VersionNotFound,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(metadata_store: MetadataStore) -> MetadataStore:
    """The open metadata store (tests/backends/conftest.py)."""
    return metadata_store


# -- content builders --------------------------------------------------------------------------


def blob(name: str) -> str:
    """A blob digest named after ``name``."""
    return str(Digest.of(f"blob {name}".encode()))


def manifest(name: str, refs: list[Reference]) -> tuple[ManifestRecord, list[Reference]]:
    """A manifest record (its bytes name its references) and its references."""
    data = json.dumps({"name": name, "refs": [r[0] for r in refs]}).encode()
    record = ManifestRecord(
        digest=str(Digest.of(data)),
        media_type="application/vnd.oci.image.manifest.v1+json",
        data=data,
        artifact_type=None,
        subject=None,
    )
    return record, refs


def image(name: str, *layers: str) -> tuple[ManifestRecord, list[Reference]]:
    """An image manifest referencing a config and ``layers`` blobs."""
    return manifest(
        name, [(blob(f"{name}-config"), "blob", None)] + [(b, "blob", None) for b in layers]
    )


def with_blobs(batch: ContentBatch, entry: tuple[ManifestRecord, list[Reference]]) -> str:
    """Add a manifest and each blob it needs to a batch; its digest."""
    record, refs = entry
    for child, kind, _ in refs:
        if kind == "blob":
            batch.add_blob(child, 10, "application/octet-stream")
    batch.add_manifest(record, refs)
    return record.digest


async def recorded_image(store: MetadataStore, name: str, *layers: str) -> str:
    """An image recorded with its blobs; its digest."""
    batch = ContentBatch()
    digest = with_blobs(batch, image(name, *layers))
    assert await store.record_content(batch) == {}
    return digest


async def tagged(store: MetadataStore, repository: str, tags: dict[str, str]) -> int:
    """Publish tags with their manifests' closures; the new version's number."""
    async with store.new_version(repository) as builder:
        closure = await builder.closure(list(tags.values()))
        await builder.add_many("container.blob", dict.fromkeys(closure.blobs))
        await builder.add_many("container.manifest", dict.fromkeys(closure.manifests))
        await builder.add_many("container.tag", tags)
    assert builder.result is not None
    return builder.result.number


# -- repositories and versions ----------------------------------------------------------------


async def test_a_new_repository_has_an_empty_complete_version_0(store: MetadataStore) -> None:
    """Creating a repository makes version 0, empty; its name is then taken."""
    record = await store.create_repository("r", description="d", retain_repo_versions=3)
    assert (record.name, record.latest_version, record.mirror) == ("r", 0, False)
    version = await store.get_version("r")
    assert version.number == 0 and version.summary["present"] == {}
    with pytest.raises(AlreadyExists):
        await store.create_repository("r")


async def test_repositories_are_listed_by_name_updated_and_deleted(
    store: MetadataStore,
) -> None:
    """List sorts by name; update changes fields; delete forgets the repository."""
    for name in ("b", "a", "c"):
        await store.create_repository(name)
    assert [r.name for r in await store.list_repositories()] == ["a", "b", "c"]
    updated = await store.update_repository("a", description="new")
    assert updated.description == "new"
    await store.delete_repository("b")
    with pytest.raises(RepositoryNotFound):
        await store.get_repository("b")


async def test_the_mirror_flag_is_not_a_plain_repository_update(store: MetadataStore) -> None:
    """The mirror flag changes only in a version's transaction, never by update."""
    await store.create_repository("r")
    with pytest.raises(TypeError):
        await store.update_repository("r", mirror=True)
    assert not (await store.get_repository("r")).mirror


async def test_set_mirror_persists_without_content_changes(store: MetadataStore) -> None:
    """A version block that only marks the repository a mirror commits the flag, no version."""
    await store.create_repository("r")
    async with store.new_version("r") as builder:
        await builder.set_mirror(True)
    assert builder.result is not None and builder.result.number == 0
    assert (await store.get_repository("r")).mirror


async def test_set_mirror_rolls_back_with_its_version(store: MetadataStore) -> None:
    """A failed version block leaves the mirror flag as it was."""
    await store.create_repository("r")
    with pytest.raises(RuntimeError):
        async with store.new_version("r") as builder:
            await builder.set_mirror(True)
            raise RuntimeError("boom")
    assert not (await store.get_repository("r")).mirror


async def test_a_version_block_that_changes_nothing_makes_no_version(
    store: MetadataStore,
) -> None:
    """No change, no version; the result is the current latest."""
    await store.create_repository("r")
    digest = await recorded_image(store, "a", blob("a1"))
    await tagged(store, "r", {"v1": digest})
    async with store.new_version("r") as builder:
        await builder.add("container.tag", "v1", digest)
    assert builder.result is not None and builder.result.number == 1
    assert [v.number for v in await store.list_versions("r")] == [1, 0]


async def test_a_version_counts_what_it_added_removed_and_holds(store: MetadataStore) -> None:
    """The summary of each version: added and removed relative to the previous, and present."""
    await store.create_repository("r")
    a = await recorded_image(store, "a", blob("shared"))
    b = await recorded_image(store, "b", blob("shared"))
    await tagged(store, "r", {"a": a})
    version = await store.get_version("r", 1)
    assert version.summary["added"] == {
        "container.blob": 2,
        "container.manifest": 1,
        "container.tag": 1,
    }
    await tagged(store, "r", {"b": b})
    assert (await store.get_version("r", 2)).summary["present"] == {
        "container.blob": 3,
        "container.manifest": 2,
        "container.tag": 2,
    }


async def test_tags_list_sorted_and_paginated_in_each_version(store: MetadataStore) -> None:
    """list_tags sorts by name (byte order), pages with last/n, and sees only its version."""
    await store.create_repository("r")
    digest = await recorded_image(store, "a", blob("a1"))
    await tagged(store, "r", {"b": digest, "a": digest, "B": digest})
    await tagged(store, "r", {"c": digest})
    assert [t for t, _ in await store.list_tags("r", 1)] == ["B", "a", "b"]
    assert [t for t, _ in await store.list_tags("r", 2, last="a", n=2)] == ["b", "c"]
    assert await store.get_tag("r", 1, "c") is None
    assert await store.get_tag("r", 2, "c") == digest
    assert await store.has_content("r", 1, "container.manifest", digest)
    keys = [k async for k in store.iter_content("r", 2, "container.blob")]
    assert keys == sorted([blob("a1"), blob("a-config")])


async def test_deleting_the_latest_version_never_reuses_its_number(
    store: MetadataStore,
) -> None:
    """The previous version becomes latest; the next version gets a new number."""
    await store.create_repository("r")
    a = await recorded_image(store, "a", blob("a1"))
    await tagged(store, "r", {"a": a})
    await tagged(store, "r", {"b": a})
    await store.delete_version("r", 2)
    assert (await store.get_repository("r")).latest_version == 1
    assert await tagged(store, "r", {"c": a}) == 3
    with pytest.raises(VersionNotFound):
        await store.get_version("r", 2)


async def test_deleting_a_middle_version_squashes_it_into_the_next(
    store: MetadataStore,
) -> None:
    """What only version 1 held disappears; version 2 keeps its content and counts."""
    await store.create_repository("r")
    a = await recorded_image(store, "a", blob("a1"))
    await tagged(store, "r", {"a": a})
    async with store.new_version("r") as builder:
        await builder.remove("container.tag", "a")
        await builder.add("container.tag", "b", a)
    await store.delete_version("r", 1)
    assert [v.number for v in await store.list_versions("r")] == [2, 0]
    assert dict(await store.list_tags("r", 2)) == {"b": a}
    summary = (await store.get_version("r", 2)).summary
    assert summary["added"]["container.tag"] == 1 and not summary["removed"]


async def test_the_only_version_and_a_pinned_version_cannot_be_deleted(
    store: MetadataStore,
) -> None:
    """Deleting is refused for the last remaining version and for a served pinned one."""
    await store.create_repository("r")
    with pytest.raises(Conflict):
        await store.delete_version("r", 0)
    a = await recorded_image(store, "a", blob("a1"))
    await tagged(store, "r", {"a": a})
    await store.create_distribution("d", "pinned/r", repository="r", repository_version=1)
    with pytest.raises(Conflict):
        await store.delete_version("r", 1)


async def test_retention_keeps_the_newest_versions(store: MetadataStore) -> None:
    """With retain_repo_versions=2 only the two newest versions remain."""
    await store.create_repository("r", retain_repo_versions=2)
    a = await recorded_image(store, "a", blob("a1"))
    for i in range(4):
        await tagged(store, "r", {f"t{i}": a})
    assert [v.number for v in await store.list_versions("r")] == [4, 3]


async def test_a_version_can_start_from_an_older_one(store: MetadataStore) -> None:
    """base_version makes the new version start from that version's content."""
    await store.create_repository("r")
    a = await recorded_image(store, "a", blob("a1"))
    await tagged(store, "r", {"a": a})
    await tagged(store, "r", {"b": a})
    async with store.new_version("r", base_version=1) as builder:
        await builder.add("container.tag", "c", a)
    assert dict(await store.list_tags("r", 3)) == {"a": a, "c": a}


# -- the recording rule ----------------------------------------------------------------------


async def test_a_manifest_is_recorded_with_its_blobs(store: MetadataStore) -> None:
    """Blobs and the manifest that needs them, in one batch: all recorded, references kept."""
    batch = ContentBatch()
    digest = with_blobs(batch, image("a", blob("a1"), blob("a2")))
    assert await store.record_content(batch) == {}
    assert await store.existing_manifests([digest]) == {digest}
    refs = await store.manifest_references(digest)
    assert refs == [(blob("a-config"), "blob"), (blob("a1"), "blob"), (blob("a2"), "blob")]
    record = await store.get_blob(blob("a1"))
    assert record is not None and record.size == 10


async def test_a_manifest_whose_blob_is_not_recorded_is_refused(store: MetadataStore) -> None:
    """The manifest is not recorded; the rejection names the missing blob; the rest is."""
    batch = ContentBatch()
    record, refs = image("a", blob("a1"))
    batch.add_blob(blob("a-config"), 10)
    batch.add_manifest(record, refs)
    good = with_blobs(batch, image("b", blob("b1")))
    rejected = await store.record_content(batch)
    assert set(rejected) == {record.digest}
    assert (rejected[record.digest].missing, rejected[record.digest].kind) == (blob("a1"), "blob")
    assert await store.existing_manifests([record.digest, good]) == {good}


async def test_an_index_is_recorded_with_children_from_the_same_batch(
    store: MetadataStore,
) -> None:
    """Order in the batch does not matter: the index comes first, its children after."""
    batch = ContentBatch()
    children = [image(f"c{i}", blob(f"c{i}-layer")) for i in range(2)]
    index = manifest("index", [(c[0].digest, "manifest", {"os": "linux"}) for c in children])
    batch.add_manifest(*index)
    for child in children:
        with_blobs(batch, child)
    assert await store.record_content(batch) == {}
    assert index[0].digest in await store.existing_manifests([index[0].digest])


async def test_an_index_whose_child_is_refused_is_refused_too(store: MetadataStore) -> None:
    """A child missing its layer is refused, and so is every index above it."""
    batch = ContentBatch()
    broken = image("broken", blob("never"))
    batch.add_blob(blob("broken-config"), 10)
    batch.add_manifest(*broken)
    fine = image("fine", blob("fine-layer"))
    with_blobs(batch, fine)
    index = manifest(
        "index", [(broken[0].digest, "manifest", None), (fine[0].digest, "manifest", None)]
    )
    batch.add_manifest(*index)
    outer = manifest("outer", [(index[0].digest, "manifest", None)])
    batch.add_manifest(*outer)
    rejected = await store.record_content(batch)
    assert set(rejected) == {broken[0].digest, index[0].digest, outer[0].digest}
    assert rejected[index[0].digest].missing == broken[0].digest
    assert await store.existing_manifests([fine[0].digest]) == {fine[0].digest}


async def test_a_child_recorded_earlier_counts(store: MetadataStore) -> None:
    """References to content recorded by an earlier batch are satisfied."""
    child = await recorded_image(store, "child", blob("child-layer"))
    batch = ContentBatch()
    batch.add_manifest(*manifest("index", [(child, "manifest", None)]))
    assert await store.record_content(batch) == {}


async def test_foreign_layers_need_no_record(store: MetadataStore) -> None:
    """A ``foreign`` reference is not required; the manifest is recorded without it."""
    batch = ContentBatch()
    record, refs = image("win")
    refs = [*refs, (blob("foreign-layer"), "foreign", None)]
    batch.add_blob(blob("win-config"), 10)
    batch.add_manifest(record, refs)
    assert await store.record_content(batch) == {}
    assert await store.get_blob(blob("foreign-layer")) is None


async def test_a_signature_needs_its_manifest(store: MetadataStore) -> None:
    """A signature of an unrecorded manifest is refused; of a recorded one, recorded."""
    digest = await recorded_image(store, "a", blob("a1"))

    def signature(target: str, name: str) -> SignatureRecord:
        data = f"sig of {target} {name}".encode()
        return SignatureRecord(
            digest=str(Digest.of(data)),
            manifest_digest=target,
            name=name,
            key_id=None,
            sig_type="atomic",
            data=data,
        )

    batch = ContentBatch()
    good, bad = signature(digest, "one"), signature(blob("nothing"), "two")
    batch.add_signature(good)
    batch.add_signature(bad)
    rejected = await store.record_content(batch)
    assert set(rejected) == {bad.digest} and rejected[bad.digest].kind == "signed"


async def test_recording_the_same_content_twice_is_harmless(store: MetadataStore) -> None:
    """Recording is idempotent: same digest, same content, one row."""
    first = await recorded_image(store, "a", blob("a1"))
    again = await recorded_image(store, "a", blob("a1"))
    assert first == again
    assert [d async for d in store.iter_manifest_digests()] == [first]
    assert len(await store.manifest_references(first)) == 2


async def test_the_closure_lists_parents_first_then_blobs(store: MetadataStore) -> None:
    """closure() walks children level by level and reports roots it does not know."""
    child = await recorded_image(store, "child", blob("layer"))
    batch = ContentBatch()
    index = manifest("index", [(child, "manifest", None)])
    batch.add_manifest(*index)
    await store.record_content(batch)
    closure = await store.closure([index[0].digest, blob("unknown")])
    assert closure.manifests == (index[0].digest, child)
    assert set(closure.blobs) == {blob("child-config"), blob("layer")}
    assert closure.missing == (blob("unknown"),)
    many = await store.references_many([index[0].digest, child])
    assert many[index[0].digest] == [(child, "manifest")]
    assert await store.known_blob_digests([blob("layer"), blob("x")]) == {blob("layer")}


async def test_orphans_go_after_their_grace_period(store: MetadataStore) -> None:
    """Content no version holds is deleted once untouched for the grace period, not before."""
    await store.create_repository("r")
    held = await recorded_image(store, "held", blob("held-layer"))
    orphan = await recorded_image(store, "orphan", blob("orphan-layer"))
    await tagged(store, "r", {"v": held})
    recent = await store.delete_orphans(datetime.now(UTC) - timedelta(hours=1))
    assert recent.manifests == 0 and recent.blobs == []
    counts = await store.delete_orphans(datetime.now(UTC) + timedelta(seconds=1))
    assert counts.manifests == 1
    assert set(counts.blobs) == {blob("orphan-config"), blob("orphan-layer")}
    assert await store.existing_manifests([held, orphan]) == {held}


# -- the publishing rule -----------------------------------------------------------------------


async def test_content_must_be_recorded_to_enter_a_version(store: MetadataStore) -> None:
    """add_many of an unrecorded blob or manifest is refused."""
    await store.create_repository("r")
    with pytest.raises(BlobNotFound):
        async with store.new_version("r") as builder:
            await builder.add_many("container.blob", {blob("nowhere"): None})
    with pytest.raises(ManifestNotFound):
        async with store.new_version("r") as builder:
            await builder.add("container.manifest", blob("nowhere"))
    assert (await store.get_repository("r")).latest_version == 0


async def test_a_tag_without_its_manifest_is_not_published(store: MetadataStore) -> None:
    """A version whose tag points at a manifest it does not hold is refused whole."""
    await store.create_repository("r")
    digest = await recorded_image(store, "a", blob("a1"))
    with pytest.raises(IncompleteContent):
        async with store.new_version("r") as builder:
            await builder.add("container.tag", "v1", digest)
    assert (await store.get_repository("r")).latest_version == 0


async def test_a_manifest_without_its_blobs_is_not_published(store: MetadataStore) -> None:
    """A version holding a manifest but not its layers is refused."""
    await store.create_repository("r")
    digest = await recorded_image(store, "a", blob("a1"))
    with pytest.raises(IncompleteContent):
        async with store.new_version("r") as builder:
            await builder.add("container.manifest", digest)
            await builder.add("container.blob", blob("a-config"))
    assert await store.list_versions("r") == [await store.get_version("r", 0)]


async def test_an_index_without_its_children_is_not_published(store: MetadataStore) -> None:
    """A version holding an index but not its child manifest is refused."""
    await store.create_repository("r")
    child = await recorded_image(store, "child", blob("layer"))
    batch = ContentBatch()
    index = manifest("index", [(child, "manifest", None)])
    batch.add_manifest(*index)
    await store.record_content(batch)
    with pytest.raises(IncompleteContent):
        async with store.new_version("r") as builder:
            await builder.add("container.manifest", index[0].digest)
            await builder.add("container.tag", "multi", index[0].digest)


async def test_removing_what_a_remaining_manifest_needs_is_refused(
    store: MetadataStore,
) -> None:
    """Taking a layer out from under a manifest the version keeps breaks the closure."""
    await store.create_repository("r")
    digest = await recorded_image(store, "a", blob("a1"))
    await tagged(store, "r", {"v1": digest})
    with pytest.raises(IncompleteContent):
        async with store.new_version("r") as builder:
            await builder.remove("container.blob", blob("a1"))
    assert dict(await store.list_tags("r", 1)) == {"v1": digest}
    assert (await store.get_repository("r")).latest_version == 1


# -- leases ------------------------------------------------------------------------------------


async def test_a_lease_is_exclusive_until_released(store: MetadataStore) -> None:
    """A second holder is refused while the lease runs, and gets it once released."""
    await store.create_repository("r")
    lease = await store.acquire_lease("r", holder="one", purpose="sync", ttl=60)
    assert (lease.repository, lease.holder, lease.purpose) == ("r", "one", "sync")
    with pytest.raises(RepositoryBusy, match="one"):
        await store.acquire_lease("r", holder="two", purpose="sync", ttl=60)
    assert await store.renew_lease("r", holder="one", ttl=60)
    await store.release_lease("r", holder="one")
    await store.acquire_lease("r", holder="two", purpose="sync", ttl=60)
    assert not await store.renew_lease("r", holder="one", ttl=60)


async def test_an_expired_or_stale_lease_is_taken_over(store: MetadataStore) -> None:
    """Expired leases and holders that is_stale declares gone do not block."""
    await store.create_repository("r")
    await store.acquire_lease("r", holder="dead", purpose="sync", ttl=-1)
    await store.acquire_lease("r", holder="alive", purpose="sync", ttl=60)
    taken = await store.acquire_lease(
        "r", holder="new", purpose="sync", ttl=60, is_stale=lambda h: h == "alive"
    )
    assert taken.holder == "new"


async def test_a_version_is_published_only_under_a_held_lease(store: MetadataStore) -> None:
    """The lease's holder is a fencing token: once another takes over, the first cannot publish."""
    await store.create_repository("r")
    digest = await recorded_image(store, "a", blob("a1"))
    mine = await store.acquire_lease("r", holder="mine", purpose="sync", ttl=60)
    async with store.new_version("r", lease=mine) as builder:
        closure = await builder.closure([digest])
        await builder.add_many("container.blob", dict.fromkeys(closure.blobs))
        await builder.add_many("container.manifest", dict.fromkeys(closure.manifests))
    await store.acquire_lease("r", holder="thief", purpose="sync", ttl=60, is_stale=lambda h: True)
    with pytest.raises(LeaseLost):
        async with store.new_version("r", lease=mine) as builder:
            await builder.add("container.tag", "v1", digest)
    assert (await store.get_repository("r")).latest_version == 1


# -- remotes and distributions -------------------------------------------------------------


async def test_remotes_are_stored_by_name(store: MetadataStore) -> None:
    """Create, read, list, replace and delete a remote's fields."""
    fields: dict[str, Any] = {"url": "https://example.test", "upstream_name": "x"}
    await store.create_remote("up", fields)
    with pytest.raises(AlreadyExists):
        await store.create_remote("up", fields)
    assert (await store.get_remote("up")).fields == fields
    await store.update_remote("up", {**fields, "upstream_name": "y"})
    assert [r.fields["upstream_name"] for r in await store.list_remotes()] == ["y"]
    await store.create_repository("r", remote="up")
    await store.delete_remote("up")
    assert (await store.get_repository("r")).remote is None
    with pytest.raises(RemoteNotFound):
        await store.get_remote("up")


async def test_distributions_serve_a_repository_or_one_version(store: MetadataStore) -> None:
    """Distributions by name or base path; a pinned version must exist; deleting the
    repository leaves the distribution serving nothing."""
    await store.create_repository("r")
    moving = await store.create_distribution("d", "lib/r", repository="r")
    assert (moving.repository, moving.repository_version) == ("r", None)
    with pytest.raises(AlreadyExists):
        await store.create_distribution("e", "lib/r", repository="r")
    with pytest.raises(VersionNotFound):
        await store.create_distribution("e", "lib/e", repository="r", repository_version=5)
    assert (await store.get_distribution(base_path="lib/r")).name == "d"
    dist, repo = await store.serving("lib/r")
    assert (dist, repo) == (moving, await store.get_repository("r"))
    await store.update_distribution("d", private=True)
    assert [d.private for d in await store.list_distributions()] == [True]
    await store.delete_repository("r")
    assert (await store.get_distribution("d")).repository is None
    assert (await store.serving("lib/r"))[1] is None
    with pytest.raises(DistributionNotFound):
        await store.serving("lib/nothing")
    await store.delete_distribution("d")
    with pytest.raises(DistributionNotFound):
        await store.get_distribution("d")
