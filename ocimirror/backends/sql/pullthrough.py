"""Pull-through caches: their remotes and distributions, and when each cached tag was last
checked upstream and last pulled."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from ocimirror.backends.pullthrough import PullThroughRecord
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.schema import _now
from ocimirror.errors import AlreadyExists, DistributionNotFound, RemoteNotFound


class PullThroughMixin(SQLEngine):
    """Pull-through remotes and distributions (one JSON ``fields`` each), and tag times."""

    # -- remotes and distributions -------------------------------------------------------------

    def _pt_table(self, kind: str) -> sa.Table:
        return self._pt_remotes if kind == "remote" else self._pt_dists

    async def create_pull_through(
        self, kind: str, name: str, fields: Mapping[str, Any]
    ) -> PullThroughRecord:
        """Store a pull-through ``"remote"`` or ``"distribution"``; AlreadyExists when the
        name (or a distribution's base path) is taken."""
        table = self._pt_table(kind)
        values: dict[str, Any] = {"name": name, "fields": dict(fields), "created": _now()}
        if kind == "distribution":
            values["base_path"] = fields["base_path"]
        try:
            async with self._write() as conn:
                await conn.execute(table.insert().values(**values))
        except SAIntegrityError as exc:
            raise AlreadyExists(f"a pull-through {kind} {name!r} already exists") from exc
        return PullThroughRecord(kind=kind, name=name, fields=dict(fields))

    async def get_pull_through(self, kind: str, name: str) -> PullThroughRecord:
        """One pull-through remote or distribution by name."""
        table = self._pt_table(kind)
        async with self._read() as conn:
            row = (
                await conn.execute(sa.select(table.c.fields).where(table.c.name == name))
            ).first()
        if row is None:
            error = RemoteNotFound if kind == "remote" else DistributionNotFound
            raise error(f"no pull-through {kind} named {name!r}")
        return PullThroughRecord(kind=kind, name=name, fields=dict(row.fields))

    async def list_pull_through(self, kind: str) -> list[PullThroughRecord]:
        """Every pull-through remote or distribution, by name."""
        table = self._pt_table(kind)
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(table.c.name, table.c.fields).order_by(table.c.name)
            )
            return [PullThroughRecord(kind=kind, name=r.name, fields=dict(r.fields)) for r in rows]

    async def update_pull_through(
        self, kind: str, name: str, fields: Mapping[str, Any]
    ) -> PullThroughRecord:
        """Replace the fields of a pull-through remote or distribution."""
        table = self._pt_table(kind)
        values: dict[str, Any] = {"fields": dict(fields)}
        if kind == "distribution":
            values["base_path"] = fields["base_path"]
        try:
            async with self._write() as conn:
                result = await conn.execute(
                    table.update().where(table.c.name == name).values(**values)
                )
        except SAIntegrityError as exc:
            raise AlreadyExists(f"another pull-through {kind} has that base path") from exc
        if result.rowcount == 0:
            error = RemoteNotFound if kind == "remote" else DistributionNotFound
            raise error(f"no pull-through {kind} named {name!r}")
        return PullThroughRecord(kind=kind, name=name, fields=dict(fields))

    async def delete_pull_through(self, kind: str, name: str) -> None:
        """Delete a pull-through remote or distribution (what it cached stays)."""
        table = self._pt_table(kind)
        async with self._write() as conn:
            result = await conn.execute(table.delete().where(table.c.name == name))
        if result.rowcount == 0:
            error = RemoteNotFound if kind == "remote" else DistributionNotFound
            raise error(f"no pull-through {kind} named {name!r}")

    # -- cached tags ---------------------------------------------------------------------------

    async def tag_times(self, repository: str, tag: str) -> tuple[datetime | None, datetime | None]:
        """(last checked upstream, last pulled) of a cached tag; ``(None, None)`` if never."""
        async with self._read() as conn:
            params = {"repository": repository, "tag": tag}
            row = (await conn.execute(self._tag_times_query, params)).first()
        return (None, None) if row is None else (row.checked, row.pulled)

    @functools.cached_property
    def _tag_times_query(self) -> sa.Select[Any]:
        # Built once: a pull-through server process asks this for every tag it serves.
        t, bind = self._pt_tags, sa.bindparam
        return sa.select(t.c.checked, t.c.pulled).where(
            t.c.repository == bind("repository"), t.c.tag == bind("tag")
        )

    async def set_tag_times(
        self,
        repository: str,
        tag: str | list[str],
        *,
        checked: datetime | None = None,
        pulled: datetime | None = None,
    ) -> None:
        """Record when a cached tag (or several, in one transaction) was checked upstream
        and/or pulled."""
        t = self._pt_tags
        changes = {k: v for k, v in (("checked", checked), ("pulled", pulled)) if v is not None}
        tags = [tag] if isinstance(tag, str) else list(tag)
        if not changes or not tags:
            return
        async with self._write() as conn:
            for name in tags:
                result = await conn.execute(
                    t.update()
                    .where(t.c.repository == repository, t.c.tag == name)
                    .values(**changes)
                )
                if result.rowcount == 0:
                    row = {"repository": repository, "tag": name, "checked": checked}
                    await conn.execute(self._insert_ignore(t), [{**row, "pulled": pulled}])

    async def pulled_tags(self, prefix: str) -> list[tuple[str, str, datetime | None]]:
        """(repository, tag, last pulled) of every cached tag of repositories named
        ``<prefix>/...``, least recently pulled first."""
        t = self._pt_tags
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(t.c.repository, t.c.tag, t.c.pulled)
                .where(t.c.repository.like(f"{escaped}/%", escape="\\"))
                .order_by(t.c.pulled.asc().nulls_first(), t.c.repository, t.c.tag)
            )
            return [(r.repository, r.tag, r.pulled) for r in rows]

    async def forget_tag(self, repository: str, tag: str) -> None:
        """Drop a cached tag's times (it was evicted)."""
        t = self._pt_tags
        async with self._write() as conn:
            await conn.execute(t.delete().where(t.c.repository == repository, t.c.tag == tag))
