"""Content records shared by every repository: blobs, manifests (with references), signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ocimirror.backends.metadata import BlobRecord, CleanupCounts, ManifestRecord, SignatureRecord
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.schema import _CHUNK, _now, _references


class ContentMixin(SQLEngine):
    """Blobs, manifests and signatures, and the orphan cleanup."""

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
