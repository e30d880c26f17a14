"""Blob uploads in progress: one row each, shared by every server process."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ocimirror.backends.metadata import UploadRecord
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.schema import _now
from ocimirror.errors import ChunkOutOfOrder, UploadNotFound


class UploadMixin(SQLEngine):
    """Create, extend, read and forget blob uploads."""

    def _upload_record(self, row: sa.Row[Any]) -> UploadRecord:
        return UploadRecord(
            id=row.id,
            name=row.name,
            size=row.size,
            parts=tuple((str(digest), int(size)) for digest, size in row.parts),
            created=row.created,
            touched=row.touched,
        )

    async def _locked_upload(self, conn: AsyncConnection, upload_id: str) -> sa.Row[Any] | None:
        uploads = self._uploads
        query = sa.select(uploads).where(uploads.c.id == upload_id).with_for_update()
        return (await conn.execute(query)).first()

    async def create_upload(self, upload_id: str, name: str) -> UploadRecord:
        """Start an upload with no bytes."""
        now = _now()
        async with self._write() as conn:
            await conn.execute(
                self._uploads.insert().values(
                    id=upload_id, name=name, size=0, parts=[], created=now, touched=now
                )
            )
        return UploadRecord(id=upload_id, name=name, size=0, parts=(), created=now, touched=now)

    async def get_upload(self, upload_id: str) -> UploadRecord:
        """The upload; UploadNotFound if there is none."""
        async with self._read() as conn:
            row = (
                await conn.execute(sa.select(self._uploads).where(self._uploads.c.id == upload_id))
            ).first()
        if row is None:
            raise UploadNotFound(f"no blob upload {upload_id[:80]!r} is in progress")
        return self._upload_record(row)

    async def append_upload(
        self, upload_id: str, *, offset: int, digest: str, size: int
    ) -> UploadRecord:
        """Add a part at ``offset`` (which must be the bytes received so far), atomically."""
        uploads = self._uploads
        async with self._write() as conn:
            row = await self._locked_upload(conn, upload_id)
            if row is None:
                raise UploadNotFound(f"no blob upload {upload_id[:80]!r} is in progress")
            if row.size != offset:
                raise ChunkOutOfOrder(
                    f"the chunk starts at byte {offset}, but the upload has {row.size} bytes; "
                    f"send the chunk that starts at {row.size}",
                    detail={"received": row.size},
                )
            parts = [*row.parts, [digest, size]]
            now = _now()
            await conn.execute(
                uploads.update()
                .where(uploads.c.id == upload_id)
                .values(size=row.size + size, parts=parts, touched=now)
            )
        record = self._upload_record(row)
        return UploadRecord(
            id=record.id,
            name=record.name,
            size=record.size + size,
            parts=(*record.parts, (digest, size)),
            created=record.created,
            touched=now,
        )

    async def delete_upload(self, upload_id: str) -> UploadRecord | None:
        """Forget the upload; the record it had, if any."""
        uploads = self._uploads
        async with self._write() as conn:
            row = await self._locked_upload(conn, upload_id)
            if row is None:
                return None
            await conn.execute(uploads.delete().where(uploads.c.id == upload_id))
        return self._upload_record(row)

    async def complete_upload(
        self, upload_id: str, *, digest: str, size: int, media_type: str | None = None
    ) -> None:
        """Record the upload's blob and forget the upload, in one transaction."""
        now = _now()
        async with self._write() as conn:
            await conn.execute(
                self._insert_ignore(self._blobs),
                [{"digest": digest, "size": size, "media_type": media_type, "touched": now}],
            )
            await conn.execute(
                self._blobs.update().where(self._blobs.c.digest == digest).values(touched=now)
            )
            await conn.execute(self._uploads.delete().where(self._uploads.c.id == upload_id))

    async def expire_uploads(self, older_than: datetime) -> list[UploadRecord]:
        """Forget uploads untouched since ``older_than``; the records they had."""
        uploads = self._uploads
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    sa.select(uploads).where(uploads.c.touched < older_than).with_for_update()
                )
            ).all()
            if rows:
                await conn.execute(uploads.delete().where(uploads.c.id.in_([r.id for r in rows])))
        return [self._upload_record(r) for r in rows]

    async def upload_parts(self) -> set[str]:
        """The digests of every part of every upload in progress."""
        async with self._read() as conn:
            rows = await conn.execute(sa.select(self._uploads.c.parts))
            return {str(digest) for (parts,) in rows for digest, _ in parts}
