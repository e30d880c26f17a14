"""Users of the registry API and their grants (token auth)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ocimirror.backends.metadata import Grant, Role, UserRecord
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.schema import _now
from ocimirror.errors import AlreadyExists, NotFound, UserNotFound


class UserMixin(SQLEngine):
    """Users, their password hashes and their grants."""

    async def create_user(
        self, username: str, *, password_hash: str, admin: bool = False
    ) -> UserRecord:
        """Store a user with no grants; AlreadyExists when the name is taken."""
        created = _now()
        try:
            async with self._write() as conn:
                await conn.execute(
                    self._users.insert().values(
                        username=username,
                        password_hash=password_hash,
                        admin=admin,
                        created=created,
                    )
                )
        except SAIntegrityError as exc:
            raise AlreadyExists(f"a user named {username!r} already exists") from exc
        return UserRecord(username=username, admin=admin, created=created)

    async def get_user(self, username: str) -> UserRecord:
        """The user named ``username``; UserNotFound otherwise."""
        async with self._read() as conn:
            return await self._user(conn, username)

    async def list_users(self) -> list[UserRecord]:
        """Every user, by name."""
        u, g = self._users, self._grants
        async with self._read() as conn:
            users = (await conn.execute(sa.select(u).order_by(u.c.username))).all()
            rows = await conn.execute(sa.select(g).order_by(g.c.user_id, g.c.pattern))
            grants: dict[int, list[Grant]] = defaultdict(list)
            for row in rows:
                grants[row.user_id].append(_grant(row))
        return [_record(row, grants[row.id]) for row in users]

    async def get_password_hash(self, username: str) -> str | None:
        """The user's password hash, or None when there is no such user."""
        u = self._users
        async with self._read() as conn:
            found = await conn.scalar(sa.select(u.c.password_hash).where(u.c.username == username))
        return cast("str | None", found)

    async def update_user(
        self, username: str, *, password_hash: str | None = None, admin: bool | None = None
    ) -> UserRecord:
        """Change the password hash or the admin flag (None keeps it)."""
        values: dict[str, Any] = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if admin is not None:
            values["admin"] = admin
        async with self._write() as conn:
            if values:
                result = await conn.execute(
                    self._users.update().where(self._users.c.username == username).values(values)
                )
                if result.rowcount == 0:
                    raise UserNotFound(f"no user named {username!r}")
            return await self._user(conn, username)

    async def set_grant(self, username: str, pattern: str, role: Role) -> UserRecord:
        """Give the user ``role`` on ``pattern``, replacing the role it had there."""
        g = self._grants
        async with self._write() as conn:
            user_id = await self._user_id(conn, username)
            await conn.execute(g.delete().where(g.c.user_id == user_id, g.c.pattern == pattern))
            await conn.execute(g.insert().values(user_id=user_id, pattern=pattern, role=role))
            return await self._user(conn, username)

    async def delete_grant(self, username: str, pattern: str) -> UserRecord:
        """Take back the user's grant on ``pattern``; NotFound when there is none."""
        g = self._grants
        async with self._write() as conn:
            user_id = await self._user_id(conn, username)
            result = await conn.execute(
                g.delete().where(g.c.user_id == user_id, g.c.pattern == pattern)
            )
            if result.rowcount == 0:
                raise NotFound(f"user {username!r} has no grant on {pattern!r}")
            return await self._user(conn, username)

    async def delete_user(self, username: str) -> None:
        """Delete a user and their grants."""
        async with self._write() as conn:
            user_id = await self._user_id(conn, username)
            # Explicitly, not only by the foreign key's cascade: SQLite enforces it only when
            # the connection turned foreign keys on.
            await conn.execute(self._grants.delete().where(self._grants.c.user_id == user_id))
            await conn.execute(self._users.delete().where(self._users.c.id == user_id))

    async def _user_id(self, conn: AsyncConnection, username: str) -> int:
        found = await conn.scalar(
            sa.select(self._users.c.id).where(self._users.c.username == username)
        )
        if found is None:
            raise UserNotFound(f"no user named {username!r}")
        return int(found)

    async def _user(self, conn: AsyncConnection, username: str) -> UserRecord:
        u, g = self._users, self._grants
        row = (await conn.execute(sa.select(u).where(u.c.username == username))).first()
        if row is None:
            raise UserNotFound(f"no user named {username!r}")
        rows = await conn.execute(sa.select(g).where(g.c.user_id == row.id).order_by(g.c.pattern))
        return _record(row, [_grant(r) for r in rows])


def _grant(row: sa.Row[Any]) -> Grant:
    return Grant(pattern=row.pattern, role=row.role)


def _record(row: sa.Row[Any], grants: list[Grant]) -> UserRecord:
    return UserRecord(
        username=row.username, admin=bool(row.admin), created=row.created, grants=tuple(grants)
    )
