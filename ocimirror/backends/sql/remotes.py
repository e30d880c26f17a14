"""Remotes (where mirrors sync from) and distributions (what is served where)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ocimirror.backends.metadata import DistributionRecord, RemoteRecord, RepositoryRecord
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.schema import _now
from ocimirror.errors import AlreadyExists, DistributionNotFound, RemoteNotFound


class RemoteMixin(SQLEngine):
    """Remotes and distributions."""

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
            # A changed remote (a fixed URL, new credentials) is worth trying again at once.
            await conn.execute(self._cooldowns.delete().where(self._cooldowns.c.remote == name))
        return RemoteRecord(name=name, fields=dict(fields))

    async def get_remote_cooldown(self, remote: str) -> tuple[datetime, str] | None:
        """Until when a remote that failed is left alone, and why; ``None`` when it is not."""
        c = self._cooldowns
        async with self._read() as conn:
            row = (
                await conn.execute(sa.select(c.c.until, c.c.reason).where(c.c.remote == remote))
            ).first()
        return None if row is None else (row.until, row.reason)

    async def set_remote_cooldown(self, remote: str, until: datetime, reason: str) -> None:
        """Leave a remote alone until ``until`` (every process reads this)."""
        c = self._cooldowns
        async with self._write() as conn:
            await conn.execute(c.delete().where(c.c.remote == remote))
            await conn.execute(c.insert().values(remote=remote, until=until, reason=reason))

    async def delete_remote(self, name: str) -> None:
        """Delete a remote; repositories that named it as their remote forget it."""
        async with self._write() as conn:
            result = await conn.execute(self._remotes.delete().where(self._remotes.c.name == name))
            if result.rowcount == 0:
                raise RemoteNotFound(f"no remote named {name!r}")
            await conn.execute(
                self._repos.update().where(self._repos.c.remote == name).values(remote=None)
            )
            await conn.execute(self._cooldowns.delete().where(self._cooldowns.c.remote == name))

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

    async def serving(self, base_path: str) -> tuple[DistributionRecord, RepositoryRecord | None]:
        """The distribution at ``base_path`` and the repository it serves, in one read."""
        query = self._dist_query().where(self._dists.c.base_path == base_path)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                raise DistributionNotFound(f"no distribution {base_path!r}")
            dist = self._dist_record(row)
            if dist.repository is None:
                return dist, None
            return dist, await self._get_repo(conn, dist.repository)

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
