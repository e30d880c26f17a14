"""Fixtures of the registry API tests: ``world`` (shared by a module, never changed) and
``make_harness`` (fresh registries for tests that change things)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fixtures.postgres import POSTGRES_URL, _admin
from server_harness import Harness, open_harness, populate

from ocimirror import AsyncRegistry


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """The ``world`` content over each metadata backend, shared by a module: do not change it."""
    tmp = tmp_path_factory.mktemp("world")
    database = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'metadata.db'}"
    else:
        database = f"ocimirror_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
        url = f"{POSTGRES_URL.rpartition('/')[0]}/{database}"
    runner = asyncio.Runner()
    harness = open_harness(
        runner, url, (tmp / "blobs").as_uri(), fill=lambda registry: populate(registry, tmp)
    )
    try:
        yield harness
    finally:
        harness.close()
        if database is not None:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


HarnessFactory = Callable[..., Harness]


@pytest.fixture
def make_harness(database_url: str, tmp_path: Path) -> Iterator[HarnessFactory]:
    """Build harnesses over each metadata backend (file blobs unless told otherwise)."""
    harnesses: list[Harness] = []

    def make(
        *,
        fill: Callable[[AsyncRegistry], Coroutine[Any, Any, None]] | None = None,
        storage_url: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        **app_options: Any,
    ) -> Harness:
        harness = open_harness(
            asyncio.Runner(),
            database_url,
            storage_url or (tmp_path / "blobs").as_uri(),
            storage_options=storage_options,
            fill=fill,
            **app_options,
        )
        harnesses.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in harnesses:
            harness.close()
