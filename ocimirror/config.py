"""Where ocimirror keeps its data: a home directory, or two backend URLs.

With nothing configured, metadata is a SQLite file and blobs are files, both inside the home
directory (``$OCIMIRROR_HOME``, else the user's data directory): no server needed.
``OCIMIRROR_DATABASE_URL`` and ``OCIMIRROR_STORAGE_URL`` (or the arguments of the same names)
move either to PostgreSQL, S3 or anything else SQLAlchemy and fsspec reach.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

__all__ = ["Config"]


@attrs.frozen(kw_only=True)
class Config:
    """The resolved location of the two backends."""

    home: Path
    database_url: str
    storage_url: str
    storage_options: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @classmethod
    def resolve(
        cls,
        *,
        home: str | os.PathLike[str] | None = None,
        database_url: str | None = None,
        storage_url: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """Arguments first, then ``OCIMIRROR_*`` environment variables, then the home default."""
        env = os.environ if environ is None else environ
        home = home or env.get("OCIMIRROR_HOME")
        if not home:
            import platformdirs  # only the default home needs it

            home = platformdirs.user_data_dir("ocimirror")
        home_path = Path(home).expanduser()
        db = database_url or env.get("OCIMIRROR_DATABASE_URL")
        storage = storage_url or env.get("OCIMIRROR_STORAGE_URL")
        if db is None:
            db = f"sqlite:///{(home_path / 'metadata.db').absolute()}"
        if storage is None:
            storage = (home_path / "storage").absolute().as_uri()
        return cls(
            home=home_path,
            database_url=db,
            storage_url=storage,
            storage_options=dict(storage_options or {}),
        )

    @property
    def embedded(self) -> bool:
        """Whether the metadata lives in a SQLite file inside the home directory."""
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite file the metadata lives in, or None when it is not a file."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return None

    @property
    def unused(self) -> bool:
        """Whether nothing was ever stored: the metadata's SQLite file does not exist yet."""
        file = self.sqlite_file
        return file is not None and not file.exists()

    def prepare(self) -> None:
        """Create the home directory (and the SQLite file's directory) when they are local."""
        if self.sqlite_file is not None:
            self.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        if self.storage_url.startswith("file://"):
            self.home.mkdir(parents=True, exist_ok=True)
