"""The store protocol of pull-through caches (:mod:`ocimirror.pullthrough`), and its record."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import attrs

__all__ = ["PullThroughRecord", "PullThroughStore"]


@attrs.frozen(kw_only=True)
class PullThroughRecord:
    """A pull-through ``"remote"`` or ``"distribution"``: its stored fields (secrets kept out
    of the repr)."""

    kind: str
    name: str
    fields: Mapping[str, Any] = attrs.field(repr=False)


class PullThroughStore(Protocol):
    """Pull-through caches: their remotes and distributions, and cached tags' times."""

    async def create_pull_through(
        self, kind: str, name: str, fields: Mapping[str, Any]
    ) -> PullThroughRecord:
        """Store a pull-through ``"remote"`` or ``"distribution"`` (AlreadyExists if taken)."""
        ...

    async def get_pull_through(self, kind: str, name: str) -> PullThroughRecord:
        """One by name (RemoteNotFound / DistributionNotFound otherwise)."""
        ...

    async def list_pull_through(self, kind: str) -> list[PullThroughRecord]:
        """Every one of a kind, by name."""
        ...

    async def update_pull_through(
        self, kind: str, name: str, fields: Mapping[str, Any]
    ) -> PullThroughRecord:
        """Replace the fields of one."""
        ...

    async def delete_pull_through(self, kind: str, name: str) -> None:
        """Delete one (what it cached stays)."""
        ...

    async def tag_times(self, repository: str, tag: str) -> tuple[datetime | None, datetime | None]:
        """(last checked upstream, last pulled) of a cached tag."""
        ...

    async def set_tag_times(
        self,
        repository: str,
        tag: str | list[str],
        *,
        checked: datetime | None = None,
        pulled: datetime | None = None,
    ) -> None:
        """Record when a cached tag (or several at once) was checked upstream and/or pulled."""
        ...

    async def pulled_tags(self, prefix: str) -> list[tuple[str, str, datetime | None]]:
        """(repository, tag, last pulled) under ``<prefix>/``, least recently pulled first."""
        ...

    async def forget_tag(self, repository: str, tag: str) -> None:
        """Drop a cached tag's times."""
        ...
