"""The engine lifecycle: open and close, the SQLite engines, schema setup, transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ocimirror.backends.metadata import RepositoryRecord
from ocimirror.backends.sql.schema import MIGRATIONS, SCHEMA_VERSION, build_metadata, normalize_url
from ocimirror.backends.sql.sqlite_driver import one_trip_connect
from ocimirror.errors import RepositoryBusy, RepositoryNotFound, SchemaError, VersionNotFound

log = logging.getLogger("ocimirror.metadata")

_LOCK_KEY = 0x6F63696D  # "ocim": the PostgreSQL advisory lock that guards schema setup


class SQLEngine:
    """The engines, the table handles and the transactions every part of the store uses."""

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
        self._users = t["users"]
        self._grants = t["user_grants"]
        self._uploads = t["uploads"]
        self._remote_content = t["remote_content"]
        self._cooldowns = t["remote_cooldowns"]
        self._pt_remotes = t["pull_through_remotes"]
        self._pt_dists = t["pull_through_distributions"]
        self._pt_tags = t["pull_through_tags"]
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self._sqlite_writer_lock: asyncio.Lock | None = None

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

        @event.listens_for(engine.sync_engine, "do_connect")
        def _do_connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
            # SQLAlchemy's own arguments, to aiosqlite connections that make a statement one
            # trip to their thread instead of four (see sqlite_driver).
            return dialect.loaded_dbapi.connect(
                *cargs, async_creator_fn=one_trip_connect, **cparams
            )

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
        # One query for what is there (not one per table): this runs on every open.
        existing = set(sa.inspect(conn).get_table_names())
        if "ocimirror_schema" not in existing:
            if taken := sorted(existing & set(self._md.tables)):
                raise SchemaError(
                    f"the database has ocimirror tables ({', '.join(taken)}) but no schema "
                    "version record; it was not created by ocimirror"
                )
            # None of the tables exists (just checked, in this transaction).
            self._md.create_all(conn, checkfirst=False)
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

    # -- lookups shared by every concern -----------------------------------------------------

    def _insert_ignore(self, table: sa.Table) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING on either engine."""
        if self._writer.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()

    def _held(
        self,
        repository_id: int | sa.ScalarSelect[Any],
        content_type: str | sa.BindParameter[Any],
        number: int | sa.BindParameter[Any],
    ) -> sa.ColumnElement[bool]:
        """Rows of ``repository_content`` of one content type that version ``number`` of a
        repository holds (``repository_id`` may be :meth:`_repo_id`'s subquery)."""
        rc = self._rc
        return sa.and_(
            rc.c.repository_id == repository_id,
            rc.c.content_type == content_type,
            self._in_version(number),
        )

    def _in_version(self, number: int | sa.BindParameter[Any]) -> sa.ColumnElement[bool]:
        """Rows of ``repository_content`` that are in version ``number``."""
        rc = self._rc
        return sa.and_(
            rc.c.version_added <= number,
            sa.or_(rc.c.version_removed.is_(None), rc.c.version_removed > number),
        )

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

    def _repo_id(self, name: str | sa.BindParameter[Any]) -> sa.ScalarSelect[Any]:
        """The repository's id as a subquery: a hot read looks it up in its own statement
        (one round trip), and calls :meth:`_require_repo` only when it found nothing."""
        return sa.select(self._repos.c.id).where(self._repos.c.name == name).scalar_subquery()

    async def _require_repo(self, conn: AsyncConnection, name: str) -> None:
        """Raise :class:`RepositoryNotFound` unless the repository exists."""
        await self._repo_row(conn, name)

    async def _get_repo(
        self, conn: AsyncConnection, name: str, *, lock: bool = False
    ) -> RepositoryRecord:
        return self._repo_record(await self._repo_row(conn, name, lock=lock))

    async def _repo_row(self, conn: AsyncConnection, name: str, *, lock: bool = False) -> Any:
        """The repository's row (all its columns); locked for this transaction with ``lock``."""
        query = sa.select(self._repos).where(self._repos.c.name == name)
        if lock:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise RepositoryNotFound(f"no repository named {name!r}")
        return row

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
