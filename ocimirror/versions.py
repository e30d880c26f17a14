"""Repository versions and their content summaries, as values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import attrs

from ocimirror._html import table
from ocimirror.backends.metadata import CONTENT_TYPES, ContentType, VersionRecord

__all__ = ["ContentSummary", "RepositoryVersion", "TagMove", "VersionDiff", "VersionList"]


def _freeze(counts: Mapping[str, int]) -> Mapping[str, int]:
    return {ct: int(counts[ct]) for ct in CONTENT_TYPES if counts.get(ct)}


@attrs.frozen
class ContentSummary:
    """Counts per content type of what a version added, removed, and holds (Pulp's shape)."""

    added: Mapping[str, int] = attrs.field(converter=_freeze)
    removed: Mapping[str, int] = attrs.field(converter=_freeze)
    present: Mapping[str, int] = attrs.field(converter=_freeze)

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, int]]) -> ContentSummary:
        """Build from ``{"added": {...}, "removed": {...}, "present": {...}}``."""
        return cls(data.get("added", {}), data.get("removed", {}), data.get("present", {}))

    def to_json(self) -> dict[str, dict[str, int]]:
        """``{"added": {...}, "removed": {...}, "present": {...}}``, counts keyed by type."""
        return {
            "added": dict(self.added),
            "removed": dict(self.removed),
            "present": dict(self.present),
        }

    def _rows(self) -> list[tuple[str, int, int, int]]:
        return [
            (ct, self.added.get(ct, 0), self.removed.get(ct, 0), self.present.get(ct, 0))
            for ct in CONTENT_TYPES
        ]

    def __str__(self) -> str:
        lines = [f"{'':20} {'added':>8} {'removed':>8} {'present':>8}"]
        lines += [f"{ct:20} {a:>8} {r:>8} {p:>8}" for ct, a, r, p in self._rows()]
        return "\n".join(lines)

    def _repr_html_(self, title: str | None = None) -> str:
        return table(self._rows(), head=("", "added", "removed", "present"), title=title)


@attrs.frozen(kw_only=True)
class RepositoryVersion:
    """One complete, immutable version of a repository."""

    repository: str
    number: int
    base_version: int | None
    created: datetime
    content_summary: ContentSummary

    @classmethod
    def from_record(cls, record: VersionRecord) -> RepositoryVersion:
        """Build from the stored record."""
        return cls(
            repository=record.repository,
            number=record.number,
            base_version=record.base_version,
            created=record.created,
            content_summary=ContentSummary.from_json(record.summary),
        )

    def to_json(self) -> dict[str, Any]:
        """The version as the CLI prints it (Pulp's fields)."""
        return {
            "repository": self.repository,
            "number": self.number,
            "base_version": self.base_version,
            "created": self.created.isoformat(),
            "content_summary": self.content_summary.to_json(),
        }

    def __str__(self) -> str:
        return f"{self.repository} version {self.number}\n{self.content_summary}"

    def _repr_html_(self) -> str:
        return self.content_summary._repr_html_(f"{self.repository} version {self.number}")


class VersionList(list[RepositoryVersion]):
    """A list of versions (``repo.versions()``, newest first) that a notebook shows as a
    table: one row per version with what it added, removed and holds."""

    def _repr_html_(self) -> str:
        types = [ct for ct in CONTENT_TYPES if any(v.content_summary.present.get(ct) for v in self)]
        head = ["version", "base", "created", "added", "removed", *types]

        def counts(c: Mapping[str, int]) -> str:
            return ", ".join(f"{n} {ct.removeprefix('container.')}" for ct, n in c.items())

        rows = [
            [
                v.number,
                v.base_version,
                v.created.isoformat(timespec="seconds"),
                counts(v.content_summary.added),
                counts(v.content_summary.removed),
                *(v.content_summary.present.get(ct, 0) for ct in types),
            ]
            for v in self
        ]
        title = f"{self[0].repository}: {len(self)} versions" if self else "no versions"
        return table(rows, head=head, title=title)


class TagMove(NamedTuple):
    """A tag that points elsewhere: the digest it had (``old``) and the one it has (``new``)."""

    old: str
    new: str


def _sorted_tags(tags: Mapping[str, str]) -> Mapping[str, str]:
    return {t: str(tags[t]) for t in sorted(tags)}


def _sorted_moves(moves: Mapping[str, tuple[str, str]]) -> Mapping[str, TagMove]:
    return {t: TagMove(*moves[t]) for t in sorted(moves)}


@attrs.frozen(kw_only=True)
class VersionDiff:
    """What changed from version ``base_version`` to ``version`` of a repository: the real
    set difference of the two, however many versions apart (``version`` may be the older).

    Tags map to manifest digests; a moved tag counts in the content counts as one tag removed
    and one added (a tag is a name and a digest, as in Pulp). True when anything changed.
    """

    repository: str
    base_version: int
    version: int
    tags_added: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_tags)
    tags_removed: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_tags)
    tags_moved: Mapping[str, TagMove] = attrs.field(factory=dict, converter=_sorted_moves)
    content_added: Mapping[str, int] = attrs.field(factory=dict, converter=_freeze)
    content_removed: Mapping[str, int] = attrs.field(factory=dict, converter=_freeze)

    @classmethod
    def from_changes(
        cls,
        repository: str,
        base_version: int,
        version: int,
        changes: Mapping[ContentType, tuple[Mapping[str, str | None], Mapping[str, str | None]]],
    ) -> VersionDiff:
        """Build from the store's (removed, added) key -> value per content type."""
        was, now = changes.get("container.tag", ({}, {}))
        return cls(
            repository=repository,
            base_version=base_version,
            version=version,
            tags_added={t: str(d) for t, d in now.items() if t not in was},
            tags_removed={t: str(d) for t, d in was.items() if t not in now},
            tags_moved={t: (str(d), str(now[t])) for t, d in was.items() if t in now},
            content_added={ct: len(added) for ct, (_, added) in changes.items()},
            content_removed={ct: len(removed) for ct, (removed, _) in changes.items()},
        )

    @property
    def unchanged(self) -> bool:
        """Whether both versions hold the same content."""
        return not (self.content_added or self.content_removed)

    def __bool__(self) -> bool:
        return not self.unchanged

    def to_json(self) -> dict[str, Any]:
        """The diff as the CLI prints it, keys sorted at every level."""
        return {
            "base_version": self.base_version,
            "content_added": dict(sorted(self.content_added.items())),
            "content_removed": dict(sorted(self.content_removed.items())),
            "repository": self.repository,
            "tags_added": dict(self.tags_added),
            "tags_moved": {t: {"new": m.new, "old": m.old} for t, m in self.tags_moved.items()},
            "tags_removed": dict(self.tags_removed),
            "version": self.version,
        }

    def _tag_rows(self) -> list[tuple[str, str, str, str]]:
        """(sign, tag, old digest, new digest), by tag name."""
        rows = [("+", t, "", d) for t, d in self.tags_added.items()]
        rows += [("-", t, d, "") for t, d in self.tags_removed.items()]
        rows += [("~", t, m.old, m.new) for t, m in self.tags_moved.items()]
        return sorted(rows, key=lambda row: row[1])

    def _count_rows(self) -> list[tuple[str, int, int]]:
        return [
            (ct, self.content_added.get(ct, 0), self.content_removed.get(ct, 0))
            for ct in CONTENT_TYPES
        ]

    def __str__(self) -> str:
        title = f"{self.repository} version {self.base_version} -> {self.version}"
        if self.unchanged:
            return f"{title}: no changes"
        lines = [title]
        for sign, tag, old, new in self._tag_rows():
            lines.append(f"  {sign} {tag}  {' -> '.join(d for d in (old, new) if d)}")
        lines.append(f"  {'':20} {'added':>8} {'removed':>8}")
        lines += [f"  {ct:20} {a:>8} {r:>8}" for ct, a, r in self._count_rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        title = f"{self.repository} version {self.base_version} -> {self.version}"
        if tags := self._tag_rows():
            head = ["", "tag", "old digest", "new digest"]
            return table(tags, head=head, title=title) + table(
                self._count_rows(), head=["", "added", "removed"]
            )
        return table(self._count_rows(), head=["", "added", "removed"], title=title)
