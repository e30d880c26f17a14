"""Users of the registry API: accounts, passwords (argon2id hashes), grants on base-path
patterns, login, the registry's methods, the blocking facade and the ``user`` commands."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, profiles

import ocimirror
import ocimirror.users
from ocimirror import AsyncRegistry
from ocimirror.backends.metadata import Grant, UserRecord
from ocimirror.cli import main
from ocimirror.errors import AlreadyExists, InvalidError, InvalidName, NotFound, UserNotFound
from ocimirror.users import ACTIONS, Users, allowed_actions

pytestmark = pytest.mark.anyio

SECRET = "correct horse battery staple"

CHEAP = PasswordHasher.from_parameters(profiles.CHEAPEST)


class CountingHasher(PasswordHasher):
    """A password hasher that notes each verification in ``calls``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.calls.append("verify")
        return super().verify(hash, password)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cheapest argon2id parameters, so tests do not spend a fifth of a second a hash."""
    monkeypatch.setattr(ocimirror.users, "default_hasher", lambda: CHEAP)


@pytest.fixture
async def registry(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncRegistry]:
    """An async registry over each metadata backend."""
    reg = await AsyncRegistry.open(
        database_url=database_url, storage_url=(tmp_path / "blobs").as_uri()
    )
    try:
        yield reg
    finally:
        await reg.close()


def user(*grants: tuple[str, str], admin: bool = False) -> UserRecord:
    """A user record with ``grants`` as (pattern, role)."""
    from datetime import UTC, datetime

    return UserRecord(
        username="u",
        admin=admin,
        created=datetime.now(UTC),
        grants=tuple(Grant(pattern=p, role=r) for p, r in grants),  # type: ignore[arg-type]
    )


# -- what a grant allows --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grants", "name", "expected"),
    [
        ([("team/app", "pull")], "team/app", {"pull"}),
        ([("team/app", "push")], "team/app", {"pull", "push", "delete"}),
        ([("team/*", "pull")], "team/app", {"pull"}),
        ([("team/*", "pull")], "team/app/sub", {"pull"}),  # '*' spans '/', as in tag filters
        ([("team/*", "pull")], "team", set()),
        ([("team/*", "pull")], "other/app", set()),
        ([("team/ap?", "push")], "team/app", {"pull", "push", "delete"}),
        ([("TEAM/*", "pull")], "team/app", set()),  # case matters
        ([("*", "pull"), ("team/*", "push")], "team/app", {"pull", "push", "delete"}),
        ([("*", "pull"), ("team/*", "push")], "lib/x", {"pull"}),
        ([], "team/app", set()),
    ],
)
def test_allowed_actions_follow_the_patterns_that_match_the_whole_name(
    grants: list[tuple[str, str]], name: str, expected: set[str]
) -> None:
    """Each matching grant adds its role's actions; push implies pull and delete."""
    assert allowed_actions(user(*grants), name) == expected


def test_an_admin_may_do_everything_and_nobody_may_do_nothing() -> None:
    """An admin gets every action on any name; no user, no action."""
    assert allowed_actions(user(admin=True), "anything/at/all") == ACTIONS
    assert allowed_actions(None, "team/app") == frozenset()


# -- the service -------------------------------------------------------------------------------


async def test_a_password_is_stored_as_an_argon2id_hash(
    registry: AsyncRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default hasher the stored hash is argon2id; the password is nowhere in it."""
    monkeypatch.setattr(ocimirror.users, "default_hasher", PasswordHasher)
    service = Users(registry.metadata)
    await service.create("alice", password=SECRET)
    stored = await registry.metadata.get_password_hash("alice")
    assert stored is not None and stored.startswith("$argon2id$") and SECRET not in stored
    assert await service.authenticate("alice", SECRET) is not None


async def test_authenticate_returns_the_user_only_for_their_password(
    registry: AsyncRegistry,
) -> None:
    """The right password gives the record with its grants; anything else gives None."""
    await registry.create_user("alice", password=SECRET)
    await registry.grant("alice", "team/*", "push")
    found = await registry.authenticate("alice", SECRET)
    assert found is not None and found.username == "alice"
    assert found.grants == (Grant(pattern="team/*", role="push"),)
    for username, password in [
        ("alice", "wrong"),
        ("alice", ""),
        ("alice", SECRET.upper()),
        ("Alice", SECRET),
        ("bob", SECRET),
        ("not a name", SECRET),
        ("alice", "x" * 5000),
    ]:
        assert await registry.authenticate(username, password) is None, (username, password)


async def test_an_unknown_user_costs_a_verification_too(registry: AsyncRegistry) -> None:
    """Timing does not tell which usernames exist: unknown names are verified against a dummy
    hash, as known ones against theirs."""
    hasher = CountingHasher.from_parameters(profiles.CHEAPEST)
    calls = hasher.calls
    service = Users(registry.metadata, hasher=hasher)
    await service.create("alice", password=SECRET)
    assert await service.authenticate("nobody", SECRET) is None
    assert await service.authenticate("alice", "wrong") is None
    assert await service.authenticate("not:a:name", SECRET) is None
    assert calls == ["verify"] * 3


async def test_a_login_verified_a_moment_ago_is_not_hashed_again(registry: AsyncRegistry) -> None:
    """``/token`` is asked again and again by one client: argon2 runs once per password per
    process and window; a wrong password, a changed password or a deleted user still fail."""
    hasher = CountingHasher.from_parameters(profiles.CHEAPEST)
    calls = hasher.calls
    service = Users(registry.metadata, hasher=hasher)
    await service.create("alice", password=SECRET)
    for _ in range(5):
        assert await service.authenticate("alice", SECRET) is not None
    assert calls == ["verify"]
    assert await service.authenticate("alice", "wrong") is None
    assert calls == ["verify"] * 2
    await service.update("alice", password="new password")
    assert await service.authenticate("alice", SECRET) is None
    assert await service.authenticate("alice", "new password") is not None
    await service.delete("alice")
    assert await service.authenticate("alice", "new password") is None


async def test_a_remembered_login_expires(registry: AsyncRegistry) -> None:
    hasher = CountingHasher.from_parameters(profiles.CHEAPEST)
    calls = hasher.calls
    service = Users(registry.metadata, hasher=hasher, remember=0.0)
    await service.create("alice", password=SECRET)
    assert await service.authenticate("alice", SECRET) is not None
    assert await service.authenticate("alice", SECRET) is not None
    assert calls == ["verify", "verify"]


async def test_a_hash_with_old_parameters_is_rehashed_at_login(registry: AsyncRegistry) -> None:
    """A hash made with other argon2 parameters still verifies, and is replaced by one with the
    current parameters."""
    old = Users(registry.metadata, hasher=CHEAP)
    await old.create("alice", password=SECRET)
    current = PasswordHasher.from_parameters(dataclasses.replace(profiles.CHEAPEST, time_cost=2))
    assert await Users(registry.metadata, hasher=current).authenticate("alice", SECRET)
    stored = await registry.metadata.get_password_hash("alice")
    assert stored is not None and not current.check_needs_rehash(stored)


@pytest.mark.parametrize(
    "username",
    ["", "-alice", "alice-", "a:b", "a b", "a/b", "ålice", "a" * 256, "a\n", "a\x00b"],
)
async def test_a_username_must_be_letters_digits_and_dots_dashes_at(
    registry: AsyncRegistry, username: str
) -> None:
    """Invalid usernames are refused before anything is stored."""
    with pytest.raises(InvalidError):
        await registry.create_user(username, password=SECRET)
    assert await registry.users() == []


@pytest.mark.parametrize("username", ["a", "alice", "Alice.Smith", "ci-bot_2", "me@example.com"])
async def test_these_usernames_are_fine(registry: AsyncRegistry, username: str) -> None:
    """Letters, digits and ``._@-``, starting and ending with a letter or digit."""
    assert (await registry.create_user(username, password=SECRET)).username == username


async def test_a_password_must_be_1_to_1024_characters_and_is_never_quoted(
    registry: AsyncRegistry,
) -> None:
    """Empty and overlong passwords are refused; the message does not repeat them."""
    with pytest.raises(InvalidError):
        await registry.create_user("alice", password="")
    long_secret = "s3cr3t" * 200
    with pytest.raises(InvalidError) as caught:
        await registry.create_user("alice", password=long_secret)
    assert "s3cr3t" not in str(caught.value)


async def test_a_taken_name_is_already_exists(registry: AsyncRegistry) -> None:
    """Usernames are unique."""
    await registry.create_user("alice", password=SECRET)
    with pytest.raises(AlreadyExists):
        await registry.create_user("alice", password="other")


async def test_grant_and_revoke_change_what_a_user_may_do(registry: AsyncRegistry) -> None:
    """A grant adds a pattern with its role; granting again changes the role; revoke removes
    it, and revoking it again is NotFound."""
    await registry.create_user("alice", password=SECRET)
    await registry.grant("alice", "team/*", "pull")
    assert allowed_actions(await registry.user("alice"), "team/app") == {"pull"}
    await registry.grant("alice", "team/*", "push")
    assert allowed_actions(await registry.user("alice"), "team/app") == ACTIONS
    after = await registry.revoke("alice", "team/*")
    assert after.grants == () and allowed_actions(after, "team/app") == set()
    with pytest.raises(NotFound):
        await registry.revoke("alice", "team/*")


@pytest.mark.parametrize(
    ("pattern", "role", "error"),
    [
        ("team/*", "admin", InvalidError),
        ("team/*", "PUSH", InvalidError),
        ("", "pull", InvalidError),
        ("team /*", "pull", InvalidError),
        ("Team/App", "pull", InvalidName),  # no wildcard: it must be a valid base path
        ("team//app", "pull", InvalidName),
        ("x" * 256, "pull", InvalidError),
    ],
)
async def test_a_grant_needs_a_role_and_a_pattern_that_can_match(
    registry: AsyncRegistry, pattern: str, role: str, error: type[Exception]
) -> None:
    """Bad roles and patterns are refused; nothing is stored."""
    await registry.create_user("alice", password=SECRET)
    with pytest.raises(error):
        await registry.grant("alice", pattern, role)
    assert (await registry.user("alice")).grants == ()


async def test_update_changes_the_password_and_the_admin_flag(registry: AsyncRegistry) -> None:
    """After a password change only the new password works; the admin flag toggles."""
    await registry.create_user("alice", password=SECRET)
    await registry.update_user("alice", password="new password")
    assert await registry.authenticate("alice", SECRET) is None
    assert await registry.authenticate("alice", "new password") is not None
    assert (await registry.update_user("alice", admin=True)).admin
    assert not (await registry.update_user("alice", admin=False)).admin


async def test_a_deleted_user_cannot_log_in(registry: AsyncRegistry) -> None:
    """Delete forgets the user and their grants; their password no longer works."""
    await registry.create_user("alice", password=SECRET)
    await registry.grant("alice", "team/*", "push")
    await registry.delete_user("alice")
    assert await registry.authenticate("alice", SECRET) is None
    with pytest.raises(UserNotFound):
        await registry.user("alice")
    with pytest.raises(UserNotFound):
        await registry.delete_user("alice")


async def test_a_password_is_never_in_a_repr_json_or_log_line(
    registry: AsyncRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything a user operation shows or logs, at every level, is free of the password and
    of its hash."""
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []
    record = await registry.create_user("alice", password=SECRET, admin=True)
    shown += [repr(record), str(record), json.dumps(record.to_json())]
    shown.append(repr(await registry.grant("alice", "team/*", "push")))
    shown.append(repr(await registry.authenticate("alice", SECRET)))
    await registry.authenticate("alice", SECRET + "!")
    await registry.authenticate(SECRET, SECRET)  # a password typed as the username
    await registry.update_user("alice", password=SECRET + "2")
    shown += [repr(u) for u in await registry.users()]
    stored = await registry.metadata.get_password_hash("alice")
    assert stored is not None
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("ocimirror")]
    everything = "\n".join([*shown, *ours])
    assert SECRET not in everything and stored not in everything and "$argon2" not in everything
    assert SECRET not in caplog.text  # nor in any other library's log line
    assert any("alice" in line for line in ours)  # the log does say who


# -- the blocking facade -----------------------------------------------------------------------


def test_the_blocking_registry_manages_users(registry_blocking: ocimirror.Registry) -> None:
    """Every user method has its blocking twin."""
    reg = registry_blocking
    assert reg.create_user("alice", password=SECRET).username == "alice"
    reg.grant("alice", "team/*", "pull")
    assert [u.username for u in reg.users()] == ["alice"]
    assert reg.user("alice").grants == (Grant(pattern="team/*", role="pull"),)
    assert reg.authenticate("alice", SECRET) is not None
    assert reg.update_user("alice", admin=True).admin
    assert reg.revoke("alice", "team/*").grants == ()
    reg.delete_user("alice")
    assert reg.users() == []


@pytest.fixture
def registry_blocking(database_url: str, tmp_path: Path) -> Iterator[ocimirror.Registry]:
    """A blocking registry over each metadata backend."""
    reg = ocimirror.open(database_url=database_url, storage_url=(tmp_path / "blobs").as_uri())
    try:
        yield reg
    finally:
        reg.close()


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in a fresh home; returns (exit status, parsed stdout, stderr)."""

    def run(*argv: str) -> tuple[int, Any, str]:
        status = main(["--home", str(tmp_path / "home"), *argv])
        out, err = capsys.readouterr()
        assert SECRET not in out + err and "$argon2" not in out + err
        return status, (json.loads(out) if out.strip() else None), err

    return run


def test_the_user_commands_manage_users_and_grants(cli: Any) -> None:
    """create, grant, show, list, revoke, update and destroy, as JSON without any secret."""
    status, created, _ = cli("user", "create", "--username", "alice", "--password", SECRET)
    assert status == 0
    assert created == {
        "username": "alice",
        "admin": False,
        "created": created["created"],
        "grants": [],
    }
    status, granted, _ = cli(
        "user", "grant", "--username", "alice", "--base-path", "team/*", "--role", "push"
    )
    assert granted["grants"] == [{"base_path": "team/*", "role": "push"}]
    assert cli("user", "show", "--username", "alice")[1] == granted
    assert [u["username"] for u in cli("user", "list")[1]] == ["alice"]
    status, revoked, _ = cli("user", "revoke", "--username", "alice", "--base-path", "team/*")
    assert revoked["grants"] == []
    assert cli("user", "update", "--username", "alice", "--admin")[1]["admin"] is True
    assert cli("user", "destroy", "--username", "alice") == (0, None, "")
    assert cli("user", "list")[1] == []


def test_create_reads_the_password_from_stdin(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--password-stdin`` reads one line (its newline is not part of the password)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    status, created, _ = cli("user", "create", "--username", "root", "--password-stdin", "--admin")
    assert status == 0 and created["admin"] is True

    async def check() -> UserRecord | None:
        async with await AsyncRegistry.open(home=tmp_path / "home") as reg:
            return await reg.authenticate("root", SECRET)

    import asyncio

    assert asyncio.run(check()) is not None


def test_create_needs_a_password_and_says_so(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No password at all is a usage error (2); an empty stdin too; both options are refused by
    the parser."""
    status, _, err = cli("user", "create", "--username", "alice")
    assert status == 2 and "--password" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli("user", "create", "--username", "alice", "--password-stdin")[0] == 2
    with pytest.raises(SystemExit) as exited:
        cli("user", "create", "--username", "a", "--password", "p", "--password-stdin")
    assert exited.value.code == 2


def test_verbose_logs_show_no_password_hash(cli: Any) -> None:
    """Even at ``-vv`` (debug), stderr carries neither the password nor its hash: the SQLite
    driver's debug lines, which print SQL parameters, stay quiet."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()  # so the CLI installs its own handler, as it does outside pytest
    try:
        status, _, err = cli("-vv", "user", "create", "--username", "alice", "--password", SECRET)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("aiosqlite").setLevel(logging.NOTSET)
    assert status == 0 and "created user 'alice'" in err and "$argon2" not in err


def test_user_errors_are_one_line(cli: Any) -> None:
    """Unknown users, bad roles and taken names fail with one line and status 1 (or 2)."""
    status, _, err = cli("user", "show", "--username", "nobody")
    assert status == 1 and err.strip() == "Error: no user named 'nobody'"
    cli("user", "create", "--username", "alice", "--password", SECRET)
    status, _, err = cli("user", "create", "--username", "alice", "--password", SECRET)
    assert status == 1 and "already exists" in err and err.count("\n") == 1
    status, _, err = cli(
        "user", "grant", "--username", "alice", "--base-path", "Bad/Name", "--role", "pull"
    )
    assert status == 1 and "lowercase" in err
    with pytest.raises(SystemExit):
        cli("user", "grant", "--username", "alice", "--base-path", "a", "--role", "admin")
