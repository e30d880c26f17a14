"""The SQLite connections of the metadata store: a statement is one trip to the connection's
thread (``ocimirror.backends.sql.sqlite_driver``), and transactions mean what they meant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ocimirror.backends.metadata import ContentBatch
from ocimirror.backends.sql import SQLMetadataStore
from ocimirror.backends.sql.sqlite_driver import BATCH, OneTripConnection
from ocimirror.core.digest import Digest
from ocimirror.errors import RepositoryBusy

pytestmark = pytest.mark.anyio

#: Rows 1..n from SQLite alone.
_COUNT = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {}) SELECT x FROM n"
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLMetadataStore]:
    store = SQLMetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}", busy_timeout=0.2)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function sent to a connection's thread, from now on."""
    sent: list[str] = []
    original = OneTripConnection._execute

    async def counted(self: OneTripConnection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(OneTripConnection, "_execute", counted)
    return sent


async def _one_blob_version(store: SQLMetadataStore) -> str:
    await store.create_repository("team/app")
    digest = str(Digest.of(b"layer"))
    batch = ContentBatch()
    batch.add_blob(digest, 5, "application/octet-stream")
    assert await store.record_content(batch) == {}
    async with store.new_version("team/app") as builder:
        await builder.add("container.blob", digest)
    return digest


async def test_a_point_read_is_two_trips_the_statement_and_the_commit(
    store: SQLMetadataStore, trips: list[str]
) -> None:
    digest = await _one_blob_version(store)
    assert await store.has_content("team/app", 1, "container.blob", digest)  # connects
    trips.clear()
    assert await store.has_content("team/app", 1, "container.blob", digest)
    assert trips == ["run", "commit"]  # the statement (with its BEGIN), then the COMMIT
    trips.clear()
    assert await store.get_tag("team/app", 1, "latest") is None  # a miss also asks for the repo
    assert len(trips) == 3


async def test_a_transaction_with_no_statement_never_reaches_sqlite(
    store: SQLMetadataStore, trips: list[str]
) -> None:
    async with store._read():
        pass
    trips.clear()
    async with store._read():
        pass
    async with store._write():
        pass
    assert trips == []


@pytest.mark.parametrize("rows", [1, BATCH - 1, BATCH, BATCH + 1, 3 * BATCH + 7])
async def test_every_row_comes_back_in_order_fetched_or_streamed(
    store: SQLMetadataStore, rows: int
) -> None:
    query = sa.text(_COUNT.format(rows))
    async with store._read() as conn:
        assert (await conn.execute(query)).scalars().all() == list(range(1, rows + 1))
        streamed = [x async for x in (await conn.stream(query)).scalars()]
        assert streamed == list(range(1, rows + 1))
        partial = await conn.stream(query)
        first = await partial.fetchmany(3)
        assert [row[0] for row in first] == list(range(1, min(rows, 3) + 1))
        await partial.close()  # a cursor left half read is closed, and the connection works on
        assert (await conn.execute(sa.text("SELECT 42"))).scalar() == 42


async def test_a_cancelled_statement_leaves_no_transaction_open(store: SQLMetadataStore) -> None:
    """A statement's caller is cancelled while its trip (which carries the transaction's
    ``BEGIN IMMEDIATE``) waits behind other work on the connection's thread: the trip still
    runs, and afterwards the write lock is released, nothing it did stays, and the pool's
    connections begin afresh."""
    queued = asyncio.Event()

    async def writer() -> None:
        async with store._write() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert isinstance(raw, OneTripConnection)
            # The connection's thread is busy for a moment; the statement's trip waits.
            busy = asyncio.ensure_future(raw.trip(lambda: time.sleep(0.3)))
            queued.set()
            try:
                await conn.exec_driver_sql("CREATE TABLE during (x INTEGER)")
            finally:
                await asyncio.shield(busy)

    task = asyncio.ensure_future(writer())
    await queued.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.create_repository("team/app")  # the lock was released (busy_timeout is 0.2 s)
    async with store._write() as conn:  # and the pooled connections begin afresh
        await conn.exec_driver_sql("CREATE TABLE after (x INTEGER)")
    async with store._read() as conn:
        tables = "SELECT name FROM sqlite_master WHERE name IN ('during', 'after')"
        assert (await conn.exec_driver_sql(tables)).scalars().all() == ["after"]
    assert [r.name for r in await store.list_repositories()] == ["team/app"]


async def test_a_failed_transaction_leaves_nothing_behind(store: SQLMetadataStore) -> None:
    async with store._write() as conn:
        await conn.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
    with pytest.raises(RuntimeError):
        async with store._write() as conn:
            await conn.exec_driver_sql("INSERT INTO scratch VALUES (1)")
            raise RuntimeError("the writer fails after its first statement")
    async with store._write() as conn:
        await conn.exec_driver_sql("INSERT INTO scratch VALUES (2)")
    async with store._read() as conn:
        assert (await conn.exec_driver_sql("SELECT x FROM scratch")).scalars().all() == [2]


async def test_a_busy_database_is_the_first_statements_error(
    store: SQLMetadataStore, tmp_path: Path
) -> None:
    """``BEGIN IMMEDIATE`` rides with the first statement, so another process's write lock
    shows there, inside the transaction, as RepositoryBusy."""
    other = SQLMetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}", busy_timeout=0.2)
    await other.open()
    try:
        async with other._write() as holder:
            await holder.exec_driver_sql("CREATE TABLE held (x INTEGER)")  # the lock is taken
            with pytest.raises(RepositoryBusy):
                await store.create_repository("team/app")
        await store.create_repository("team/app")  # and once it is released, the write goes
    finally:
        await other.close()
    assert [r.name for r in await store.list_repositories()] == ["team/app"]
