"""Repository leases: one holder (a sync, or another long job) per repository at a time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from ocimirror.backends.metadata import Lease
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.schema import _now
from ocimirror.errors import RepositoryBusy


class LeaseMixin(SQLEngine):
    """Acquire, renew and release repository leases."""

    # -- leases --------------------------------------------------------------------------------

    async def acquire_lease(
        self,
        repository: str,
        *,
        holder: str,
        purpose: str,
        ttl: float,
        is_stale: Callable[[str], bool] | None = None,
    ) -> Lease:
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
        return Lease(repository=repository, holder=holder, purpose=purpose, expires=expires)

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
