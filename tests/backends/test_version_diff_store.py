"""``diff_versions`` of the metadata store, over SQLite and PostgreSQL: for every pair of
versions it equals the set difference of what each version lists (``list_tags``,
``iter_content``), however far apart, in either direction, across a squashed version."""

from __future__ import annotations

import itertools

import pytest
from test_metadata_store import blob, recorded_image, tagged

from ocimirror.backends.metadata import (
    CONTENT_TYPES,
    ContentBatch,
    ContentType,
    MetadataStore,
    SignatureRecord,
)
from ocimirror.core.digest import Digest
from ocimirror.errors import RepositoryNotFound, VersionNotFound

pytestmark = pytest.mark.anyio

Items = dict[str, str | None]


@pytest.fixture
def store(metadata_store: MetadataStore) -> MetadataStore:
    """The open metadata store (tests/backends/conftest.py)."""
    return metadata_store


async def held(store: MetadataStore, number: int) -> dict[ContentType, Items]:
    """Everything version ``number`` of ``r`` holds, by the plain listing methods."""
    items: dict[ContentType, Items] = {}
    for ct in CONTENT_TYPES:
        if ct == "container.tag":
            items[ct] = dict(await store.list_tags("r", number))
        else:
            items[ct] = {k: None async for k in store.iter_content("r", number, ct)}
    return items


def truth(was: Items, now: Items) -> tuple[Items, Items]:
    """(only in was, only in now), a key with another value (a moved tag) in both."""
    return (
        {k: v for k, v in sorted(was.items()) if k not in now or now[k] != v},
        {k: v for k, v in sorted(now.items()) if k not in was or was[k] != v},
    )


async def test_diff_versions_is_the_set_difference_of_any_two_versions(
    store: MetadataStore,
) -> None:
    await store.create_repository("r")
    a = await recorded_image(store, "a", blob("a1"), blob("shared"))
    b = await recorded_image(store, "b", blob("b1"), blob("shared"))
    c = await recorded_image(store, "c", blob("c1"))
    data = b"signature of a"
    sig = SignatureRecord(
        digest=str(Digest.of(data)),
        manifest_digest=a,
        name="a@one",
        key_id=None,
        sig_type="atomic",
        data=data,
    )
    batch = ContentBatch()
    batch.add_signature(sig)
    assert await store.record_content(batch) == {}

    assert await tagged(store, "r", {"a": a, "b": b}) == 1
    async with store.new_version("r") as builder:  # 2: a moves to b's image; a signature
        await builder.remove("container.tag", "a")
        await builder.add("container.tag", "a", b)
        await builder.add("container.signature", sig.digest)
    async with store.new_version("r") as builder:  # 3: b goes
        await builder.remove("container.tag", "b")
    assert await tagged(store, "r", {"b": b}) == 4  # b comes back, as it was in 2
    async with store.new_version("r") as builder:  # 5: image a and its signature go
        await builder.remove("container.signature", sig.digest)
        await builder.remove("container.manifest", a)
        await builder.remove_many("container.blob", [blob("a1"), blob("a-config")])
    assert await tagged(store, "r", {"c": c, "a": a}) == 6  # a comes back, moved again
    await store.delete_version("r", 3)  # squashed into 4

    numbers = sorted(v.number for v in await store.list_versions("r"))
    assert numbers == [0, 1, 2, 4, 5, 6]
    contents = {n: await held(store, n) for n in numbers}
    for base, number in itertools.product(numbers, repeat=2):
        diff = await store.diff_versions("r", base, number)
        expected = {ct: truth(contents[base][ct], contents[number][ct]) for ct in CONTENT_TYPES}
        assert diff == expected, (base, number)

    # Removed and added again the same: no change; a tag and its image from 1 to 6.
    assert await store.diff_versions("r", 2, 4) == {ct: ({}, {}) for ct in CONTENT_TYPES}
    one_to_six = await store.diff_versions("r", 1, 6)
    assert one_to_six["container.tag"] == ({}, {"c": c})
    assert one_to_six["container.blob"] == ({}, {blob("c1"): None, blob("c-config"): None})
    assert (await store.diff_versions("r", 1, 2))["container.tag"] == ({"a": a}, {"a": b})
    assert (await store.diff_versions("r", 4, 1))["container.signature"] == (
        {sig.digest: None},
        {},
    )

    for base, number in ((3, 4), (4, 3), (0, 99)):
        with pytest.raises(VersionNotFound):
            await store.diff_versions("r", base, number)
    with pytest.raises(RepositoryNotFound):
        await store.diff_versions("nope", 0, 0)
