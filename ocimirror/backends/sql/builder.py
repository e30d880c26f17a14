"""The builder of a repository's next version, inside its locked transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ocimirror.backends.metadata import (
    CONTENT_TYPES,
    Closure,
    ContentType,
    RepositoryRecord,
    VersionRecord,
)
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.schema import _CHUNK, _closure, _recorded
from ocimirror.errors import BlobNotFound, ManifestNotFound


class SQLVersionBuilder:
    """Changes for the next version, written straight into the locked transaction.

    While building, the version's number ``N`` is the newest, so "present" is simply
    ``version_removed IS NULL``.
    """

    def __init__(
        self, store: SQLEngine, conn: AsyncConnection, repo: RepositoryRecord, number: int
    ) -> None:
        self._store = store
        self._conn = conn
        self._repo = repo
        self.repository = repo.name
        self.number = number
        self.base_number = repo.latest_version
        #: The published version, set when the ``new_version`` block exits.
        self.result: VersionRecord | None = None
        self.created = False  # whether the block made a new version (set on leaving it)
        #: Whether the repository row itself changed (the mirror flag).
        self.repository_changed = False

    @property
    def mirrors(self) -> bool:
        """Whether the repository mirrors a remote (has one, or a sync published into it)."""
        return self._repo.remote is not None or self._repo.mirror

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
        """Add many keys (tags: name -> digest) with a few set-based statements; count new.

        Blobs, manifests and signatures must be recorded: a version only links content rows
        that exist (BlobNotFound / ManifestNotFound otherwise).
        """
        rc = self._store._rc
        keys = list(items)
        await self._require_recorded(content_type, keys)
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

    async def _require_recorded(self, content_type: ContentType, keys: list[str]) -> None:
        table = {
            "container.blob": self._store._blobs,
            "container.manifest": self._store._manifests,
            "container.signature": self._store._sigs,
        }.get(content_type)
        if table is None or not keys:
            return
        found = await _recorded(self._conn, table, keys)
        missing = [k for k in keys if k not in found]
        if missing:
            error = BlobNotFound if content_type == "container.blob" else ManifestNotFound
            raise error(f"{content_type} {missing[0]} is not recorded; it cannot enter a version")

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

    async def closure(self, roots: list[str]) -> Closure:
        """The recorded manifests ``roots`` and everything under them, in this transaction."""
        return await _closure(self._conn, self._store._refs, self._store._manifests, roots)

    async def set_mirror(self, mirror: bool = True) -> None:
        """Mark the repository as a mirror (synced from a remote) in the same transaction."""
        repos = self._store._repos
        await self._conn.execute(
            repos.update().where(repos.c.id == self._repo.id).values(mirror=mirror)
        )
        self.repository_changed = True

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
