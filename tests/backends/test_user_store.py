"""The user store conformance suite: every test runs over SQLite and PostgreSQL.

The tests speak only the :class:`~ocimirror.backends.metadata.UserStore` protocol; the fixture
is the one place that names an implementation. Hashes here are opaque strings: hashing is the
service's business (``tests/test_users.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ocimirror.backends.metadata import Grant, MetadataStore, UserRecord, UserStore
from ocimirror.errors import AlreadyExists, NotFound, UserNotFound

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(metadata_store: MetadataStore) -> UserStore:
    """The open metadata store (tests/backends/conftest.py)."""
    return metadata_store


async def test_a_new_user_has_no_grants_and_takes_the_name(store: UserStore) -> None:
    """Creating a user stores the flag and the creation time; the name is then taken."""
    before = datetime.now(UTC) - timedelta(seconds=1)
    created = await store.create_user("alice", password_hash="h1", admin=True)
    assert (created.username, created.admin, created.grants) == ("alice", True, ())
    assert created.created > before and created.created.tzinfo is not None
    assert await store.get_user("alice") == created
    with pytest.raises(AlreadyExists):
        await store.create_user("alice", password_hash="h2")


async def test_the_password_hash_is_read_apart_from_the_record(store: UserStore) -> None:
    """The hash is not in the record (nor its repr); it is read by name, None if unknown."""
    record = await store.create_user("alice", password_hash="secret-hash")
    assert "secret-hash" not in repr(record) and "secret-hash" not in str(record.to_json())
    assert await store.get_password_hash("alice") == "secret-hash"
    assert await store.get_password_hash("bob") is None


async def test_users_are_listed_by_name_with_their_grants(store: UserStore) -> None:
    """List sorts users by name, each with their grants sorted by pattern."""
    for name in ("carol", "alice", "bob"):
        await store.create_user(name, password_hash="h")
    await store.set_grant("bob", "team/*", "push")
    await store.set_grant("bob", "app", "pull")
    await store.set_grant("alice", "lib/*", "pull")
    listed = await store.list_users()
    assert [u.username for u in listed] == ["alice", "bob", "carol"]
    assert [u.grants for u in listed] == [
        (Grant(pattern="lib/*", role="pull"),),
        (Grant(pattern="app", role="pull"), Grant(pattern="team/*", role="push")),
        (),
    ]


async def test_a_grant_on_the_same_pattern_replaces_the_role(store: UserStore) -> None:
    """One role per pattern: granting again changes it."""
    await store.create_user("alice", password_hash="h")
    await store.set_grant("alice", "team/*", "pull")
    updated = await store.set_grant("alice", "team/*", "push")
    assert updated.grants == (Grant(pattern="team/*", role="push"),)
    assert (await store.get_user("alice")).grants == updated.grants


async def test_revoking_a_grant_removes_only_that_pattern(store: UserStore) -> None:
    """Revoke deletes one grant; revoking one that is not there is NotFound."""
    await store.create_user("alice", password_hash="h")
    await store.set_grant("alice", "a", "pull")
    await store.set_grant("alice", "b", "push")
    after = await store.delete_grant("alice", "a")
    assert after.grants == (Grant(pattern="b", role="push"),)
    with pytest.raises(NotFound):
        await store.delete_grant("alice", "a")


async def test_update_changes_the_hash_and_the_admin_flag(store: UserStore) -> None:
    """None keeps a field; each given field changes alone."""
    await store.create_user("alice", password_hash="old")
    promoted = await store.update_user("alice", admin=True)
    assert promoted.admin and await store.get_password_hash("alice") == "old"
    await store.update_user("alice", password_hash="new")
    assert await store.get_password_hash("alice") == "new"
    assert (await store.get_user("alice")).admin
    assert await store.update_user("alice") == await store.get_user("alice")


async def test_deleting_a_user_deletes_their_grants(store: UserStore) -> None:
    """After delete the name is free again, and a new user of that name has no grants."""
    await store.create_user("alice", password_hash="h")
    await store.set_grant("alice", "team/*", "push")
    await store.delete_user("alice")
    with pytest.raises(UserNotFound):
        await store.get_user("alice")
    assert await store.list_users() == []
    again = await store.create_user("alice", password_hash="h")
    assert again.grants == ()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_user("nobody"),
        lambda s: s.update_user("nobody", admin=True),
        lambda s: s.update_user("nobody"),
        lambda s: s.set_grant("nobody", "a", "pull"),
        lambda s: s.delete_grant("nobody", "a"),
        lambda s: s.delete_user("nobody"),
    ],
    ids=["get", "update", "update-nothing", "grant", "revoke", "delete"],
)
async def test_every_operation_on_an_unknown_user_is_user_not_found(
    store: UserStore, call: object
) -> None:
    """A name that no user has is UserNotFound, whatever the operation."""
    with pytest.raises(UserNotFound):
        await call(store)  # type: ignore[operator]


async def test_a_record_is_a_frozen_value(store: UserStore) -> None:
    """Records compare by value and cannot be changed."""
    record = await store.create_user("alice", password_hash="h")
    assert isinstance(record, UserRecord)
    with pytest.raises(AttributeError):
        record.admin = True  # type: ignore[misc]
