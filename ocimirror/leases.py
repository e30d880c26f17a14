"""A sync's lease on its repository: taken when the sync first needs it, renewed while held.

The lease is a row in the database (:class:`~ocimirror.backends.metadata.LeaseStore`), so two
syncs of one repository never download into it or publish to it at once, wherever they run.
A sync takes it at the first thing that needs it: before it downloads a manifest or blob, or
before it writes a version. A re-sync that finds the upstream as it was (every tag resolves
to a manifest already stored, and the latest version already says so) takes none and writes
nothing at all; two such syncs may run at once, as they change nothing. Nor does a
pull-through cache's fill (a sync of named tags that only adds): its version is built on the
latest one under the repository's row lock, so fills in several processes, and a sync beside
them, all land.

Once taken, the lease is renewed at a third of :data:`LEASE_TTL`; a sync that loses it
(another process took it over after it expired) is stopped, and the version's transaction
checks the lease too, so a sync without its lease publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

from ocimirror.backends.metadata import Lease, LeaseStore
from ocimirror.errors import OcimirrorError
from ocimirror.upstream import redact_text

__all__ = ["LEASE_TTL", "SyncLease"]

log = logging.getLogger("ocimirror.sync")

#: How long a sync's lease lasts without renewal; it is renewed at a third of that.
LEASE_TTL = 90.0


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_stale(holder: str) -> bool:
    """Whether a lease holder is a process on this host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class SyncLease:
    """One sync's hold on its repository, taken by :meth:`take` (once, however many tasks
    ask) and given back by :meth:`release`. ``job`` is the task stopped when the lease is
    lost; :attr:`lost` says whether that happened."""

    def __init__(self, metadata: LeaseStore, repository: str) -> None:
        self._metadata = metadata
        self._repository = repository
        self._lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None
        self.job: asyncio.Task[Any] | None = None
        self.held: Lease | None = None
        self.lost = False

    def __repr__(self) -> str:
        state = "not taken" if self.held is None else f"held by {self.held.holder}"
        return f"<SyncLease {self._repository!r} {state}>"

    async def take(self) -> Lease:
        """The lease, taken now if it was not yet; RepositoryBusy if another sync has it."""
        async with self._lock:
            if self.held is None:
                self.held = await self._metadata.acquire_lease(
                    self._repository,
                    holder=_holder(),
                    purpose="sync",
                    ttl=LEASE_TTL,
                    is_stale=_is_stale,
                )
                self._renewer = asyncio.ensure_future(self._renew(self.held))
            return self.held

    async def release(self) -> None:
        """Stop renewing and give the lease back (nothing to do if it was never taken)."""
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        held, self.held = self.held, None
        if held is not None:
            await self._metadata.release_lease(self._repository, holder=held.holder)

    async def _renew(self, lease: Lease) -> None:
        """Keep the lease; if it is lost, stop the job (it could not publish anyway)."""
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            try:
                kept = await self._metadata.renew_lease(
                    self._repository, holder=lease.holder, ttl=LEASE_TTL
                )
            except (OcimirrorError, OSError) as exc:
                # The database is unreachable for now: keep trying while the lease may run.
                message = redact_text(f"{type(exc).__name__}: {exc}")
                log.warning("%s: renewing the sync lease failed: %s", self._repository, message)
                continue
            if not kept:
                log.error("%s: lost the sync lease; stopping without publishing", self._repository)
                self.lost = True
                if self.job is not None:
                    self.job.cancel()
                return
