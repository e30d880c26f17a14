"""Repository versions and their content summaries, as values."""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ocimirror.backends.metadata import CONTENT_TYPES, VersionRecord

__all__ = ["ContentSummary", "RepositoryVersion"]


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

    def _repr_html_(self) -> str:
        head = "<tr><th></th><th>added</th><th>removed</th><th>present</th></tr>"
        body = "".join(
            f"<tr><td>{html.escape(ct)}</td><td>{a}</td><td>{r}</td><td>{p}</td></tr>"
            for ct, a, r, p in self._rows()
        )
        return f"<table>{head}{body}</table>"


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
        title = html.escape(f"{self.repository} version {self.number}")
        return f"<b>{title}</b>{self.content_summary._repr_html_()}"
