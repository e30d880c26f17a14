"""Repositories and their versions: create, list, update, delete, publish, retention, reads."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ocimirror.backends.metadata import (
    CONTENT_TYPES,
    REQUIRED_KINDS,
    Coalesce,
    ContentType,
    Lease,
    ManifestRecord,
    RepositoryRecord,
    SignatureRecord,
    VersionRecord,
)
from ocimirror.backends.sql.builder import SQLVersionBuilder
from ocimirror.backends.sql.content import signature_record
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.schema import _CHUNK, _now, _ordered, _references
from ocimirror.errors import AlreadyExists, Conflict, IncompleteContent, LeaseLost


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

    # ``mirror`` is not here: it changes in a version's transaction (``builder.set_mirror``).
    _REPO_FIELDS = frozenset({"description", "retain_repo_versions", "remote"})

    async def update_repository(self, name: str, **fields: Any) -> RepositoryRecord:
        """Change some of description, retain_repo_versions, remote."""
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
        self,
        repository: str,
        *,
        base_version: int | None = None,
        lease: Lease | None = None,
        coalesce: Coalesce | None = None,
    ) -> AsyncIterator[SQLVersionBuilder]:
        """Build the next version in one locked transaction.

        On a clean exit with changes, the version is checked (closed under references:
        IncompleteContent otherwise) and published (complete, latest) and retention applied;
        with no changes nothing is written (but a changed mirror flag) and ``builder.result``
        is the current latest version. With ``lease``, the lease must still be this holder's
        (LeaseLost otherwise): the check runs under the repository's row lock, which taking a
        lease needs too, so no other holder can slip in before the commit. With ``coalesce``
        (pushes), the previous version is squashed into the new one when it belongs to the
        same burst of pushes. An exception rolls everything back.
        """
        async with self._write() as conn:
            row = await self._repo_row(conn, repository, lock=True)
            repo, number = self._repo_record(row), row.next_version
            if lease is not None:
                await self._check_lease(conn, repo, lease)
            builder = SQLVersionBuilder(self, conn, repo, number)
            if base_version is not None and base_version != repo.latest_version:
                await self._require_version(conn, repo, base_version)
                await builder._reset_to(base_version)
            yield builder
            result = await self._publish(conn, repo, builder, base_version, coalesce)
            if result is None:
                builder.result = await self._latest_record(conn, repo)
                if not builder.repository_changed:
                    await conn.rollback()
                return
            builder.result = result
            builder.created = True

    async def _check_lease(
        self, conn: AsyncConnection, repo: RepositoryRecord, lease: Lease
    ) -> None:
        holder = (
            await conn.execute(
                sa.select(self._leases.c.holder).where(self._leases.c.repository_id == repo.id)
            )
        ).scalar()
        if holder != lease.holder:
            raise LeaseLost(
                f"repository {repo.name!r}: the {lease.purpose} no longer holds its lease "
                f"(now {'held by ' + holder if holder else 'free'}); it may not publish"
            )

    async def _check_closed(
        self, conn: AsyncConnection, repo: RepositoryRecord, number: int
    ) -> None:
        """Refuse a version that is not closed under references (see
        :mod:`ocimirror.backends.metadata`). Only this version's changes need checking, and
        each step is an indexed lookup of a set the changes bound, so the check costs
        O(changes) on every engine whatever its statistics say."""
        rc, sigs = self._rc, self._sigs
        mine = rc.c.repository_id == repo.id
        added: dict[str, dict[str, str | None]] = {ct: {} for ct in CONTENT_TYPES}
        rows = await conn.execute(
            sa.select(rc.c.content_type, rc.c.key, rc.c.value).where(
                mine, rc.c.version_added == number, rc.c.version_removed.is_(None)
            )
        )
        for content_type, key, value in rows:
            added[content_type][key] = value
        removed: dict[str, set[str]] = {ct: set() for ct in CONTENT_TYPES}
        gone_rows = await conn.execute(
            sa.select(rc.c.content_type, rc.c.key).where(mine, rc.c.version_removed == number)
        )
        for content_type, key in gone_rows:
            removed[content_type].add(key)

        async def present(content_type: str, keys: set[str]) -> set[str]:
            found: set[str] = set()
            ordered = sorted(keys)
            for i in range(0, len(ordered), _CHUNK):
                result = await conn.execute(
                    sa.select(rc.c.key).where(
                        mine,
                        rc.c.content_type == content_type,
                        rc.c.key.in_(ordered[i : i + _CHUNK]),
                        rc.c.version_removed.is_(None),
                    )
                )
                found.update(result.scalars())
            return found

        def refuse(message: str, **detail: str) -> NoReturn:
            raise IncompleteContent(
                f"{repo.name!r}: {message}; nothing was published", detail=detail
            )

        # Each manifest this version adds needs its children and blobs in it.
        references = await _references(conn, self._refs, sorted(added["container.manifest"]))
        needs: dict[str, dict[str, str]] = {"container.manifest": {}, "container.blob": {}}
        for parent, children in references.items():
            for child, kind in children:
                if kind in REQUIRED_KINDS:
                    needs[REQUIRED_KINDS[kind]].setdefault(child, parent)
        for content_type, wanted in needs.items():
            missing = set(wanted) - await present(content_type, set(wanted))
            if missing:
                child = min(missing)
                refuse(
                    f"manifest {wanted[child]} needs {content_type} {child}, which the version "
                    "would not hold",
                    manifest=wanted[child],
                    missing=child,
                )
        # Each tag it adds or moves needs its manifest in it.
        targets = {str(v): k for k, v in added["container.tag"].items()}
        missing = set(targets) - await present("container.manifest", set(targets))
        if missing:
            target = min(missing)
            refuse(
                f"tag {targets[target]!r} points at {target}, which the version would not hold",
                tag=targets[target],
                missing=target,
            )
        # Each signature it adds needs its manifest in it.
        signed: dict[str, str] = {}
        keys = sorted(added["container.signature"])
        for i in range(0, len(keys), _CHUNK):
            result = await conn.execute(
                sa.select(sigs.c.digest, sigs.c.manifest_digest).where(
                    sigs.c.digest.in_(keys[i : i + _CHUNK])
                )
            )
            signed.update({m: d for d, m in result})
        missing = set(signed) - await present("container.manifest", set(signed))
        if missing:
            target = min(missing)
            refuse(
                f"signature {signed[target]} signs {target}, which the version would not hold",
                signature=signed[target],
                missing=target,
            )
        # Nothing it removes may still be needed by what remains.
        gone_manifests = removed["container.manifest"] - await present(
            "container.manifest", removed["container.manifest"]
        )
        gone_blobs = removed["container.blob"] - await present(
            "container.blob", removed["container.blob"]
        )
        parents: dict[str, str] = {}
        for kind, gone in (("manifest", gone_manifests), ("blob", gone_blobs)):
            ordered = sorted(gone)
            for i in range(0, len(ordered), _CHUNK):
                result = await conn.execute(
                    sa.select(self._refs.c.parent, self._refs.c.child).where(
                        self._refs.c.child.in_(ordered[i : i + _CHUNK]), self._refs.c.kind == kind
                    )
                )
                parents.update({p: c for p, c in result})
        if kept := await present("container.manifest", set(parents)):
            parent = min(kept)
            refuse(
                f"removing {parents[parent]} would break manifest {parent}, which the version "
                "keeps",
                removed=parents[parent],
                manifest=parent,
            )
        ordered = sorted(gone_manifests)
        for i in range(0, len(ordered), _CHUNK):
            chunk = ordered[i : i + _CHUNK]
            tag = (
                await conn.execute(
                    sa.select(rc.c.key, rc.c.value)
                    .where(
                        mine,
                        rc.c.content_type == "container.tag",
                        rc.c.value.in_(chunk),
                        rc.c.version_removed.is_(None),
                    )
                    .limit(1)
                )
            ).first()
            if tag is not None:
                refuse(
                    f"removing manifest {tag.value} would break tag {tag.key!r}, which the "
                    "version keeps",
                    removed=tag.value,
                    tag=tag.key,
                )
            result = await conn.execute(
                sa.select(sigs.c.digest, sigs.c.manifest_digest).where(
                    sigs.c.manifest_digest.in_(chunk)
                )
            )
            signatures = {d: m for d, m in result}
            if kept := await present("container.signature", set(signatures)):
                signature = min(kept)
                refuse(
                    f"removing manifest {signatures[signature]} would break signature "
                    f"{signature}, which the version keeps",
                    removed=signatures[signature],
                    signature=signature,
                )

    async def _latest_record(self, conn: AsyncConnection, repo: RepositoryRecord) -> VersionRecord:
        row = await self._require_version(conn, repo, repo.latest_version)
        return self._version_record(repo.name, row)

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
        coalesce: Coalesce | None = None,
    ) -> VersionRecord | None:
        number = builder.number
        added = await self._counts(conn, repo.id, self._rc.c.version_added, number)
        removed = await self._counts(conn, repo.id, self._rc.c.version_removed, number)
        if not added and not removed:
            return None
        if removed or set(added) != {"container.blob"}:
            # Blobs alone cannot open a hole in a closed version: nothing to check then.
            await self._check_closed(conn, repo, number)
        previous = await self._require_version(conn, repo, repo.latest_version)
        present = dict(previous.summary.get("present", {}))
        for ct in CONTENT_TYPES:
            n = present.get(ct, 0) + added.get(ct, 0) - removed.get(ct, 0)
            if n:
                present[ct] = n
            else:
                present.pop(ct, None)
        now = _now()
        burst_started = None
        if coalesce is not None:
            burst_started = now
            began = previous.burst_started
            if (
                began is not None
                and previous.number != 0
                and (now - previous.created).total_seconds() < coalesce.quiet
                and (now - began).total_seconds() < coalesce.longest
                and await self._pinned_by(conn, repo.id, previous.number) is None
            ):
                # The previous version was this burst's: fold it into this one (its changes
                # become this version's), so a burst of pushes leaves one version.
                burst_started = began
                added, removed = await self._fold(conn, repo.id, previous.number, number)
        summary = {"added": added, "removed": removed, "present": _ordered(present)}
        await conn.execute(
            self._versions.insert().values(
                repository_id=repo.id,
                number=number,
                base_version=base_version,
                created=now,
                complete=True,
                summary=summary,
                burst_started=burst_started,
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

    async def _fold(
        self, conn: AsyncConnection, repo_id: int, previous: int, number: int
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Squash the latest version ``previous`` into ``number``, being built on it: what
        only ``previous`` held goes, its additions and removals become ``number``'s (as
        :meth:`delete_version` does, in fewer steps). The merged (added, removed) counts."""
        rc = self._rc
        await self._squash_rows(conn, repo_id, previous, number)
        await conn.execute(
            self._versions.delete().where(
                self._versions.c.repository_id == repo_id, self._versions.c.number == previous
            )
        )
        added = await self._counts(conn, repo_id, rc.c.version_added, number)
        removed = await self._counts(conn, repo_id, rc.c.version_removed, number)
        return added, removed

    async def _squash_rows(
        self, conn: AsyncConnection, repo_id: int, number: int, later: int
    ) -> None:
        """Membership of version ``number`` folded into ``later``: what only ``number`` held
        goes; its additions and removals become ``later``'s."""
        rc, mine = self._rc, self._rc.c.repository_id == repo_id
        await conn.execute(
            rc.delete().where(mine, rc.c.version_added == number, rc.c.version_removed == later)
        )
        await conn.execute(
            rc.update().where(mine, rc.c.version_added == number).values(version_added=later)
        )
        await conn.execute(
            rc.update().where(mine, rc.c.version_removed == number).values(version_removed=later)
        )

    async def _pinned_by(self, conn: AsyncConnection, repo_id: int, number: int) -> str | None:
        """The name of a distribution pinned to that version, if any."""
        return (
            await conn.execute(
                sa.select(self._dists.c.name)
                .where(
                    self._dists.c.repository_id == repo_id,
                    self._dists.c.repository_version == number,
                )
                .limit(1)
            )
        ).scalar()

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
            pinned = await self._pinned_by(conn, repo.id, number)
            if pinned is not None:
                raise Conflict(
                    f"version {number} of {repository!r} is served by distribution "
                    f"{pinned!r}; point the distribution elsewhere first"
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
            # Squash into the next version.
            await self._squash_rows(conn, repo_id, number, later)
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

    async def list_tags(
        self, repository: str, number: int, *, last: str | None = None, n: int | None = None
    ) -> list[tuple[str, str]]:
        """(name, digest) of the version's tags, sorted by name, after ``last``, at most ``n``."""
        rc = self._rc
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            query = (
                sa.select(rc.c.key, rc.c.value)
                .where(self._held(repo.id, "container.tag", number))
                .order_by(rc.c.key)
            )
            if last is not None:
                query = query.where(rc.c.key > last)
            if n is not None:
                query = query.limit(n)
            return [(k, val) for k, val in await conn.execute(query)]

    async def get_tag(self, repository: str, number: int, name: str) -> str | None:
        """The digest a tag points to in that version, or None."""
        row = await self._held_row(repository, number, "container.tag", name)
        return None if row is None else row.value

    async def has_content(
        self, repository: str, number: int, content_type: ContentType, key: str
    ) -> bool:
        """Whether the version holds that content."""
        return await self._held_row(repository, number, content_type, key) is not None

    @functools.cached_property
    def _held_row_query(self) -> sa.Select[Any]:
        # Built once: the registry API asks this on nearly every request, and building and
        # keying the statement each time cost more than SQLite answering it.
        rc, bind = self._rc, sa.bindparam
        held = self._held(self._repo_id(bind("repository")), bind("content_type"), bind("number"))
        return sa.select(rc.c.id, rc.c.value).where(held, rc.c.key == bind("key")).limit(1)

    async def _held_row(
        self, repository: str, number: int, content_type: ContentType, key: str
    ) -> Any:
        """The row of content ``key`` in that version (``id``, ``value``), or ``None``."""
        params = {"repository": repository, "content_type": content_type, "number": number,
                  "key": key}  # fmt: skip
        async with self._read() as conn:
            row = (await conn.execute(self._held_row_query, params)).first()
            if row is None:
                await self._require_repo(conn, repository)
            return row

    async def iter_content(
        self, repository: str, number: int, content_type: ContentType
    ) -> AsyncIterator[str]:
        """Every key of one content type in a version, sorted."""
        rc = self._rc
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            result = await conn.stream(
                sa.select(rc.c.key)
                .where(self._held(repo.id, content_type, number))
                .order_by(rc.c.key)
            )
            async for (key,) in result:
                yield key

    async def diff_versions(
        self, repository: str, base: int, number: int
    ) -> dict[ContentType, tuple[dict[str, str | None], dict[str, str | None]]]:
        """Per content type, (removed, added) from ``base`` to ``number``, key -> value.

        A row is in exactly one of versions ``lo < hi`` when it was added in ``(lo, hi]`` and
        outlives ``hi``, or was there at ``lo`` and removed in ``(lo, hi]``: the indexes on
        ``version_added`` and ``version_removed`` find those without reading the rest. A key
        removed and added again with the same value in between is no change."""
        rc = self._rc
        lo, hi = min(base, number), max(base, number)
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            for n in {base, number}:
                await self._require_version(conn, repo, n)
            rows = await conn.execute(
                sa.select(rc.c.content_type, rc.c.key, rc.c.value, rc.c.version_added).where(
                    rc.c.repository_id == repo.id,
                    sa.or_(
                        sa.and_(
                            rc.c.version_added > lo,
                            rc.c.version_added <= hi,
                            sa.or_(rc.c.version_removed.is_(None), rc.c.version_removed > hi),
                        ),
                        sa.and_(
                            rc.c.version_added <= lo,
                            rc.c.version_removed > lo,
                            rc.c.version_removed <= hi,
                        ),
                    ),
                )
            )
            only: dict[bool, dict[str, dict[str, str | None]]] = {True: {}, False: {}}
            for content_type, key, value, added in rows:
                # True: only in ``hi``; False: only in ``lo``.
                only[added > lo].setdefault(content_type, {})[key] = value
        diff: dict[ContentType, tuple[dict[str, str | None], dict[str, str | None]]] = {}
        for ct in CONTENT_TYPES:
            was, now = only[base > number].get(ct, {}), only[number > base].get(ct, {})
            same = {k for k in was.keys() & now.keys() if was[k] == now[k]}
            diff[ct] = (
                {k: v for k, v in sorted(was.items()) if k not in same},
                {k: v for k, v in sorted(now.items()) if k not in same},
            )
        return diff

    async def referrers(self, repository: str, number: int, subject: str) -> list[ManifestRecord]:
        """The manifests in that version whose ``subject`` is ``subject``, by digest."""
        rc, m = self._rc, self._manifests
        async with self._read() as conn:
            repo = await self._get_repo(conn, repository)
            rows = await conn.execute(
                sa.select(m.c.digest, m.c.media_type, m.c.data, m.c.artifact_type, m.c.subject)
                .join(
                    rc,
                    sa.and_(
                        self._held(repo.id, "container.manifest", number), rc.c.key == m.c.digest
                    ),
                )
                .where(m.c.subject == subject)
                .order_by(m.c.digest)
            )
            return [
                ManifestRecord(
                    digest=r.digest,
                    media_type=r.media_type,
                    data=r.data,
                    artifact_type=r.artifact_type,
                    subject=r.subject,
                )
                for r in rows
            ]

    @functools.cached_property
    def _signatures_query(self) -> sa.Select[Any]:
        # Built once, like _held_row_query: clients ask for every image they pull.
        rc, s, bind = self._rc, self._sigs, sa.bindparam
        held = self._held(self._repo_id(bind("repository")), "container.signature", bind("number"))
        return (
            sa.select(s)
            .join(rc, sa.and_(held, rc.c.key == s.c.digest))
            .where(s.c.manifest_digest == bind("manifest"))
            .order_by(s.c.name)
        )

    async def signatures(
        self, repository: str, number: int, manifest_digest: str
    ) -> list[SignatureRecord]:
        """The signatures in that version that sign ``manifest_digest``, by name."""
        params = {"repository": repository, "number": number, "manifest": manifest_digest}
        async with self._read() as conn:
            rows = await conn.execute(self._signatures_query, params)
            found = [signature_record(r) for r in rows]
            if not found:
                await self._require_repo(conn, repository)
            return found
