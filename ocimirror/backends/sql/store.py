"""The metadata store: the engine and one mixin per concern."""

from __future__ import annotations

from ocimirror.backends.sql.content import ContentMixin
from ocimirror.backends.sql.engine import SQLEngine
from ocimirror.backends.sql.leases import LeaseMixin
from ocimirror.backends.sql.pullthrough import PullThroughMixin
from ocimirror.backends.sql.remotes import RemoteMixin
from ocimirror.backends.sql.repositories import RepositoryMixin
from ocimirror.backends.sql.uploads import UploadMixin
from ocimirror.backends.sql.users import UserMixin


class SQLMetadataStore(
    RepositoryMixin,
    ContentMixin,
    LeaseMixin,
    RemoteMixin,
    PullThroughMixin,
    UploadMixin,
    UserMixin,
    SQLEngine,
):
    """The metadata store on one SQLAlchemy engine (or two on SQLite: a writer and readers).

    Give it a URL (``sqlite:///path.db``, ``postgresql://user@host/db``) or an
    :class:`~sqlalchemy.ext.asyncio.AsyncEngine`; it disposes only engines it created.
    No I/O happens until :meth:`open`.
    """

    def __repr__(self) -> str:
        return f"SQLMetadataStore({self.url!r})"

    async def __aenter__(self) -> SQLMetadataStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
