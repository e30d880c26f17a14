"""The schema (:func:`build_metadata`), its version and upgrade steps, and small shared helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from ocimirror.backends.metadata import CONTENT_TYPES, Closure

#: The schema version this code writes and reads.
SCHEMA_VERSION = 3


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
        # When the burst of pushes this version belongs to began (None: not made by a push);
        # see ``docs/push.md`` for how a burst coalesces into one version.
        sa.Column("burst_started", UTCDateTime),
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
    _add_version_2_tables(md)
    _add_version_3_tables(md)
    return md


def _add_version_2_tables(md: sa.MetaData) -> None:
    """Users and their grants (token auth), and blob uploads in progress (push)."""
    sa.Table(
        "users",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(255), nullable=False, unique=True),
        # A password hash in the hashing library's own encoded form (algorithm and salt in it).
        sa.Column("password_hash", sa.String(512), nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False, default=False),
        sa.Column("created", UTCDateTime, nullable=False),
    )
    sa.Table(
        "user_grants",
        md,
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        # A base-path pattern with the wildcards of tag filters (``team/*``).
        sa.Column("pattern", sa.String(255), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
    )
    # A blob upload in progress: its bytes so far are ``parts``, each an unrecorded blob in the
    # blob store, so an upload survives a restart and its requests may reach any process.
    sa.Table(
        "uploads",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False, default=0),
        sa.Column("parts", sa.JSON, nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Column("touched", UTCDateTime, nullable=False, index=True),
    )


def _add_version_3_tables(md: sa.MetaData) -> None:
    """Remote content (on-demand and streamed downloads), remotes' cooldowns, and
    pull-through caches."""
    # Where a blob recorded without its bytes (a layer of an on-demand sync) comes from. The
    # blob has its row in ``blobs`` like any other; its bytes are fetched on first request.
    sa.Table(
        "remote_content",
        md,
        sa.Column("digest", sa.String(150), primary_key=True),
        sa.Column("remote", sa.String(255), primary_key=True),
        sa.Column("touched", UTCDateTime, nullable=False),
    )
    # Pull-through caches: a remote of a whole registry, and a base path that serves
    # ``<base_path>/<upstream name>`` from it, making repositories on first pull.
    sa.Table(
        "pull_through_remotes",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
    )
    sa.Table(
        "pull_through_distributions",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("base_path", sa.String(255), nullable=False, unique=True),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
    )
    # When a cached tag was last checked upstream and last pulled (for retention).
    sa.Table(
        "pull_through_tags",
        md,
        sa.Column("repository", sa.String(255), primary_key=True),
        sa.Column("tag", sa.String(255), primary_key=True),
        sa.Column("checked", UTCDateTime),
        sa.Column("pulled", UTCDateTime),
    )
    # A remote that failed is left alone until ``until``; every process reads it here.
    sa.Table(
        "remote_cooldowns",
        md,
        sa.Column("remote", sa.String(255), primary_key=True),
        sa.Column("until", UTCDateTime, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def _upgrade_2_to_3(conn: sa.Connection) -> None:
    md = build_metadata()
    for name in (
        "remote_content",
        "remote_cooldowns",
        "pull_through_remotes",
        "pull_through_distributions",
        "pull_through_tags",
    ):
        md.tables[name].create(conn, checkfirst=True)


def _upgrade_1_to_2(conn: sa.Connection) -> None:
    md = build_metadata()
    for name in ("users", "user_grants", "uploads"):
        md.tables[name].create(conn, checkfirst=True)
    column = md.tables["repository_versions"].c.burst_started
    kind = column.type.compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE repository_versions ADD COLUMN burst_started {kind}"))


#: Upgrade steps: ``MIGRATIONS[n]`` takes a version-``n`` schema to ``n + 1``.
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: _upgrade_1_to_2,
    2: _upgrade_2_to_3,
}


def normalize_url(url: str) -> str:
    """Pick the async driver for a plain SQLAlchemy URL (``sqlite://``, ``postgresql://``)."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


_CHUNK = 500  # keys per IN (...) list: well under every engine's bind-parameter limit


def _recorded_query(table: sa.Table) -> sa.Select[Any]:
    # Built once per table, kept in the table's own info (a sync asks for every manifest it
    # brings): an expanding parameter keeps one statement, and one compiled form, for any
    # number of keys.
    query = table.info.get("ocimirror.recorded")
    if query is None:
        keys: sa.BindParameter[list[str]] = sa.bindparam("keys", expanding=True)
        query = table.info["ocimirror.recorded"] = sa.select(table.c.digest).where(
            table.c.digest.in_(keys)
        )
    return query  # type: ignore[no-any-return]


async def _recorded(conn: AsyncConnection, table: sa.Table, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` have a row in a content table (blobs, manifests, signatures)."""
    found: set[str] = set()
    ordered = sorted(set(keys))
    query = _recorded_query(table)
    for i in range(0, len(ordered), _CHUNK):
        rows = await conn.execute(query, {"keys": ordered[i : i + _CHUNK]})
        found.update(rows.scalars())
    return found


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


async def _closure(
    conn: AsyncConnection, refs: sa.Table, manifests: sa.Table, roots: list[str]
) -> Closure:
    """The one closure: recorded manifests ``roots`` and everything under them, level by
    level (parents first), with blobs in first-seen order and unknown digests in ``missing``."""
    seen: dict[str, None] = {}
    blobs: dict[str, None] = {}
    missing: list[str] = []
    level = list(dict.fromkeys(roots))
    while level:
        found = await _recorded(conn, manifests, level)
        missing += [d for d in level if d not in found]
        level = [d for d in level if d in found]
        seen.update(dict.fromkeys(level))
        children = await _references(conn, refs, level)
        following: dict[str, None] = {}
        for parent in level:
            for child, kind in children.get(parent, []):
                if kind == "manifest" and child not in seen:
                    following[child] = None
                elif kind == "blob":
                    blobs[child] = None
        level = list(following)
    return Closure(manifests=tuple(seen), blobs=tuple(blobs), missing=tuple(missing))


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
    return {ct: counts[ct] for ct in CONTENT_TYPES if counts.get(ct)}
