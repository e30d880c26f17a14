"""Repositories and their versions: create, list, update, delete, publish, retention, reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ocimirror.backends.metadata import CONTENT_TYPES, ContentType, RepositoryRecord, VersionRecord
from ocimirror.backends.sql.builder import SQLVersionBuilder
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.schema import _now, _ordered
from ocimirror.errors import AlreadyExists, Conflict


class RepositoryMixin(SQLEngine):
    """Repositories and versions."""

    # -- repositories ------------------------------------------------------------------------

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
