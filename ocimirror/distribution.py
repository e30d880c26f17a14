"""Distributions: a base path through which a repository (or one version) is served."""

from __future__ import annotations

from typing import Any

import attrs

from ocimirror._html import fields
from ocimirror.backends.metadata import DistributionRecord

__all__ = ["Distribution"]


@attrs.frozen(kw_only=True)
class Distribution:
    """Serves ``repository``'s latest version, or ``repository_version`` when pinned."""

    name: str
    base_path: str
    repository: str | None = None
    repository_version: int | None = None
    private: bool = False
    description: str | None = None

    @classmethod
    def from_record(cls, record: DistributionRecord) -> Distribution:
        """Build from the stored record."""
        return cls(
            name=record.name,
            base_path=record.base_path,
            repository=record.repository,
            repository_version=record.repository_version,
            private=record.private,
            description=record.description,
        )

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON."""
        return attrs.asdict(self)

    @property
    def serves(self) -> str:
        """What it serves, in words: ``latest version of 'foo'``, ``version 3 of 'foo'``."""
        if self.repository is None:
            return "nothing (no repository)"
        if self.repository_version is None:
            return f"latest version of {self.repository!r}"
        return f"version {self.repository_version} of {self.repository!r}"

    def _repr_html_(self) -> str:
        return fields(
            f"Distribution {self.name}",
            {
                "base path": self.base_path,
                "serves": self.serves,
                "private": self.private,
                "description": self.description,
            },
        )
