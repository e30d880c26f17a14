"""Content records shared by every repository: blobs, manifests (with references), signatures."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ocimirror.backends.metadata import (
    BlobRecord,
    CleanupCounts,
    Closure,
    ContentBatch,
    ManifestRecord,
    Rejection,
    SignatureRecord,
)
from ocimirror.backends.sql.engine import SQLEngine, log
from ocimirror.backends.sql.schema import _CHUNK, _closure, _now, _recorded, _references


def _judge(
    batch: ContentBatch, stored: set[str], known_blobs: set[str]
) -> tuple[set[str], dict[str, Rejection]]:
    """Which manifests of a batch may be recorded: those whose every required reference is
    recorded already, a known blob, or accepted from the same batch (children first)."""
    accepted: set[str] = set()
    rejected: dict[str, Rejection] = {}

    def judge(digest: str, visiting: set[str]) -> bool:
        if digest in accepted or digest in stored:
            return True
        if digest in rejected or digest not in batch.manifests or digest in visiting:
            return False
        visiting.add(digest)
        for child, kind, _ in batch.manifests[digest][1]:
            ok = (
                judge(child, visiting)
                if kind == "manifest"
                else child in known_blobs
                if kind == "blob"
                else True
            )
            if not ok:
                rejected[digest] = Rejection(digest=digest, missing=child, kind=kind)
                return False
        accepted.add(digest)
        return True

    for digest in batch.manifests:
        judge(digest, set())
    return accepted | (set(batch.manifests) & stored), rejected


class ContentMixin(SQLEngine):
    """Blobs, manifests and signatures, and the orphan cleanup."""

    # -- content -----------------------------------------------------------------------------

    async def _touch(
        self, conn: AsyncConnection, table: sa.Table, keys: set[str], now: datetime
    ) -> None:
        ordered = sorted(keys)
        for i in range(0, len(ordered), _CHUNK):
            await conn.execute(
                table.update()
                .where(table.c.digest.in_(ordered[i : i + _CHUNK]))
                .values(touched=now)
            )

    async def record_content(self, batch: ContentBatch) -> dict[str, Rejection]:
        """Record a batch in one transaction, by the recording rule; see
        :meth:`~ocimirror.backends.metadata.ContentStore.record_content`."""
        now = _now()
        async with self._write() as conn:
            blob_children = {
                child
                for _, refs in batch.manifests.values()
                for child, kind, _ in refs
                if kind == "blob"
            }
            manifest_children = {
                child
                for _, refs in batch.manifests.values()
                for child, kind, _ in refs
                if kind == "manifest"
            }
            signed = {s.manifest_digest for s in batch.signatures.values()}
            arrived = set(batch.blobs) | set(batch.remote_blobs)
            known_blobs = arrived | await _recorded(conn, self._blobs, blob_children - arrived)
            stored = await _recorded(
                conn, self._manifests, set(batch.manifests) | manifest_children | signed
            )
            accepted, rejected = _judge(batch, stored, known_blobs)

            if batch.blobs:
                await conn.execute(
                    self._insert_ignore(self._blobs),
                    [
                        {"digest": d, "size": size, "media_type": mt, "touched": now}
                        for d, (size, mt) in batch.blobs.items()
                    ],
                )
            if batch.remote_blobs:
                await conn.execute(
                    self._insert_ignore(self._blobs),
                    [
                        {"digest": d, "size": size, "media_type": mt, "touched": now}
                        for d, (size, mt, _) in batch.remote_blobs.items()
                    ],
                )
                await conn.execute(
                    self._insert_ignore(self._remote_content),
                    [
                        {"digest": d, "remote": remote, "touched": now}
                        for d, (_, _, remote) in batch.remote_blobs.items()
                    ],
                )
            await self._touch(conn, self._blobs, arrived | batch.touch_blobs | blob_children, now)
            new = [batch.manifests[d] for d in accepted if d not in stored]
            if new:
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
                        for m, _ in new
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
                    for m, children in new
                    for i, (child, kind, platform) in enumerate(children)
                ]
                if refs:
                    await conn.execute(self._insert_ignore(self._refs), refs)
            touched = (accepted & stored) | (batch.touch_manifests | manifest_children) & (
                stored | accepted
            )
            await self._touch(conn, self._manifests, touched, now)
            signatures = []
            for sig in batch.signatures.values():
                if sig.manifest_digest in stored or sig.manifest_digest in accepted:
                    signatures.append(sig)
                else:
                    rejected[sig.digest] = Rejection(
                        digest=sig.digest, missing=sig.manifest_digest, kind="signed"
                    )
            if signatures:
                await conn.execute(
                    self._insert_ignore(self._sigs),
                    [
                        {
                            "digest": sig.digest,
                            "manifest_digest": sig.manifest_digest,
                            "name": sig.name,
                            "key_id": sig.key_id,
                            "sig_type": sig.sig_type,
                            "data": sig.data,
                            "touched": now,
                        }
                        for sig in signatures
                    ],
                )
                await self._touch(conn, self._sigs, {s.digest for s in signatures}, now)
        for refusal in rejected.values():
            log.warning("not recording %s", refusal.reason)
        return rejected

    async def closure(self, roots: list[str]) -> Closure:
        """The recorded manifests ``roots`` and everything under them."""
        async with self._read() as conn:
            return await _closure(conn, self._refs, self._manifests, roots)

    async def references_many(self, digests: list[str]) -> dict[str, list[tuple[str, str]]]:
        """parent -> [(child, kind), ...] for many stored manifests at once."""
        async with self._read() as conn:
            return await _references(conn, self._refs, digests)

    async def existing_manifests(self, digests: list[str]) -> set[str]:
        """Which of ``digests`` are stored manifests."""
        if not digests:
            return set()
        async with self._read() as conn:
            return await _recorded(conn, self._manifests, digests)

    async def get_blob(self, digest: str) -> BlobRecord | None:
        """The blob's record, or None."""
        async with self._read() as conn:
            row = (
                await conn.execute(sa.select(self._blobs).where(self._blobs.c.digest == digest))
            ).first()
        if row is None:
            return None
        return BlobRecord(digest=row.digest, size=row.size, media_type=row.media_type)

    @functools.cached_property
    def _manifest_query(self) -> sa.Select[Any]:
        # Built once: every manifest a server process has not cached yet is read this way.
        return sa.select(self._manifests).where(self._manifests.c.digest == sa.bindparam("digest"))

    async def get_manifest(self, digest: str) -> ManifestRecord | None:
        """The manifest's record, or None."""
        async with self._read() as conn:
            row = (await conn.execute(self._manifest_query, {"digest": digest})).first()
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
        async with self._read() as conn:
            return await _recorded(conn, self._blobs, digests)

    async def signatures_of_manifests(self, digests: list[str]) -> dict[str, list[SignatureRecord]]:
        """manifest digest -> every recorded signature of it (in any repository), by name."""
        s = self._sigs
        found: dict[str, list[SignatureRecord]] = {}
        ordered = sorted(set(digests))
        async with self._read() as conn:
            for i in range(0, len(ordered), _CHUNK):
                rows = await conn.execute(
                    sa.select(s)
                    .where(s.c.manifest_digest.in_(ordered[i : i + _CHUNK]))
                    .order_by(s.c.manifest_digest, s.c.name)
                )
                for row in rows:
                    found.setdefault(row.manifest_digest, []).append(signature_record(row))
        return found

    async def blob_sources(self, digest: str) -> list[str]:
        """The remotes a blob recorded without its bytes can be fetched from, by name."""
        rc = self._remote_content
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(rc.c.remote).where(rc.c.digest == digest).order_by(rc.c.remote)
            )
            return list(rows.scalars())

    async def remote_sources(
        self, digest: str
    ) -> list[tuple[str, dict[str, Any], tuple[datetime, str] | None]]:
        """(remote name, its fields, its cooldown or None) for each remote that provides a
        blob recorded without its bytes, in one read."""
        rc, r, c = self._remote_content, self._remotes, self._cooldowns
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(r.c.name, r.c.fields, c.c.until, c.c.reason)
                .select_from(
                    rc.join(r, r.c.name == rc.c.remote).outerjoin(c, c.c.remote == rc.c.remote)
                )
                .where(rc.c.digest == digest)
                .order_by(r.c.name)
            )
            return [
                (
                    row.name,
                    dict(row.fields),
                    None if row.until is None else (row.until, row.reason),
                )
                for row in rows
            ]

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
            for i in range(0, len(blobs), _CHUNK):
                await conn.execute(
                    self._remote_content.delete().where(
                        self._remote_content.c.digest.in_(blobs[i : i + _CHUNK])
                    )
                )
        return CleanupCounts(
            manifests=len(manifests), blobs=list(blobs), signatures=len(signatures)
        )


def signature_record(row: Any) -> SignatureRecord:
    """A row of the ``signatures`` table as its record."""
    return SignatureRecord(
        digest=row.digest,
        manifest_digest=row.manifest_digest,
        name=row.name,
        key_id=row.key_id,
        sig_type=row.sig_type,
        data=row.data,
    )
