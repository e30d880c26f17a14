"""aiosqlite connections whose statements cost one trip to the connection's thread.

aiosqlite runs each connection on a thread of its own and every call on a cursor is a trip
there and back (a queue put, a wake-up, ``call_soon_threadsafe``, an event-loop turn).
SQLAlchemy's aiosqlite adapter makes four such trips per statement: open a cursor, execute,
fetch every row, close. For the point reads the registry API makes on every request (does
this version hold that blob? which digest is that tag?) the trips cost more than SQLite does:
a read of one row took about 0.8 ms of CPU, nine trips with ``BEGIN`` and ``COMMIT``.

:class:`OneTripConnection` keeps aiosqlite (its thread, its connection lifecycle, everything
SQLAlchemy's adapter reaches for) and replaces only its cursor. :class:`OneTripCursor`
opens, executes, fetches the first :data:`BATCH` rows and, when that was every row, closes, in
one trip. A result of more rows keeps its cursor and fetches the rest in batches (so a
server-side cursor still streams in bounded memory). A ``BEGIN`` rides along with the
transaction's first statement, and the ``ROLLBACK`` with which the pool takes back every
connection is skipped when SQLite says no transaction is open. A point read is then two
trips: the statement and the ``COMMIT``.

:func:`one_trip_connect` has the signature of :func:`aiosqlite.connect`; the engine passes it
to SQLAlchemy's aiosqlite dialect through the ``do_connect`` event, so SQLAlchemy's own
arguments (file name, timeout, URI flags) reach :func:`sqlite3.connect` unchanged.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

import aiosqlite

__all__ = ["BATCH", "OneTripConnection", "OneTripCursor", "one_trip_connect"]

#: Rows fetched in the trip that executes a statement, and per trip after that.
BATCH = 256

_Description = tuple[tuple[Any, ...], ...] | None
_T = TypeVar("_T")


class OneTripCursor:
    """The part of :class:`aiosqlite.Cursor` that SQLAlchemy uses, a statement per trip."""

    __slots__ = ("_connection", "_cursor", "_rows", "arraysize", "description", "lastrowid",
                 "rowcount")  # fmt: skip

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        #: The sqlite3 cursor while rows are left to fetch, else ``None``.
        self._cursor: sqlite3.Cursor | None = None
        self._rows: deque[Any] = deque()
        self.arraysize = 1
        self.description: _Description = None
        self.lastrowid: int | None = None
        self.rowcount = -1

    def __await__(self) -> Generator[Any, None, OneTripCursor]:
        yield from ()
        return self

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> OneTripCursor:
        """Execute ``sql`` and fetch its first rows, in one trip (a ``BEGIN`` waits for the
        next statement and goes in its trip)."""
        if not parameters and sql.strip().upper() in _BEGINS:
            await self.close()
            self._rows.clear()
            self.description, self.rowcount, self.lastrowid = None, -1, None
            self._connection.pending_begin = sql
            return self
        await self._start(partial(_execute, sql, () if parameters is None else parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> OneTripCursor:
        """Execute ``sql`` once per parameter set, in one trip."""
        await self._start(partial(_executemany, sql, parameters))
        return self

    async def _start(self, run: Any) -> None:
        await self.close()
        self._rows.clear()
        conn = self._connection
        begin, conn.pending_begin = conn.pending_begin, None

        def trip() -> tuple[Any, ...]:
            if begin is not None:
                conn._conn.execute(begin)
            return run(conn._conn)  # type: ignore[no-any-return]

        self._cursor, rows, self.description, self.rowcount, self.lastrowid = await conn.trip(trip)
        self._rows.extend(rows)

    async def fetchone(self) -> Any:
        if not self._rows and self._cursor is not None:
            await self._more(BATCH)
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        wanted = self.arraysize if size is None else size
        if len(self._rows) < wanted and self._cursor is not None:
            await self._more(max(wanted - len(self._rows), BATCH))
        return [self._rows.popleft() for _ in range(min(wanted, len(self._rows)))]

    async def fetchall(self) -> list[Any]:
        if self._cursor is not None:
            await self._more(None)
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def _more(self, size: int | None) -> None:
        cursor = self._cursor
        assert cursor is not None

        def fetch() -> tuple[list[Any], bool]:
            rows = cursor.fetchall() if size is None else cursor.fetchmany(size)
            done = size is None or len(rows) < size
            if done:
                cursor.close()
            return rows, done

        rows, done = await self._connection.trip(fetch)
        self._rows.extend(rows)
        if done:
            self._cursor = None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while (row := await self.fetchone()) is not None:
            yield row

    async def close(self) -> None:
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            await self._connection.trip(cursor.close)


def _finish(cursor: sqlite3.Cursor, rows: list[Any]) -> tuple[Any, ...]:
    result = (cursor.description, cursor.rowcount, cursor.lastrowid)
    left: sqlite3.Cursor | None = cursor
    if cursor.description is None or len(rows) < BATCH:  # every row is here: done with it
        cursor.close()
        left = None
    return left, rows, *result


def _execute(sql: str, parameters: Sequence[Any], conn: sqlite3.Connection) -> tuple[Any, ...]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, parameters)
        rows = cursor.fetchmany(BATCH) if cursor.description else []
    except BaseException:
        cursor.close()
        raise
    return _finish(cursor, rows)


def _executemany(
    sql: str, parameters: Iterable[Sequence[Any]], conn: sqlite3.Connection
) -> tuple[Any, ...]:
    cursor = conn.cursor()
    try:
        cursor.executemany(sql, parameters)
    except BaseException:
        cursor.close()
        raise
    return _finish(cursor, [])


_BEGINS = frozenset({"BEGIN", "BEGIN DEFERRED", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"})


class OneTripConnection(aiosqlite.Connection):
    """An :class:`aiosqlite.Connection` whose cursors are :class:`OneTripCursor`.

    A ``BEGIN`` is kept until the transaction's first statement and executed in that
    statement's trip (an error it raises, such as a busy database, is then that statement's);
    a transaction that ends before any statement never reaches SQLite at all.
    """

    #: The ``BEGIN`` that the next statement executes first, if any.
    pending_begin: str | None = None
    #: Trips sent (counted on the event loop) and finished (counted on the connection's
    #: thread): a trip whose caller was cancelled still runs, and may open a transaction.
    _sent = 0
    _finished = 0

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)

    async def trip(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the connection's thread; its result (or its exception)."""

        def run() -> _T:
            try:
                return fn()
            finally:
                self._finished += 1

        self._sent += 1
        result: _T = await self._execute(run)  # type: ignore[no-untyped-call]
        return result

    async def commit(self) -> None:
        if self.pending_begin is not None:
            self.pending_begin = None  # nothing happened in this transaction
            return
        await super().commit()

    async def rollback(self) -> None:
        if self.pending_begin is not None:
            self.pending_begin = None
            return
        if self._sent == self._finished and not self._conn.in_transaction:
            # The pool rolls back every connection it takes back, even one whose transaction
            # was committed; SQLite says (a flag read, no trip) there is nothing to undo. With
            # a trip still running (its caller was cancelled) the flag may not say yet: then
            # the rollback queues behind it. (SQLAlchemy also closes a connection whose
            # statement was cancelled, which queues behind it as well.)
            return
        await super().rollback()


def one_trip_connect(database: str | bytes, **kwargs: Any) -> OneTripConnection:
    """:func:`aiosqlite.connect`, for a :class:`OneTripConnection` (awaited by the caller)."""
    location = database.decode() if isinstance(database, bytes) else str(database)
    connection = OneTripConnection(partial(sqlite3.connect, location, **kwargs), 64)
    # As SQLAlchemy's dialect does for aiosqlite's own (before 0.22 the connection was the
    # thread itself).
    thread: Any = getattr(connection, "_thread", connection)
    thread.daemon = True
    return connection
