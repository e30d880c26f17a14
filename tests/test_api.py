"""The public API: exports, configuration, value objects, async use, schema checks."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
import sqlalchemy as sa

import ocimirror
from ocimirror.backends.sql import SCHEMA_VERSION, SQLMetadataStore, normalize_url
from ocimirror.config import Config
from ocimirror.errors import AlreadyExists, InvalidError, RemoteNotFound, SchemaError


def test_every_export_exists_and_is_documented() -> None:
    for name in ocimirror.__all__:
        obj = getattr(ocimirror, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"ocimirror.{name} has no docstring"
    assert {"Repository", "Remote", "SyncPolicy", "Distribution", "open"} <= set(ocimirror.__all__)


def test_the_embedded_default_lives_in_the_home_directory(tmp_path: Path) -> None:
    config = Config.resolve(environ={"OCIMIRROR_HOME": str(tmp_path)})
    assert config.database_url == f"sqlite:///{tmp_path / 'metadata.db'}"
    assert config.storage_url == (tmp_path / "storage").as_uri()
    assert config.embedded


def test_a_home_is_unused_until_its_sqlite_file_exists(tmp_path: Path) -> None:
    """What lets a listing answer ``[]`` without opening anything: only a missing SQLite file
    means nothing was ever stored; a server database or an in-memory one may hold anything."""
    config = Config.resolve(environ={"OCIMIRROR_HOME": str(tmp_path / "home")})
    assert config.unused
    config.prepare()
    assert config.unused  # a directory is not a database
    assert config.sqlite_file is not None
    config.sqlite_file.touch()
    assert not config.unused
    for url in ("postgresql://u@db/x", "sqlite://", "sqlite+aiosqlite:///x.db"):
        assert not Config.resolve(database_url=url, environ={}).unused, url


def test_urls_from_the_environment_override_the_home(tmp_path: Path) -> None:
    config = Config.resolve(
        environ={
            "OCIMIRROR_HOME": str(tmp_path),
            "OCIMIRROR_DATABASE_URL": "postgresql://u@db/x",
            "OCIMIRROR_STORAGE_URL": "s3://bucket/prefix",
        }
    )
    assert (config.database_url, config.storage_url) == (
        "postgresql://u@db/x",
        "s3://bucket/prefix",
    )
    explicit = Config.resolve(
        database_url="sqlite:///a.db", environ={"OCIMIRROR_DATABASE_URL": "postgresql://u@db/x"}
    )
    assert explicit.database_url == "sqlite:///a.db"


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_plain_database_urls_get_an_async_driver(given: str, driver: str) -> None:
    assert normalize_url(given).startswith(driver + "://")


def test_the_async_api_works_with_await(tmp_path: Path) -> None:
    async def main() -> list[str]:
        reg = await ocimirror.AsyncRegistry.open(home=tmp_path)
        async with reg:
            repo = await reg.create_repository("foo")
            version = await repo.latest_version()
            assert version.number == 0
            return [r.name for r in await reg.repositories()]

    assert asyncio.run(main()) == ["foo"]


def test_versions_show_their_summary_as_a_small_table(registry: ocimirror.Registry) -> None:
    version = registry.create_repository("foo").latest_version()
    assert "container.manifest" in str(version)
    assert "<table>" in version._repr_html_()
    assert version.to_json()["content_summary"] == {"added": {}, "removed": {}, "present": {}}


def test_remotes_hide_their_password(registry: ocimirror.Registry) -> None:
    remote = registry.create_remote(
        name="hub",
        url="https://registry-1.docker.io",
        upstream_name="library/alpine",
        include_tags=["3.*"],
        username="me",
        password="s3cret",
    )
    assert "s3cret" not in repr(remote)
    assert remote.to_json()["password"] == "********"
    assert registry.remote("hub").password == "s3cret"
    with pytest.raises(AlreadyExists):
        registry.create_remote(remote)
    updated = registry.update_remote("hub", exclude_tags=["*-rc*"])
    assert updated.exclude_tags == ("*-rc*",)
    registry.delete_remote("hub")
    with pytest.raises(RemoteNotFound):
        registry.remote("hub")


@pytest.mark.parametrize(
    ("tag", "included"),
    [("3.19", True), ("3.19-rc1", False), ("edge", False), ("3", False)],
)
def test_remote_tag_filters_exclude_wins(tag: str, included: bool) -> None:
    remote = ocimirror.Remote(
        name="r",
        url="https://example.invalid",
        upstream_name="library/alpine",
        include_tags=["3.*", "sha256:" + "a" * 64],
        exclude_tags=["*-rc*"],
    )
    assert remote.wants_tag(tag) is included
    assert [str(d) for d in remote.include_digests] == ["sha256:" + "a" * 64]


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "ftp://x"},
        {"upstream_name": "Not/Valid"},
        {"policy": "sometimes"},
        {"download_concurrency": 0},
        {"max_retries": -1},
    ],
)
def test_invalid_remotes_are_refused(fields: dict[str, object]) -> None:
    base: dict[str, object] = {
        "name": "r",
        "url": "https://example.invalid",
        "upstream_name": "library/alpine",
    }
    with pytest.raises(InvalidError):
        ocimirror.Remote(**{**base, **fields})  # type: ignore[arg-type]


def test_distributions_serve_a_repository_or_a_pinned_version(
    registry: ocimirror.Registry,
) -> None:
    registry.create_repository("foo")
    moving = registry.create_distribution("foo", base_path="foo", repository="foo")
    pinned = registry.create_distribution(
        "foo-0", base_path="pinned/foo", repository="foo", repository_version=0
    )
    assert (moving.repository, moving.repository_version) == ("foo", None)
    assert pinned.repository_version == 0
    assert registry.distribution(base_path="pinned/foo").name == "foo-0"
    with pytest.raises(AlreadyExists):
        registry.create_distribution("other", base_path="foo", repository="foo")
    with pytest.raises(InvalidError):
        registry.create_distribution("bad", base_path="Bad Path", repository="foo")
    assert [d.name for d in registry.distributions()] == ["foo", "foo-0"]


def test_reopening_a_database_finds_its_content(tmp_path: Path) -> None:
    with ocimirror.open(home=tmp_path) as reg:
        reg.create_repository("foo")
    with ocimirror.open(home=tmp_path) as reg:
        assert [r.name for r in reg.repositories()] == ["foo"]


def test_a_newer_schema_than_the_code_knows_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with ocimirror.open(home=tmp_path, database_url=url):
        pass
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ocimirror_schema SET version = :v"), {"v": SCHEMA_VERSION + 1})
    engine.dispose()

    async def reopen() -> None:
        store = SQLMetadataStore(url)
        try:
            await store.open()
        finally:
            await store.close()

    with pytest.raises(SchemaError, match="newer"):
        asyncio.run(reopen())


def test_a_version_1_database_is_upgraded_with_its_content_intact(
    tmp_path: Path, database_url: str
) -> None:
    """Schema 1 -> 2 adds users, grants, uploads and versions' burst start, 2 -> 3 remote
    content and cooldowns; nothing is lost."""
    with ocimirror.open(home=tmp_path, database_url=database_url) as reg:
        reg.create_repository("foo", description="kept")
        reg.create_distribution("foo", base_path="foo", repository="foo", private=True)
    statements = [
        "DROP TABLE remote_content",
        "DROP TABLE remote_cooldowns",
        "DROP TABLE uploads",
        "DROP TABLE user_grants",
        "DROP TABLE users",
        "ALTER TABLE repository_versions DROP COLUMN burst_started",
        "UPDATE ocimirror_schema SET version = 1",
    ]

    async def downgrade() -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        async_engine = create_async_engine(normalize_url(database_url))
        async with async_engine.begin() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
        await async_engine.dispose()

    asyncio.run(downgrade())
    with ocimirror.open(home=tmp_path, database_url=database_url) as reg:
        assert reg.repository("foo").description == "kept"
        assert reg.distribution("foo").private
        reg.create_user("alice", password="a long secret")
        assert [u.username for u in reg.users()] == ["alice"]

    async def version() -> int:
        store = SQLMetadataStore(database_url)
        try:
            await store.open()
            async with store._read() as conn:
                return int(
                    (
                        await conn.execute(sa.text("SELECT version FROM ocimirror_schema"))
                    ).scalar_one()
                )
        finally:
            await store.close()

    assert asyncio.run(version()) == SCHEMA_VERSION == 3
