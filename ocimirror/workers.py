"""Sync on every core: the repositories of one ``sync_all`` spread over worker processes.

One event loop tops out at a few thousand upstream requests a second (each costs a few
milliseconds of HTTP-client work on the loop), so ``sync_all`` with ``workers=N`` runs N
loops: the calling process's own, and N-1 worker processes started with
``python -m ocimirror.workers`` (a fresh interpreter: no fork of a process that has threads, and
nothing of the caller's ``__main__`` is imported again). They share nothing but the metadata
database and the blob store, exactly as sync processes on several machines would:

* the calling process hands out repository names one at a time, to whichever loop has a free
  lane, so a big repository does not hold up the rest;
* the worker processes start only once the work is worth their start-up (about 0.4 s of CPU
  for their imports): as soon as a sync in the calling loop downloads something, or when the
  calling loop's pace says it has more than :data:`WORTH_A_WORKER` seconds of work left. A
  re-sync that only finds its tags unchanged stays in the calling process;
* each sync takes the repository's lease in the database as always (two syncs of one
  repository never overlap, wherever they run), and content written by one process is found
  stored by the others;
* the download budget (``concurrency``) is split between the loops;
* every repository's :class:`~ocimirror.sync.SyncResult` is made where it ran, from that sync's
  own upstream client, and comes back whole (requests by kind, bytes, blobs reused);
* progress snapshots (at most ten a second per repository) and log records come back to the
  caller, whose progress callback and log handlers see them as from an in-process sync.

A worker that dies takes only the repositories it was running with it: they are reported as
failed (their leases go stale with the process, so the next sync takes them over) and the
rest goes on in the other loops.

Messages are length-prefixed pickles over the worker's stdin and stdout pipes (the worker
moves its stdout out of the way first, so a stray ``print`` cannot corrupt them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attrs

from ocimirror._process import settle
from ocimirror.backends import open_stores
from ocimirror.backends.blobs import BlobStore
from ocimirror.config import Config
from ocimirror.errors import InvalidError, OcimirrorError
from ocimirror.remote import SyncPolicy
from ocimirror.sync import SyncProgress, SyncResult, SyncStore, lanes, sync_repository
from ocimirror.upstream import SharedConnections, redact_text

__all__ = ["WorkerFailed", "default_workers", "shareable", "sync_in_workers"]

log = logging.getLogger("ocimirror.workers")

#: A repository's progress is sent at most this often (seconds), besides phase changes.
PROGRESS_INTERVAL = 0.1

#: Seconds of work the calling loop must have left (by its pace so far) before worker
#: processes are started for a sync that downloads nothing.
WORTH_A_WORKER = 2.0

_HEADER = struct.Struct("!I")


class WorkerFailed(OcimirrorError):
    """A sync worker process exited while it was syncing this repository."""


def default_workers() -> int:
    """The number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def shareable(config: Config | None) -> str | None:
    """Why worker processes cannot share these stores, or None when they can."""
    if config is None:
        return "the registry was built from store objects, not from URLs a worker can open"
    db = config.database_url
    if db in ("sqlite://", "sqlite+aiosqlite://") or ":memory:" in db or "mode=memory" in db:
        return "an in-memory SQLite database lives in one process"
    if config.storage_url.startswith("memory:"):
        return "a memory:// blob store lives in one process"
    return None


@attrs.frozen(kw_only=True)
class _Spec:
    """What a worker process needs: where the stores are, the policy, its budget."""

    config: Config
    policy: SyncPolicy | None
    concurrency: int
    lanes: int
    #: The effective levels of the root logger and of ``ocimirror``'s, in the caller.
    log_levels: tuple[int, int]
    progress: bool


def _shares(concurrency: int, loops: int) -> list[int]:
    """``concurrency`` split between ``loops`` (each gets at least 1)."""
    base, extra = divmod(max(concurrency, loops), loops)
    return [base + (1 if i < extra else 0) for i in range(loops)]


# -- the caller's side -----------------------------------------------------------------------


class _Dispatch:
    """The names still to sync, the results, and the progress shown to the caller."""

    def __init__(self, names: list[str], progress: Callable[[SyncProgress], None] | None) -> None:
        self.todo = deque(names)
        self.results: dict[str, SyncResult | BaseException] = {}
        self._callback = progress
        self._progress: dict[str, SyncProgress] = {}

    def take(self) -> str | None:
        return self.todo.popleft() if self.todo else None

    def show(self, snapshot: dict[str, Any]) -> None:
        if self._callback is None:
            return
        current = self._progress.get(snapshot["repository"])
        if current is None:
            current = self._progress[snapshot["repository"]] = SyncProgress(**snapshot)
        else:
            for key, value in snapshot.items():
                setattr(current, key, value)
        self._callback(current)


class _Worker:
    """One worker process, seen from the caller."""

    def __init__(self, process: asyncio.subprocess.Process, number: int) -> None:
        self.process = process
        self.number = number
        self.running: set[str] = set()
        self.stopped = False

    def stop(self) -> None:
        """End the process now. Between syncs it holds nothing; stopped mid-sync, its
        repositories keep their last version and their leases go stale with it."""
        self.stopped = True
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def send(self, message: object) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        data = pickle.dumps(message)
        stdin.write(_HEADER.pack(len(data)) + data)
        with contextlib.suppress(ConnectionError):
            await stdin.drain()

    async def receive(self) -> Any:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            header = await stdout.readexactly(_HEADER.size)
            return pickle.loads(await stdout.readexactly(_HEADER.unpack(header)[0]))
        except asyncio.IncompleteReadError:
            return None


async def _start(number: int) -> _Worker:
    # The worker imports ocimirror from where this process did, installed or not.
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ocimirror.workers",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    return _Worker(process, number)


async def _serve_worker(worker: _Worker, spec: _Spec, dispatch: _Dispatch) -> None:
    """Answer one worker's messages until it exits; what it was running then failed."""
    await worker.send(spec)
    while (message := await worker.receive()) is not None:
        kind = message[0]
        if kind == "want":
            name = dispatch.take()
            if name is not None:
                worker.running.add(name)
            await worker.send(name)
        elif kind == "progress":
            dispatch.show(message[1])
        elif kind == "log":
            _, logger, level, text = message
            logging.getLogger(logger).log(level, "[worker %d] %s", worker.number, text)
        elif kind == "done":
            _, name, result = message
            worker.running.discard(name)
            dispatch.results[name] = result
    code = await worker.process.wait()
    if code != 0 and not worker.running and not worker.stopped:
        log.warning("sync worker %d exited with status %s; the others go on", worker.number, code)
    for name in sorted(worker.running):
        log.error(
            "%s: sync worker %d exited (status %s) during its sync", name, worker.number, code
        )
        dispatch.results[name] = WorkerFailed(
            f"repository {name!r}: the sync worker process exited with status {code} during "
            "its sync; nothing of it was published unless a new version is listed"
        )


class _Helpers:
    """The worker processes: started once the work is worth it (:meth:`watch`,
    :meth:`finished_one`), then served until they exit."""

    def __init__(self, count: int, specs: Callable[[int], _Spec], dispatch: _Dispatch) -> None:
        self.count = count
        self.specs = specs
        self.dispatch = dispatch
        self.started: list[_Worker] = []
        self.serving: list[asyncio.Future[None]] = []
        self._starting: asyncio.Future[None] | None = None
        self._begun = time.monotonic()
        self._done = 0

    def start(self) -> None:
        """Start the workers (once), unless nothing is left to hand out."""
        if self._starting is None and self.dispatch.todo:
            self._starting = asyncio.ensure_future(self._start_all())

    async def _start_all(self) -> None:
        for number in range(1, self.count + 1):
            worker = await _start(number)
            self.started.append(worker)  # appended at once: the caller's cleanup stops it
            self.serving.append(
                asyncio.ensure_future(_serve_worker(worker, self.specs(number), self.dispatch))
            )

    def watch(self, p: SyncProgress) -> None:
        """A sync in the calling loop that downloads is worth the workers' start-up."""
        if self._starting is None and (p.manifests_downloaded or p.blobs_downloaded):
            self.start()

    def finished_one(self, lane_count: int) -> None:
        """The calling loop finished a repository: start the workers if, at its pace so far
        (measured once every lane has finished one), what is left takes it longer than
        :data:`WORTH_A_WORKER`."""
        self._done += 1
        if self._starting is not None or self._done < lane_count:
            return
        pace = (time.monotonic() - self._begun) / self._done
        if len(self.dispatch.todo) * pace > WORTH_A_WORKER:
            self.start()

    async def finish(self) -> None:
        """Nothing is left to hand out: a worker still starting (or idle) is stopped, the
        others are waited for to the end of their syncs."""
        if self._starting is not None:
            await self._starting  # process creation only: milliseconds
        for worker in self.started:
            if not worker.running:
                worker.stop()
        await asyncio.gather(*self.serving)

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
        for task in self.serving:
            task.cancel()
        for worker in self.started:
            worker.stop()
            await worker.process.wait()


async def _own_lanes(
    metadata: SyncStore,
    blobs: BlobStore,
    spec: _Spec,
    dispatch: _Dispatch,
    progress: Callable[[SyncProgress], None] | None,
    helpers: _Helpers,
) -> None:
    """The calling process syncs too, in its own loop, from the same list; what its syncs do
    tells ``helpers`` when to start the worker processes."""
    shared = _Shared(spec.concurrency)

    def watched(p: SyncProgress) -> None:
        helpers.watch(p)
        if progress is not None:
            progress(p)

    async def lane() -> None:
        while (name := dispatch.take()) is not None:
            dispatch.results[name] = await _sync_one(metadata, blobs, name, spec, shared, watched)
            helpers.finished_one(spec.lanes)

    try:
        await asyncio.gather(*(lane() for _ in range(spec.lanes)))
    finally:
        await shared.connections.aclose()


class _Shared:
    """What the syncs of one loop share: the download budget, the upstream connections, and
    the blobs being downloaded."""

    def __init__(self, concurrency: int) -> None:
        self.limit = asyncio.Semaphore(concurrency)
        self.connections = SharedConnections()
        self.inflight: dict[str, asyncio.Future[None]] = {}


async def _sync_one(
    metadata: SyncStore,
    blobs: BlobStore,
    name: str,
    spec: _Spec,
    shared: _Shared,
    progress: Callable[[SyncProgress], None] | None,
) -> SyncResult | BaseException:
    try:
        return await sync_repository(
            metadata,
            blobs,
            name,
            policy=spec.policy,
            progress=progress,
            limit=shared.limit,
            connections=shared.connections,
            _inflight=shared.inflight,
        )
    except (OcimirrorError, OSError) as exc:
        log.error("%s: sync failed: %s", name, redact_text(f"{type(exc).__name__}: {exc}"))
        return exc


async def sync_in_workers(
    metadata: SyncStore,
    blobs: BlobStore,
    config: Config,
    names: list[str],
    *,
    workers: int,
    policy: SyncPolicy | None = None,
    concurrency: int = 32,
    progress: Callable[[SyncProgress], None] | None = None,
) -> dict[str, SyncResult | BaseException]:
    """Sync ``names`` over this process's loop and ``workers - 1`` worker processes.

    ``metadata`` and ``blobs`` are this process's stores, opened from ``config`` (which the
    workers open too). Returns every name's result or error, in the order given.
    """
    if workers < 2:
        raise InvalidError(f"sync_in_workers needs at least 2 workers, got {workers}")
    if (reason := shareable(config)) is not None:
        raise InvalidError(f"cannot sync in {workers} worker processes: {reason}")
    shares = _shares(concurrency, workers)
    dispatch = _Dispatch(names, progress)
    levels = (
        logging.getLogger().getEffectiveLevel(),
        logging.getLogger("ocimirror").getEffectiveLevel(),
    )

    def spec(share: int) -> _Spec:
        return _Spec(
            config=config,
            policy=policy,
            concurrency=share,
            lanes=lanes(share),
            log_levels=levels,
            progress=progress is not None,
        )

    helpers = _Helpers(workers - 1, lambda number: spec(shares[number]), dispatch)
    try:
        await _own_lanes(metadata, blobs, spec(shares[0]), dispatch, progress, helpers)
        await helpers.finish()
    finally:
        await helpers.close()
    for name in dispatch.todo:  # only when every loop stopped early
        dispatch.results[name] = WorkerFailed(f"repository {name!r} was not synced")
    return {name: dispatch.results[name] for name in names}


# -- the worker's side -----------------------------------------------------------------------


class _Pipe:
    """The worker's end: requests and results up, names down."""

    def __init__(self, down: asyncio.StreamReader, up: IO[bytes]) -> None:
        self._down = down
        self._up = up

    def send(self, message: object) -> None:
        data = pickle.dumps(message)
        self._up.write(_HEADER.pack(len(data)) + data)
        self._up.flush()

    def send_result(self, name: str, result: SyncResult | BaseException) -> None:
        try:
            self.send(("done", name, result))
        except (pickle.PicklingError, TypeError, AttributeError):
            # An error that cannot be pickled still comes back, as its text.
            text = f"{type(result).__name__}: {result}"
            self.send(("done", name, OcimirrorError(text)))

    async def receive(self) -> Any:
        header = await self._down.readexactly(_HEADER.size)
        return pickle.loads(await self._down.readexactly(_HEADER.unpack(header)[0]))


class _Forward(logging.Handler):
    """Log records go to the caller, whose handlers format (and redact) them."""

    def __init__(self, pipe: _Pipe) -> None:
        super().__init__()
        self._pipe = pipe

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pipe.send(("log", record.name, record.levelno, record.getMessage()))
        except Exception:  # logging must never take the sync down
            self.handleError(record)


class _Reporter:
    """Progress snapshots up the pipe, at most every :data:`PROGRESS_INTERVAL` per
    repository (and on every phase change)."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self._sent: dict[str, tuple[float, str]] = {}

    def __call__(self, p: SyncProgress) -> None:
        now = time.monotonic()
        last = self._sent.get(p.repository)
        if last is not None and last[1] == p.phase and now - last[0] < PROGRESS_INTERVAL:
            return
        self._sent[p.repository] = (now, p.phase)
        self._pipe.send(("progress", attrs.asdict(p)))


async def _work(pipe: _Pipe) -> None:
    spec: _Spec = await pipe.receive()
    logging.getLogger().setLevel(spec.log_levels[0])
    logging.getLogger("ocimirror").setLevel(spec.log_levels[1])
    config = spec.config
    metadata, blobs = await open_stores(
        config.database_url, config.storage_url, config.storage_options
    )
    settle()  # this process is ocimirror's: what it imported so far lives as long as it does
    reporter = _Reporter(pipe) if spec.progress else None
    shared = _Shared(spec.concurrency)
    asking = asyncio.Lock()  # one request for a name at a time: answers come in order

    async def next_name() -> str | None:
        async with asking:
            pipe.send(("want",))
            name: str | None = await pipe.receive()
            return name

    async def lane() -> None:
        while (name := await next_name()) is not None:
            result = await _sync_one(metadata, blobs, name, spec, shared, reporter)
            pipe.send_result(name, result)

    try:
        await asyncio.gather(*(lane() for _ in range(spec.lanes)))
    finally:
        await shared.connections.aclose()
        await metadata.close()
        await blobs.close()


def main() -> None:
    """A worker process: ``python -m ocimirror.workers`` (started by :func:`sync_in_workers`)."""
    up = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, not into the messages
    sys.stdout = sys.stderr

    async def run() -> None:
        loop = asyncio.get_running_loop()
        down = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(down), os.fdopen(0, "rb", buffering=0)
        )
        pipe = _Pipe(down, up)
        root = logging.getLogger()
        root.handlers[:] = [_Forward(pipe)]
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
        await _work(pipe)

    asyncio.run(run())
    settle()  # and exit without walking every imported module once more


if __name__ == "__main__":
    main()
