"""The metadata store over SQLAlchemy Core: SQLite (the embedded default, WAL) and PostgreSQL.

One function, :func:`build_metadata`, describes the schema; :data:`SCHEMA_VERSION` is recorded
in the ``ocimirror_schema`` table and checked at open. Upgrades are a list of steps in
:data:`MIGRATIONS`, each taking the schema from version ``n`` to ``n + 1``; ``open`` applies the
missing ones under the schema lock. A newer schema than this code knows is refused.

Writers of one repository never interleave: every write runs in one transaction that locks the
repository row (``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite, which
takes the database's single write lock). Readers see committed versions only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ocimirror.backends.metadata import (
    CONTENT_TYPES,
    BlobRecord,
    CleanupCounts,
    ContentType,
    DistributionRecord,
    ManifestRecord,
    RemoteRecord,
    RepositoryRecord,
    SignatureRecord,
    VersionRecord,
)
from ocimirror.errors import (
    AlreadyExists,
    Conflict,
    DistributionNotFound,
    RemoteNotFound,
    RepositoryBusy,
    RepositoryNotFound,
    SchemaError,
    VersionNotFound,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLMetadataStore", "build_metadata", "normalize_url"]

log = logging.getLogger("ocimirror.metadata")

#: The schema version this code writes and reads.
SCHEMA_VERSION = 1

#: Upgrade steps: ``MIGRATIONS[n]`` takes a version-``n`` schema to ``n + 1``.
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite stores them naive)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def build_metadata() -> sa.MetaData:
    """The whole schema."""
    md = sa.MetaData()
    sa.Table(
        "ocimirror_schema",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    sa.Table(
        "repositories",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("description", sa.Text),
        sa.Column("retain_repo_versions", sa.Integer),
        sa.Column("remote", sa.String(255)),
        sa.Column("mirror", sa.Boolean, nullable=False, default=False),
        sa.Column("latest_version", sa.Integer, nullable=False, default=0),
        sa.Column("next_version", sa.Integer, nullable=False, default=1),
        sa.Column("created", UTCDateTime, nullable=False),
    )
    sa.Table(
        "repository_versions",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "repository_id",
            sa.Integer,
            sa.ForeignKey("repositories.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("base_version", sa.Integer),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False, default=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.UniqueConstraint("repository_id", "number"),
    )
    # Membership as intervals [version_added, version_removed). ``key`` is a digest, or a
    # tag's name; ``value`` is the digest a tag points to.
    sa.Table(
        "repository_content",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "repository_id",
            sa.Integer,
            sa.ForeignKey("repositories.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("content_type", sa.String(32), nullable=False),
        # Byte order on every engine (PostgreSQL's default collation is locale-aware), so tags
        # list in the same order everywhere and `last` pagination agrees with the index.
        sa.Column(
            "key",
            sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("value", sa.String(255)),
        sa.Column("version_added", sa.Integer, nullable=False),
        sa.Column("version_removed", sa.Integer),
        sa.Index("ix_content_key", "repository_id", "content_type", "key", "version_removed"),
        sa.Index("ix_content_value", "repository_id", "content_type", "value"),
        sa.Index("ix_content_added", "repository_id", "version_added"),
        sa.Index("ix_content_removed", "repository_id", "version_removed"),
        sa.Index("ix_content_global", "content_type", "key"),
    )
    sa.Table(
        "blobs",
        md,
        sa.Column("digest", sa.String(150), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(255)),
        sa.Column("touched", UTCDateTime, nullable=False),
    )
    sa.Table(
        "manifests",
        md,
        sa.Column("digest", sa.String(150), primary_key=True),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("artifact_type", sa.String(255)),
        sa.Column("subject", sa.String(150), index=True),
        sa.Column("touched", UTCDateTime, nullable=False),
    )
    sa.Table(
        "manifest_refs",
        md,
        sa.Column("parent", sa.String(150), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("child", sa.String(150), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("platform", sa.JSON),
    )
    sa.Table(
        "signatures",
        md,
        sa.Column("digest", sa.String(150), primary_key=True),
        sa.Column("manifest_digest", sa.String(150), nullable=False, index=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("key_id", sa.String(255)),
        sa.Column("sig_type", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("touched", UTCDateTime, nullable=False),
    )
    sa.Table(
        "remotes",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
    )
    # One row while a sync (or another long job) owns a repository; shared by every process.
    sa.Table(
        "repository_leases",
        md,
        sa.Column(
            "repository_id",
            sa.Integer,
            sa.ForeignKey("repositories.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("acquired", UTCDateTime, nullable=False),
        sa.Column("expires", UTCDateTime, nullable=False),
    )
    sa.Table(
        "distributions",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("base_path", sa.String(255), nullable=False, unique=True),
        sa.Column(
            "repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="SET NULL")
        ),
        sa.Column("repository_version", sa.Integer),
        sa.Column("private", sa.Boolean, nullable=False, default=False),
        sa.Column("description", sa.Text),
        sa.Column("created", UTCDateTime, nullable=False),
    )
    return md


def normalize_url(url: str) -> str:
    """Pick the async driver for a plain SQLAlchemy URL (``sqlite://``, ``postgresql://``)."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


_LOCK_KEY = 0x6F63696D  # "ocim": the PostgreSQL advisory lock that guards schema setup


class SQLMetadataStore:
    """The metadata store on one SQLAlchemy engine (or two on SQLite: a writer and readers).

    Give it a URL (``sqlite:///path.db``, ``postgresql://user@host/db``) or an
    :class:`~sqlalchemy.ext.asyncio.AsyncEngine`; it disposes only engines it created.
    No I/O happens until :meth:`open`.
    """

    def __init__(self, url: str | AsyncEngine, *, busy_timeout: float = 30.0) -> None:
        self._given_engine = url if isinstance(url, AsyncEngine) else None
        self.url = (
            url.url.render_as_string(hide_password=True)
            if isinstance(url, AsyncEngine)
            else make_url(normalize_url(url)).render_as_string(hide_password=True)
        )
        self._raw_url = None if isinstance(url, AsyncEngine) else normalize_url(url)
        self._busy_timeout = busy_timeout
        self._md = build_metadata()
        t = self._md.tables
        self._repos = t["repositories"]
        self._versions = t["repository_versions"]
        self._rc = t["repository_content"]
        self._blobs = t["blobs"]
        self._manifests = t["manifests"]
        self._refs = t["manifest_refs"]
        self._sigs = t["signatures"]
        self._remotes = t["remotes"]
        self._dists = t["distributions"]
        self._schema = t["ocimirror_schema"]
        self._leases = t["repository_leases"]
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self._sqlite_writer_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"SQLMetadataStore({self.url!r})"

    @property
    def is_sqlite(self) -> bool:
        """Whether the engine is SQLite."""
        return self._writer.dialect.name == "sqlite"

    @property
    def _writer(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the metadata store is not open: call open() first")
        return self._engine

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, then create the schema or check (and upgrade) the one that is there."""
        if self._engine is not None:
            return
        if self._given_engine is not None:
            self._engine = self._reader = self._given_engine
        else:
            assert self._raw_url is not None
            if self._raw_url.startswith("sqlite"):
                self._engine = self._sqlite_engine(immediate=True)
                self._reader = self._sqlite_engine(immediate=False)
                self._sqlite_writer_lock = asyncio.Lock()
            else:
                self._engine = create_async_engine(self._raw_url, pool_pre_ping=True)
                self._reader = self._engine.execution_options(isolation_level="REPEATABLE READ")
        await self._setup_schema()

    def _sqlite_engine(self, *, immediate: bool) -> AsyncEngine:
        assert self._raw_url is not None
        engine = create_async_engine(self._raw_url, connect_args={"timeout": self._busy_timeout})
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(begin)

        return engine

    async def _setup_schema(self) -> None:
        async with self._write() as conn:
            if self._writer.dialect.name == "postgresql":
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})"))
            await conn.run_sync(self._setup_schema_sync)

    def _setup_schema_sync(self, conn: sa.Connection) -> None:
        inspector = sa.inspect(conn)
        if not inspector.has_table("ocimirror_schema"):
            if inspector.has_table("repositories"):
                raise SchemaError(
                    "the database has ocimirror tables but no schema version record; "
                    "it was not created by ocimirror"
                )
            self._md.create_all(conn)
            conn.execute(self._schema.insert().values(id=1, version=SCHEMA_VERSION))
            log.info("created metadata schema version %d", SCHEMA_VERSION)
            return
        found = conn.execute(sa.select(self._schema.c.version)).scalar()
        if found is None:
            raise SchemaError("the ocimirror_schema table is empty")
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"the database schema is version {found}, newer than this ocimirror "
                f"understands ({SCHEMA_VERSION}); upgrade ocimirror"
            )
        while found < SCHEMA_VERSION:
            step = MIGRATIONS.get(found)
            if step is None:
                raise SchemaError(f"no upgrade path from schema version {found}")
            step(conn)
            found += 1
            conn.execute(self._schema.update().values(version=found))
            log.info("upgraded metadata schema to version %d", found)

    async def close(self) -> None:
        """Dispose of the engines this store created."""
        if self._given_engine is None:
            for engine in {id(e): e for e in (self._engine, self._reader) if e}.values():
                await engine.dispose()
        self._engine = self._reader = None

    async def __aenter__(self) -> SQLMetadataStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        # SQLite has one write lock per database. Writers of this process queue here instead
        # (fairly, without a timeout), so a busy event loop cannot make them time out on each
        # other; other processes still meet at SQLite's busy timeout.
        lock = self._sqlite_writer_lock
        try:
            if lock is None:
                async with self._writer.begin() as conn:
                    yield conn
            else:
                async with lock, self._writer.begin() as conn:
                    yield conn
        except OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RepositoryBusy("the database is busy with another writer; try again") from exc
            raise

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        reader = self._reader or self._writer
        async with reader.connect() as conn, conn.begin():
            yield conn

    # -- repositories ------------------------------------------------------------------------

    def _repo_record(self, row: sa.Row[Any]) -> RepositoryRecord:
        return RepositoryRecord(
            id=row.id,
            name=row.name,
            description=row.description,
            retain_repo_versions=row.retain_repo_versions,
            remote=row.remote,
            mirror=bool(row.mirror),
            latest_version=row.latest_version,
            created=row.created,
        )

    async def create_repository(
        self,
        name: str,
        *,
        description: str | None = None,
        retain_repo_versions: int | None = None,
        remote: str | None = None,
    ) -> RepositoryRecord:
        """Create a repository with its empty, complete version 0."""
        now = _now()
        try:
            async with self._write() as conn:
                rid = (
                    await conn.execute(
                        self._repos.insert()
                        .values(
                            name=name,
                            description=description,
                            retain_repo_versions=retain_repo_versions,
                            remote=remote,
                            mirror=False,
                            latest_version=0,
                            next_version=1,
                            created=now,
                        )
                        .returning(self._repos.c.id)
                    )
                ).scalar_one()
                await conn.execute(
                    self._versions.insert().values(
                        repository_id=rid,
                        number=0,
                        base_version=None,
                        created=now,
                        complete=True,
                        summary={"added": {}, "removed": {}, "present": {}},
                    )
                )
        except SAIntegrityError as exc:
            raise AlreadyExists(f"a repository named {name!r} already exists") from exc
        return await self.get_repository(name)

    async def get_repository(self, name: str) -> RepositoryRecord:
        """The repository named ``name``."""
        async with self._read() as conn:
            return await self._get_repo(conn, name)

    async def _get_repo(
        self, conn: AsyncConnection, name: str, *, lock: bool = False
    ) -> RepositoryRecord:
        query = sa.select(self._repos).where(self._repos.c.name == name)
        if lock:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise RepositoryNotFound(f"no repository named {name!r}")
        return self._repo_record(row)

    async def list_repositories(self) -> list[RepositoryRecord]:
        """Every repository, by name."""
        async with self._read() as conn:
            rows = await conn.execute(sa.select(self._repos).order_by(self._repos.c.name))
            return [self._repo_record(r) for r in rows]

    _REPO_FIELDS = frozenset({"description", "retain_repo_versions", "remote", "mirror"})

    async def update_repository(self, name: str, **fields: Any) -> RepositoryRecord:
        """Change some of description, retain_repo_versions, remote, mirror."""
        unknown = set(fields) - self._REPO_FIELDS
        if unknown:
            raise TypeError(f"unknown repository fields: {', '.join(sorted(unknown))}")
        async with self._write() as conn:
            repo = await self._get_repo(conn, name, lock=True)
            if fields:
                await conn.execute(
                    self._repos.update().where(self._repos.c.id == repo.id).values(**fields)
                )
            if fields.get("retain_repo_versions"):
                await self._apply_retention(conn, repo.id, fields["retain_repo_versions"])
        return await self.get_repository(name)

    async def delete_repository(self, name: str) -> None:
        """Delete a repository, its versions and memberships (its content becomes orphan)."""
        async with self._write() as conn:
            repo = await self._get_repo(conn, name, lock=True)
            # Explicit deletes: SQLite enforces ON DELETE CASCADE only with foreign_keys on,
            # and an engine handed to us may not have it.
            await conn.execute(self._rc.delete().where(self._rc.c.repository_id == repo.id))
            await conn.execute(
                self._versions.delete().where(self._versions.c.repository_id == repo.id)
            )
            await conn.execute(
                self._dists.update()
                .where(self._dists.c.repository_id == repo.id)
                .values(repository_id=None, repository_version=None)
            )
            await conn.execute(self._repos.delete().where(self._repos.c.id == repo.id))

    # -- versions ----------------------------------------------------------------------------

    def _version_record(self, repository: str, row: sa.Row[Any]) -> VersionRecord:
        return VersionRecord(
            repository=repository,
            number=row.number,
            base_version=row.base_version,
            created=row.created,
            summary=row.summary,
        )

    async def get_version(self, repository: str, number: int | None = None) -> VersionRecord:
        """One complete version; the latest when ``number`` is None."""
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            want = repo.latest_version if number is None else number
            row = await self._require_version(conn, repo, want)
            return self._version_record(repository, row)

    async def list_versions(self, repository: str) -> list[VersionRecord]:
        """Every complete version, newest first."""
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            rows = await conn.execute(
                sa.select(self._versions)
                .where(
                    self._versions.c.repository_id == repo.id,
                    self._versions.c.complete.is_(True),
                )
                .order_by(self._versions.c.number.desc())
            )
            return [self._version_record(repository, r) for r in rows]

    @asynccontextmanager
    async def new_version(
        self, repository: str, *, base_version: int | None = None
    ) -> AsyncIterator[SQLVersionBuilder]:
        """Build the next version in one locked transaction.

        On a clean exit with changes, the version is published (complete, latest) and
        retention applied; with no changes nothing is written and ``builder.result`` is the
        current latest version. An exception rolls everything back.
        """
        async with self._write() as conn:
            repo = await self._get_repo(conn, repository, lock=True)
            number = (
                await conn.execute(
                    sa.select(self._repos.c.next_version).where(self._repos.c.id == repo.id)
                )
            ).scalar_one()
            builder = SQLVersionBuilder(self, conn, repo, number)
            if base_version is not None and base_version != repo.latest_version:
                await self._require_version(conn, repo, base_version)
                await builder._reset_to(base_version)
            yield builder
            result = await self._publish(conn, repo, builder, base_version)
            if result is None:
                await conn.rollback()
                builder.result = await self._latest_record(repo)
                return
            builder.result = result

    async def _latest_record(self, repo: RepositoryRecord) -> VersionRecord:
        return await self.get_version(repo.name, repo.latest_version)

    async def _require_version(
        self, conn: AsyncConnection, repo: RepositoryRecord, number: int
    ) -> sa.Row[Any]:
        row = (
            await conn.execute(
                sa.select(self._versions).where(
                    self._versions.c.repository_id == repo.id,
                    self._versions.c.number == number,
                    self._versions.c.complete.is_(True),
                )
            )
        ).first()
        if row is None:
            raise VersionNotFound(f"repository {repo.name!r} has no version {number}")
        return row

    async def _counts(
        self, conn: AsyncConnection, repo_id: int, column: sa.Column[Any], number: int
    ) -> dict[str, int]:
        rows = await conn.execute(
            sa.select(self._rc.c.content_type, sa.func.count())
            .where(self._rc.c.repository_id == repo_id, column == number)
            .group_by(self._rc.c.content_type)
        )
        return {ct: n for ct, n in rows if n}

    async def _publish(
        self,
        conn: AsyncConnection,
        repo: RepositoryRecord,
        builder: SQLVersionBuilder,
        base_version: int | None,
    ) -> VersionRecord | None:
        number = builder.number
        added = await self._counts(conn, repo.id, self._rc.c.version_added, number)
        removed = await self._counts(conn, repo.id, self._rc.c.version_removed, number)
        if not added and not removed:
            return None
        previous = await self._require_version(conn, repo, repo.latest_version)
        present = dict(previous.summary.get("present", {}))
        for ct in CONTENT_TYPES:
            n = present.get(ct, 0) + added.get(ct, 0) - removed.get(ct, 0)
            if n:
                present[ct] = n
            else:
                present.pop(ct, None)
        summary = {"added": added, "removed": removed, "present": _ordered(present)}
        now = _now()
        await conn.execute(
            self._versions.insert().values(
                repository_id=repo.id,
                number=number,
                base_version=base_version,
                created=now,
                complete=True,
                summary=summary,
            )
        )
        await conn.execute(
            self._repos.update()
            .where(self._repos.c.id == repo.id)
            .values(latest_version=number, next_version=number + 1)
        )
        if repo.retain_repo_versions:
            await self._apply_retention(conn, repo.id, repo.retain_repo_versions)
        return VersionRecord(
            repository=repo.name,
            number=number,
            base_version=base_version,
            created=now,
            summary=summary,
        )

    async def _apply_retention(self, conn: AsyncConnection, repo_id: int, retain: int) -> None:
        numbers = (
            (
                await conn.execute(
                    sa.select(self._versions.c.number)
                    .where(self._versions.c.repository_id == repo_id)
                    .order_by(self._versions.c.number.desc())
                )
            )
            .scalars()
            .all()
        )
        pinned = set(
            (
                await conn.execute(
                    sa.select(self._dists.c.repository_version).where(
                        self._dists.c.repository_id == repo_id,
                        self._dists.c.repository_version.is_not(None),
                    )
                )
            ).scalars()
        )
        for number in numbers[retain:]:
            if number not in pinned:
                await self._delete_version_tx(conn, repo_id, number)

    async def delete_version(self, repository: str, number: int) -> None:
        """Delete a version; its changes are squashed into the next version (Pulp's semantics).

        The only remaining version of a repository, and a version a distribution is pinned to,
        cannot be deleted.
        """
        async with self._write() as conn:
            repo = await self._get_repo(conn, repository, lock=True)
            await self._require_version(conn, repo, number)
            pinned = (
                await conn.execute(
                    sa.select(self._dists.c.name).where(
                        self._dists.c.repository_id == repo.id,
                        self._dists.c.repository_version == number,
                    )
                )
            ).first()
            if pinned is not None:
                raise Conflict(
                    f"version {number} of {repository!r} is served by distribution "
                    f"{pinned.name!r}; point the distribution elsewhere first"
                )
            count = (
                await conn.execute(
                    sa.select(sa.func.count()).where(self._versions.c.repository_id == repo.id)
                )
            ).scalar_one()
            if count <= 1:
                raise Conflict(f"version {number} is the only version of {repository!r}")
            await self._delete_version_tx(conn, repo.id, number)

    async def _delete_version_tx(self, conn: AsyncConnection, repo_id: int, number: int) -> None:
        rc, v = self._rc, self._versions
        later = (
            await conn.execute(
                sa.select(sa.func.min(v.c.number)).where(
                    v.c.repository_id == repo_id, v.c.number > number
                )
            )
        ).scalar()
        mine = rc.c.repository_id == repo_id
        if later is None:
            # Deleting the latest: undo its changes; the previous version becomes the latest.
            await conn.execute(rc.delete().where(mine, rc.c.version_added == number))
            await conn.execute(
                rc.update().where(mine, rc.c.version_removed == number).values(version_removed=None)
            )
            previous = (
                await conn.execute(
                    sa.select(sa.func.max(v.c.number)).where(
                        v.c.repository_id == repo_id, v.c.number < number
                    )
                )
            ).scalar_one()
            await conn.execute(
                self._repos.update()
                .where(self._repos.c.id == repo_id)
                .values(latest_version=previous)
            )
        else:
            # Squash into the next version: what only this version held goes; its additions
            # and removals become the next version's.
            await conn.execute(
                rc.delete().where(mine, rc.c.version_added == number, rc.c.version_removed == later)
            )
            await conn.execute(
                rc.update().where(mine, rc.c.version_added == number).values(version_added=later)
            )
            await conn.execute(
                rc.update()
                .where(mine, rc.c.version_removed == number)
                .values(version_removed=later)
            )
            summary_row = (
                await conn.execute(
                    sa.select(v.c.summary).where(v.c.repository_id == repo_id, v.c.number == later)
                )
            ).scalar_one()
            summary = {
                "added": await self._counts(conn, repo_id, rc.c.version_added, later),
                "removed": await self._counts(conn, repo_id, rc.c.version_removed, later),
                "present": summary_row.get("present", {}),
            }
            await conn.execute(
                v.update()
                .where(v.c.repository_id == repo_id, v.c.number == later)
                .values(summary=summary)
            )
        await conn.execute(v.delete().where(v.c.repository_id == repo_id, v.c.number == number))

    def _in_version(self, number: int) -> sa.ColumnElement[bool]:
        rc = self._rc
        return sa.and_(
            rc.c.version_added <= number,
            sa.or_(rc.c.version_removed.is_(None), rc.c.version_removed > number),
        )

    async def list_tags(
        self, repository: str, number: int, *, last: str | None = None, n: int | None = None
    ) -> list[tuple[str, str]]:
        """(name, digest) of the version's tags, sorted by name, after ``last``, at most ``n``."""
        rc = self._rc
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            query = (
                sa.select(rc.c.key, rc.c.value)
                .where(
                    rc.c.repository_id == repo.id,
                    rc.c.content_type == "container.tag",
                    self._in_version(number),
                )
                .order_by(rc.c.key)
            )
            if last is not None:
                query = query.where(rc.c.key > last)
            if n is not None:
                query = query.limit(n)
            return [(k, val) for k, val in await conn.execute(query)]

    async def get_tag(self, repository: str, number: int, name: str) -> str | None:
        """The digest a tag points to in that version, or None."""
        rc = self._rc
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            value: str | None = (
                await conn.execute(
                    sa.select(rc.c.value).where(
                        rc.c.repository_id == repo.id,
                        rc.c.content_type == "container.tag",
                        rc.c.key == name,
                        self._in_version(number),
                    )
                )
            ).scalar()
            return value

    async def has_content(
        self, repository: str, number: int, content_type: ContentType, key: str
    ) -> bool:
        """Whether the version holds that content."""
        rc = self._rc
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            found = (
                await conn.execute(
                    sa.select(rc.c.id)
                    .where(
                        rc.c.repository_id == repo.id,
                        rc.c.content_type == content_type,
                        rc.c.key == key,
                        self._in_version(number),
                    )
                    .limit(1)
                )
            ).first()
            return found is not None

    async def iter_content(
        self, repository: str, number: int, content_type: ContentType
    ) -> AsyncIterator[str]:
        """Every key of one content type in a version, sorted."""
        rc = self._rc
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            result = await conn.stream(
                sa.select(rc.c.key)
                .where(
                    rc.c.repository_id == repo.id,
                    rc.c.content_type == content_type,
                    self._in_version(number),
                )
                .order_by(rc.c.key)
            )
            async for (key,) in result:
                yield key

    # -- content -----------------------------------------------------------------------------

    async def _upsert_touch(
        self, conn: AsyncConnection, table: sa.Table, key: str, values: dict[str, Any]
    ) -> None:
        now = _now()
        updated = await conn.execute(
            table.update().where(table.c.digest == key).values(touched=now)
        )
        if updated.rowcount == 0:
            try:
                async with conn.begin_nested():
                    await conn.execute(table.insert().values(digest=key, touched=now, **values))
            except SAIntegrityError:
                pass  # another writer inserted it first; same content by definition

    def _insert_ignore(self, table: sa.Table) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING on either engine."""
        if self._writer.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()

    async def record_content(
        self,
        *,
        blobs: Sequence[tuple[str, int, str | None]] = (),
        manifests: Sequence[
            tuple[ManifestRecord, list[tuple[str, str, dict[str, Any] | None]]]
        ] = (),
        touch_manifests: Sequence[str] = (),
        touch_blobs: Sequence[str] = (),
    ) -> None:
        """Record many blobs and manifests (with references) and touch reused content, in one
        transaction. Existing rows are kept (same digest, same content) and touched."""
        now = _now()
        async with self._write() as conn:
            touched_b = [d for d, _, _ in blobs] + list(touch_blobs)
            touched_m = [m.digest for m, _ in manifests] + list(touch_manifests)
            for table, keys in ((self._blobs, touched_b), (self._manifests, touched_m)):
                for i in range(0, len(keys), _CHUNK):
                    await conn.execute(
                        table.update()
                        .where(table.c.digest.in_(keys[i : i + _CHUNK]))
                        .values(touched=now)
                    )
            if blobs:
                await conn.execute(
                    self._insert_ignore(self._blobs),
                    [
                        {"digest": d, "size": size, "media_type": mt, "touched": now}
                        for d, size, mt in blobs
                    ],
                )
            if manifests:
                await conn.execute(
                    self._insert_ignore(self._manifests),
                    [
                        {
                            "digest": m.digest,
                            "media_type": m.media_type,
                            "data": m.data,
                            "artifact_type": m.artifact_type,
                            "subject": m.subject,
                            "touched": now,
                        }
                        for m, _ in manifests
                    ],
                )
                refs = [
                    {
                        "parent": m.digest,
                        "position": i,
                        "child": child,
                        "kind": kind,
                        "platform": platform,
                    }
                    for m, children in manifests
                    for i, (child, kind, platform) in enumerate(children)
                ]
                if refs:
                    await conn.execute(self._insert_ignore(self._refs), refs)

    async def references_many(self, digests: list[str]) -> dict[str, list[tuple[str, str]]]:
        """parent -> [(child, kind), ...] for many stored manifests at once."""
        async with self._read() as conn:
            return await _references(conn, self._refs, digests)

    async def existing_manifests(self, digests: list[str]) -> set[str]:
        """Which of ``digests`` are stored manifests."""
        found: set[str] = set()
        if not digests:
            return found
        async with self._read() as conn:
            for i in range(0, len(digests), _CHUNK):
                rows = await conn.execute(
                    sa.select(self._manifests.c.digest).where(
                        self._manifests.c.digest.in_(digests[i : i + _CHUNK])
                    )
                )
                found.update(rows.scalars())
        return found

    # -- leases --------------------------------------------------------------------------------

    async def acquire_lease(
        self,
        repository: str,
        *,
        holder: str,
        purpose: str,
        ttl: float,
        is_stale: Callable[[str], bool] | None = None,
    ) -> None:
        """Take the repository's lease, or raise RepositoryBusy naming who holds it.

        An expired lease (its holder died without releasing it) is taken over, and so is one
        whose holder ``is_stale`` says is gone (a process on this host that no longer runs).
        """
        now = _now()
        expires = datetime.fromtimestamp(now.timestamp() + ttl, UTC)
        async with self._write() as conn:
            repo = await self._get_repo(conn, repository, lock=True)
            current = (
                await conn.execute(
                    sa.select(self._leases).where(self._leases.c.repository_id == repo.id)
                )
            ).first()
            if (
                current is not None
                and current.expires > now
                and current.holder != holder
                and not (is_stale is not None and is_stale(current.holder))
            ):
                raise RepositoryBusy(
                    f"repository {repository!r} is busy: a {current.purpose} by "
                    f"{current.holder} holds it since {current.acquired.isoformat()}"
                )
            await conn.execute(self._leases.delete().where(self._leases.c.repository_id == repo.id))
            await conn.execute(
                self._leases.insert().values(
                    repository_id=repo.id,
                    holder=holder,
                    purpose=purpose,
                    acquired=now,
                    expires=expires,
                )
            )

    async def renew_lease(self, repository: str, *, holder: str, ttl: float) -> bool:
        """Extend a lease this holder owns; False if it was lost."""
        expires = datetime.fromtimestamp(_now().timestamp() + ttl, UTC)
        async with self._write() as conn:
            repo = await self._get_repo(conn, repository)
            result = await conn.execute(
                self._leases.update()
                .where(self._leases.c.repository_id == repo.id, self._leases.c.holder == holder)
                .values(expires=expires)
            )
            return bool(result.rowcount)

    async def release_lease(self, repository: str, *, holder: str) -> None:
        """Give a lease back (nothing happens if this holder does not own it)."""
        async with self._write() as conn:
            repo = await self._get_repo(conn, repository)
            await conn.execute(
                self._leases.delete().where(
                    self._leases.c.repository_id == repo.id, self._leases.c.holder == holder
                )
            )

    async def add_blob(self, digest: str, size: int, media_type: str | None = None) -> None:
        """Record a blob now in the blob store; refreshes its orphan grace period."""
        async with self._write() as conn:
            await self._upsert_touch(
                conn, self._blobs, digest, {"size": size, "media_type": media_type}
            )

    async def get_blob(self, digest: str) -> BlobRecord | None:
        """The blob's record, or None."""
        async with self._read() as conn:
            row = (
                await conn.execute(sa.select(self._blobs).where(self._blobs.c.digest == digest))
            ).first()
        if row is None:
            return None
        return BlobRecord(digest=row.digest, size=row.size, media_type=row.media_type)

    async def add_manifest(
        self,
        record: ManifestRecord,
        references: list[tuple[str, str, dict[str, Any] | None]],
    ) -> None:
        """Record a manifest with its references (child digest, kind, platform)."""
        async with self._write() as conn:
            exists = (
                await conn.execute(
                    sa.select(self._manifests.c.digest).where(
                        self._manifests.c.digest == record.digest
                    )
                )
            ).first()
            await self._upsert_touch(
                conn,
                self._manifests,
                record.digest,
                {
                    "media_type": record.media_type,
                    "data": record.data,
                    "artifact_type": record.artifact_type,
                    "subject": record.subject,
                },
            )
            if exists is None and references:
                await conn.execute(
                    self._refs.insert(),
                    [
                        {
                            "parent": record.digest,
                            "position": i,
                            "child": child,
                            "kind": kind,
                            "platform": platform,
                        }
                        for i, (child, kind, platform) in enumerate(references)
                    ],
                )

    async def get_manifest(self, digest: str) -> ManifestRecord | None:
        """The manifest's record, or None."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(self._manifests).where(self._manifests.c.digest == digest)
                )
            ).first()
        if row is None:
            return None
        return ManifestRecord(
            digest=row.digest,
            media_type=row.media_type,
            data=bytes(row.data),
            artifact_type=row.artifact_type,
            subject=row.subject,
        )

    async def manifest_references(self, digest: str) -> list[tuple[str, str]]:
        """(child digest, kind) of each reference of a manifest, in order."""
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(self._refs.c.child, self._refs.c.kind)
                .where(self._refs.c.parent == digest)
                .order_by(self._refs.c.position)
            )
            return [(c, k) for c, k in rows]

    async def add_signature(self, record: SignatureRecord) -> None:
        """Record a signature of a manifest."""
        async with self._write() as conn:
            await self._upsert_touch(
                conn,
                self._sigs,
                record.digest,
                {
                    "manifest_digest": record.manifest_digest,
                    "name": record.name,
                    "key_id": record.key_id,
                    "sig_type": record.sig_type,
                    "data": record.data,
                },
            )

    async def iter_blobs(self) -> AsyncIterator[BlobRecord]:
        """Every blob record, by digest."""
        async with self._read() as conn:
            result = await conn.stream(sa.select(self._blobs).order_by(self._blobs.c.digest))
            async for row in result:
                yield BlobRecord(digest=row.digest, size=row.size, media_type=row.media_type)

    async def iter_manifest_digests(self) -> AsyncIterator[str]:
        """Every stored manifest's digest."""
        async with self._read() as conn:
            result = await conn.stream(
                sa.select(self._manifests.c.digest).order_by(self._manifests.c.digest)
            )
            async for (digest,) in result:
                yield digest

    async def known_blob_digests(self, digests: list[str]) -> set[str]:
        """Which of ``digests`` have a blob record."""
        found: set[str] = set()
        async with self._read() as conn:
            for i in range(0, len(digests), 500):
                chunk = digests[i : i + 500]
                rows = await conn.execute(
                    sa.select(self._blobs.c.digest).where(self._blobs.c.digest.in_(chunk))
                )
                found.update(rows.scalars())
        return found

    async def delete_orphans(self, older_than: datetime) -> CleanupCounts:
        """Delete manifests, signatures and blobs that no version of any repository holds.

        Only content untouched since ``older_than`` goes: work in flight (a sync that stored
        a blob but has not published its version yet) touched it recently.
        """
        rc, m, refs, b, s = self._rc, self._manifests, self._refs, self._blobs, self._sigs

        def member(content_type: str, column: sa.ColumnElement[Any]) -> sa.Exists:
            return sa.exists().where(rc.c.content_type == content_type, rc.c.key == column)

        async with self._write() as conn:
            held_parent = (
                sa.select(refs.c.parent)
                .where(refs.c.child == m.c.digest)
                .where(member("container.manifest", refs.c.parent))
                .exists()
            )
            manifests = (
                (
                    await conn.execute(
                        sa.select(m.c.digest).where(
                            m.c.touched < older_than,
                            ~member("container.manifest", m.c.digest),
                            ~held_parent,
                        )
                    )
                )
                .scalars()
                .all()
            )
            for i in range(0, len(manifests), 500):
                chunk = manifests[i : i + 500]
                await conn.execute(refs.delete().where(refs.c.parent.in_(chunk)))
                await conn.execute(m.delete().where(m.c.digest.in_(chunk)))
            signatures = (
                (
                    await conn.execute(
                        s.delete()
                        .where(s.c.touched < older_than, ~member("container.signature", s.c.digest))
                        .returning(s.c.digest)
                    )
                )
                .scalars()
                .all()
            )
            blobs = (
                (
                    await conn.execute(
                        b.delete()
                        .where(
                            b.c.touched < older_than,
                            ~member("container.blob", b.c.digest),
                            ~sa.exists().where(refs.c.child == b.c.digest),
                        )
                        .returning(b.c.digest)
                    )
                )
                .scalars()
                .all()
            )
        return CleanupCounts(
            manifests=len(manifests), blobs=list(blobs), signatures=len(signatures)
        )

    # -- remotes and distributions -------------------------------------------------------------

    async def create_remote(self, name: str, fields: Mapping[str, Any]) -> RemoteRecord:
        """Store a remote; AlreadyExists when the name is taken."""
        try:
            async with self._write() as conn:
                await conn.execute(
                    self._remotes.insert().values(name=name, fields=dict(fields), created=_now())
                )
        except SAIntegrityError as exc:
            raise AlreadyExists(f"a remote named {name!r} already exists") from exc
        return RemoteRecord(name=name, fields=dict(fields))

    async def get_remote(self, name: str) -> RemoteRecord:
        """The remote named ``name``."""
        async with self._read() as conn:
            row = (
                await conn.execute(sa.select(self._remotes).where(self._remotes.c.name == name))
            ).first()
        if row is None:
            raise RemoteNotFound(f"no remote named {name!r}")
        return RemoteRecord(name=row.name, fields=row.fields)

    async def list_remotes(self) -> list[RemoteRecord]:
        """Every remote, by name."""
        async with self._read() as conn:
            rows = await conn.execute(sa.select(self._remotes).order_by(self._remotes.c.name))
            return [RemoteRecord(name=r.name, fields=r.fields) for r in rows]

    async def update_remote(self, name: str, fields: Mapping[str, Any]) -> RemoteRecord:
        """Replace a remote's fields."""
        async with self._write() as conn:
            result = await conn.execute(
                self._remotes.update()
                .where(self._remotes.c.name == name)
                .values(fields=dict(fields))
            )
            if result.rowcount == 0:
                raise RemoteNotFound(f"no remote named {name!r}")
        return RemoteRecord(name=name, fields=dict(fields))

    async def delete_remote(self, name: str) -> None:
        """Delete a remote; repositories that named it as their remote forget it."""
        async with self._write() as conn:
            result = await conn.execute(self._remotes.delete().where(self._remotes.c.name == name))
            if result.rowcount == 0:
                raise RemoteNotFound(f"no remote named {name!r}")
            await conn.execute(
                self._repos.update().where(self._repos.c.remote == name).values(remote=None)
            )

    def _dist_query(self) -> sa.Select[Any]:
        d, r = self._dists, self._repos
        return sa.select(
            d.c.name,
            d.c.base_path,
            r.c.name.label("repository"),
            d.c.repository_version,
            d.c.private,
            d.c.description,
        ).select_from(d.outerjoin(r, d.c.repository_id == r.c.id))

    @staticmethod
    def _dist_record(row: sa.Row[Any]) -> DistributionRecord:
        return DistributionRecord(
            name=row.name,
            base_path=row.base_path,
            repository=row.repository,
            repository_version=row.repository_version,
            private=bool(row.private),
            description=row.description,
        )

    async def _dist_values(
        self, conn: AsyncConnection, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        values = {k: v for k, v in fields.items() if k != "repository"}
        if "repository" in fields:
            if fields["repository"] is None:
                values["repository_id"] = None
            else:
                repo = await self._get_repo(conn, fields["repository"])
                values["repository_id"] = repo.id
                number = fields.get("repository_version")
                if number is not None:
                    await self._require_version(conn, repo, number)
        return values

    async def create_distribution(
        self, name: str, base_path: str, **fields: Any
    ) -> DistributionRecord:
        """Store a distribution; AlreadyExists when the name or base path is taken."""
        try:
            async with self._write() as conn:
                values = await self._dist_values(conn, fields)
                await conn.execute(
                    self._dists.insert().values(
                        name=name, base_path=base_path, created=_now(), **values
                    )
                )
        except SAIntegrityError as exc:
            raise AlreadyExists(
                f"a distribution named {name!r} or with base path {base_path!r} already exists"
            ) from exc
        return await self.get_distribution(name)

    async def get_distribution(
        self, name: str | None = None, *, base_path: str | None = None
    ) -> DistributionRecord:
        """A distribution by name or by base path."""
        query = self._dist_query()
        if name is not None:
            query = query.where(self._dists.c.name == name)
        else:
            query = query.where(self._dists.c.base_path == base_path)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise DistributionNotFound(f"no distribution {name or base_path!r}")
        return self._dist_record(row)

    async def list_distributions(self) -> list[DistributionRecord]:
        """Every distribution, by name."""
        async with self._read() as conn:
            rows = await conn.execute(self._dist_query().order_by(self._dists.c.name))
            return [self._dist_record(r) for r in rows]

    async def update_distribution(self, name: str, **fields: Any) -> DistributionRecord:
        """Change some fields of a distribution."""
        try:
            async with self._write() as conn:
                values = await self._dist_values(conn, fields)
                result = await conn.execute(
                    self._dists.update().where(self._dists.c.name == name).values(**values)
                )
                if result.rowcount == 0:
                    raise DistributionNotFound(f"no distribution named {name!r}")
        except SAIntegrityError as exc:
            raise AlreadyExists(f"base path {fields.get('base_path')!r} is taken") from exc
        return await self.get_distribution(name)

    async def delete_distribution(self, name: str) -> None:
        """Delete a distribution (the repository is untouched)."""
        async with self._write() as conn:
            result = await conn.execute(self._dists.delete().where(self._dists.c.name == name))
            if result.rowcount == 0:
                raise DistributionNotFound(f"no distribution named {name!r}")


_CHUNK = 500  # keys per IN (...) list: well under every engine's bind-parameter limit


async def _references(
    conn: AsyncConnection, refs: sa.Table, digests: list[str]
) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for i in range(0, len(digests), _CHUNK):
        rows = await conn.execute(
            sa.select(refs.c.parent, refs.c.child, refs.c.kind)
            .where(refs.c.parent.in_(digests[i : i + _CHUNK]))
            .order_by(refs.c.parent, refs.c.position)
        )
        for parent, child, kind in rows:
            out.setdefault(parent, []).append((child, kind))
    return out


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
    return {ct: counts[ct] for ct in CONTENT_TYPES if counts.get(ct)}


class SQLVersionBuilder:
    """Changes for the next version, written straight into the locked transaction.

    While building, the version's number ``N`` is the newest, so "present" is simply
    ``version_removed IS NULL``.
    """

    def __init__(
        self, store: SQLMetadataStore, conn: AsyncConnection, repo: RepositoryRecord, number: int
    ) -> None:
        self._store = store
        self._conn = conn
        self._repo = repo
        self.repository = repo.name
        self.number = number
        self.base_number = repo.latest_version
        #: The published version, set when the ``new_version`` block exits.
        self.result: VersionRecord | None = None

    def __repr__(self) -> str:
        return f"<VersionBuilder {self.repository!r} version {self.number}>"

    def _where(self, content_type: str) -> sa.ColumnElement[bool]:
        rc = self._store._rc
        return sa.and_(rc.c.repository_id == self._repo.id, rc.c.content_type == content_type)

    async def _current(self, content_type: str, key: str) -> Any:
        rc = self._store._rc
        return (
            await self._conn.execute(
                sa.select(rc.c.id, rc.c.value, rc.c.version_added).where(
                    self._where(content_type), rc.c.key == key, rc.c.version_removed.is_(None)
                )
            )
        ).first()

    async def add(self, content_type: ContentType, key: str, value: str | None = None) -> bool:
        """Add content; a tag (``key`` its name) pointing elsewhere is moved. True if new."""
        return await self.add_many(content_type, {key: value}) == 1

    async def add_many(self, content_type: ContentType, items: Mapping[str, str | None]) -> int:
        """Add many keys (tags: name -> digest) with a few set-based statements; count new."""
        rc = self._store._rc
        keys = list(items)
        present: dict[str, Any] = {}
        undoable: dict[str, int] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            rows = await self._conn.execute(
                sa.select(
                    rc.c.id, rc.c.key, rc.c.value, rc.c.version_added, rc.c.version_removed
                ).where(
                    self._where(content_type),
                    rc.c.key.in_(chunk),
                    sa.or_(rc.c.version_removed.is_(None), rc.c.version_removed == self.number),
                )
            )
            for row in rows:
                if row.version_removed is None:
                    present[row.key] = row
                elif row.value == items[row.key]:
                    # Removed earlier in this same version: adding it back undoes that.
                    undoable[row.key] = row.id
        moved = [k for k, row in present.items() if row.value != items[k]]
        await self._retire([present[k] for k in moved])
        new = [k for k in keys if k not in present or k in moved]
        undo = [undoable[k] for k in new if k in undoable]
        for i in range(0, len(undo), _CHUNK):
            await self._conn.execute(
                rc.update().where(rc.c.id.in_(undo[i : i + _CHUNK])).values(version_removed=None)
            )
        inserts = [
            {
                "repository_id": self._repo.id,
                "content_type": content_type,
                "key": k,
                "value": items[k],
                "version_added": self.number,
                "version_removed": None,
            }
            for k in new
            if k not in undoable
        ]
        if inserts:
            await self._conn.execute(rc.insert(), inserts)
        return len(new)

    async def _retire(self, rows: list[Any]) -> None:
        """End present rows at this version (rows added in this same version just go)."""
        rc = self._store._rc
        fresh = [r.id for r in rows if r.version_added == self.number]
        old = [r.id for r in rows if r.version_added != self.number]
        for i in range(0, len(fresh), _CHUNK):
            await self._conn.execute(rc.delete().where(rc.c.id.in_(fresh[i : i + _CHUNK])))
        for i in range(0, len(old), _CHUNK):
            await self._conn.execute(
                rc.update()
                .where(rc.c.id.in_(old[i : i + _CHUNK]))
                .values(version_removed=self.number)
            )

    async def remove(self, content_type: ContentType, key: str) -> bool:
        """Remove content (tags by name); True if it was present."""
        current = await self._current(content_type, key)
        if current is None:
            return False
        await self._retire([current])
        return True

    async def remove_many(self, content_type: ContentType, keys: list[str]) -> int:
        """Remove many keys (tags by name) at once; count those that were present."""
        rc = self._store._rc
        rows: list[Any] = []
        for i in range(0, len(keys), _CHUNK):
            result = await self._conn.execute(
                sa.select(rc.c.id, rc.c.version_added).where(
                    self._where(content_type),
                    rc.c.key.in_(keys[i : i + _CHUNK]),
                    rc.c.version_removed.is_(None),
                )
            )
            rows.extend(result)
        await self._retire(rows)
        return len(rows)

    async def closure_many(self, roots: list[str]) -> tuple[set[str], set[str]]:
        """(manifests, blobs) reachable from stored manifests ``roots``, level by level."""
        manifests: set[str] = set()
        blobs: set[str] = set()
        level = [r for r in dict.fromkeys(roots)]
        while level:
            manifests.update(level)
            refs = await _references(self._conn, self._store._refs, level)
            following: list[str] = []
            for children in refs.values():
                for child, kind in children:
                    if kind == "manifest" and child not in manifests:
                        following.append(child)
                    elif kind == "blob":
                        blobs.add(child)
            level = list(dict.fromkeys(following))
        return manifests, blobs

    async def set_mirror(self, mirror: bool = True) -> None:
        """Mark the repository as a mirror (synced from a remote) in the same transaction."""
        repos = self._store._repos
        await self._conn.execute(
            repos.update().where(repos.c.id == self._repo.id).values(mirror=mirror)
        )

    async def present(self, content_type: ContentType, key: str) -> bool:
        """Whether the version being built holds that content."""
        return await self._current(content_type, key) is not None

    async def tag_target(self, name: str) -> str | None:
        """The digest a tag points to in the version being built."""
        current = await self._current("container.tag", name)
        return None if current is None else current.value

    async def tags_pointing_to(self, digest: str) -> list[str]:
        """Names of tags pointing to ``digest`` in the version being built."""
        rc = self._store._rc
        rows = await self._conn.execute(
            sa.select(rc.c.key).where(
                self._where("container.tag"), rc.c.value == digest, rc.c.version_removed.is_(None)
            )
        )
        return list(rows.scalars())

    async def present_parents(self, digest: str) -> list[str]:
        """Manifests in the version being built that reference ``digest``."""
        rc, refs = self._store._rc, self._store._refs
        rows = await self._conn.execute(
            sa.select(refs.c.parent)
            .distinct()
            .where(refs.c.child == digest)
            .where(
                sa.exists().where(
                    self._where("container.manifest"),
                    rc.c.key == refs.c.parent,
                    rc.c.version_removed.is_(None),
                )
            )
        )
        return list(rows.scalars())

    async def signatures_of(self, manifest_digest: str) -> list[str]:
        """Signatures in the version being built that sign ``manifest_digest``."""
        rc, s = self._store._rc, self._store._sigs
        rows = await self._conn.execute(
            sa.select(s.c.digest).where(
                s.c.manifest_digest == manifest_digest,
                sa.exists().where(
                    self._where("container.signature"),
                    rc.c.key == s.c.digest,
                    rc.c.version_removed.is_(None),
                ),
            )
        )
        return list(rows.scalars())

    async def signature_targets(self) -> dict[str, str]:
        """Signature digest -> signed manifest digest, for the version being built."""
        rc, s = self._store._rc, self._store._sigs
        rows = await self._conn.execute(
            sa.select(s.c.digest, s.c.manifest_digest).where(
                sa.exists().where(
                    self._where("container.signature"),
                    rc.c.key == s.c.digest,
                    rc.c.version_removed.is_(None),
                )
            )
        )
        return {d: m for d, m in rows}

    async def all_keys(self, content_type: ContentType) -> set[str]:
        """Every key of a content type in the version being built."""
        rc = self._store._rc
        rows = await self._conn.execute(
            sa.select(rc.c.key).where(self._where(content_type), rc.c.version_removed.is_(None))
        )
        return set(rows.scalars())

    async def all_tags(self) -> dict[str, str]:
        """Every tag (name -> digest) in the version being built."""
        rc = self._store._rc
        rows = await self._conn.execute(
            sa.select(rc.c.key, rc.c.value).where(
                self._where("container.tag"), rc.c.version_removed.is_(None)
            )
        )
        return {k: v for k, v in rows}

    async def _reset_to(self, base: int) -> None:
        """Make the version being built start from version ``base``'s content."""
        rc = self._store._rc
        for ct in CONTENT_TYPES:
            rows = await self._conn.execute(
                sa.select(rc.c.key, rc.c.value).where(
                    self._where(ct), self._store._in_version(base)
                )
            )
            want = {k: v for k, v in rows}
            have = (
                await self.all_tags()
                if ct == "container.tag"
                else dict.fromkeys(await self.all_keys(ct))
            )
            for key, value in have.items():
                if key not in want or want[key] != value:
                    await self.remove(ct, key)
            for key, value in want.items():
                if key not in have or have[key] != value:
                    await self.add(ct, key, value)
