"""The metadata store over SQLAlchemy Core: SQLite (the embedded default, WAL) and PostgreSQL.

One function, :func:`build_metadata`, describes the schema; :data:`SCHEMA_VERSION` is recorded
in the ``ocimirror_schema`` table and checked at open. Upgrades are a list of steps in
:data:`MIGRATIONS`, each taking the schema from version ``n`` to ``n + 1``; ``open`` applies the
missing ones under the schema lock. A newer schema than this code knows is refused.

Writers of one repository never interleave: every write runs in one transaction that locks the
repository row (``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite, which
takes the database's single write lock). Readers see committed versions only.

The package's modules: ``schema`` (the schema, its version and migrations), ``engine`` (the
engines, schema setup and transactions: ``SQLEngine``), one mixin per concern
(``repositories``, ``content``, ``leases``, ``remotes``), ``builder``
(:class:`SQLVersionBuilder`) and ``store`` (:class:`SQLMetadataStore`, which combines them).
"""

from __future__ import annotations

from ocimirror.backends.sql.builder import SQLVersionBuilder
from ocimirror.backends.sql.schema import MIGRATIONS, SCHEMA_VERSION, build_metadata, normalize_url
from ocimirror.backends.sql.store import SQLMetadataStore

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLMetadataStore",
    "SQLVersionBuilder",
    "build_metadata",
    "normalize_url",
]
