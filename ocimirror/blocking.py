"""The blocking facade: the async API, one line at a time, for scripts and notebooks.

Each :class:`Registry` runs its own event loop in a background thread, so it works the same
in a plain script and inside Jupyter (whose loop is already running). Every method mirrors the
async method of the same name and returns blocking objects.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from ocimirror.registry import AsyncRegistry
from ocimirror.repository import AsyncRepository

__all__ = ["Registry", "Repository", "open"]

T = TypeVar("T")


class _Portal:
    """An event loop in a daemon thread, running coroutines for blocking callers."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ocimirror-loop", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking ocimirror call was made from its own event loop")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def _blocking(method: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Turn an async method of the wrapped object into a blocking one."""

    @functools.wraps(method)
    def call(self: _Facade, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_unwrap(a) for a in args)
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        result = self._portal.call(method(self._async, *args, **kwargs))
        return self._wrap(result)

    return call


def _unwrap(value: Any) -> Any:
    return value._async if isinstance(value, _Facade) else value


class _Facade:
    _async: Any

    def __init__(self, wrapped: Any, portal: _Portal) -> None:
        self._async = wrapped
        self._portal = portal

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, AsyncRepository):
            return Repository(value, self._portal)
        if type(value) is list:  # a VersionList, say, holds values only and stays as it is
            return [self._wrap(v) for v in value]
        return value

    def __repr__(self) -> str:
        # The async object's words under this object's own name (blocking vs async).
        text = repr(self._async)
        return text.replace(f"<{type(self._async).__name__}", f"<{type(self).__name__}", 1)


class Repository(_Facade):
    """A repository (blocking); see :class:`~ocimirror.repository.AsyncRepository`."""

    _async: AsyncRepository

    def __getattr__(self, name: str) -> Any:
        # Attributes of the snapshot (name, description, ...) read straight through.
        return getattr(self._async, name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Repository) and other._async == self._async

    def __hash__(self) -> int:
        return hash(self._async)

    refresh = _blocking(AsyncRepository.refresh)
    update = _blocking(AsyncRepository.update)
    latest_version = _blocking(AsyncRepository.latest_version)
    version = _blocking(AsyncRepository.version)
    versions = _blocking(AsyncRepository.versions)
    delete_version = _blocking(AsyncRepository.delete_version)
    diff = _blocking(AsyncRepository.diff)
    tags = _blocking(AsyncRepository.tags)
    resolve = _blocking(AsyncRepository.resolve)
    manifests = _blocking(AsyncRepository.manifests)
    blobs = _blocking(AsyncRepository.blobs)
    has_manifest = _blocking(AsyncRepository.has_manifest)
    has_blob = _blocking(AsyncRepository.has_blob)
    modify = _blocking(AsyncRepository.modify)
    add = _blocking(AsyncRepository.add)
    remove = _blocking(AsyncRepository.remove)
    tag = _blocking(AsyncRepository.tag)
    untag = _blocking(AsyncRepository.untag)
    copy_tags = _blocking(AsyncRepository.copy_tags)
    copy_manifests = _blocking(AsyncRepository.copy_manifests)
    sync = _blocking(AsyncRepository.sync)
    import_layout = _blocking(AsyncRepository.import_layout)
    export_layout = _blocking(AsyncRepository.export_layout)

    def _repr_html_(self) -> str:
        return self._async._repr_html_().replace(
            f"<b>{type(self._async).__name__} ", f"<b>{type(self).__name__} ", 1
        )


class Registry(_Facade):
    """A registry (blocking); see :class:`~ocimirror.registry.AsyncRegistry`.

    Close it (or use ``with``) to release the database and stop its loop thread.
    """

    _async: AsyncRegistry

    @property
    def aio(self) -> AsyncRegistry:
        """The async registry underneath (bound to this facade's loop thread)."""
        return self._async

    create_repository = _blocking(AsyncRegistry.create_repository)
    repository = _blocking(AsyncRegistry.repository)
    repositories = _blocking(AsyncRegistry.repositories)
    delete_repository = _blocking(AsyncRegistry.delete_repository)
    create_remote = _blocking(AsyncRegistry.create_remote)
    remote = _blocking(AsyncRegistry.remote)
    remotes = _blocking(AsyncRegistry.remotes)
    update_remote = _blocking(AsyncRegistry.update_remote)
    delete_remote = _blocking(AsyncRegistry.delete_remote)
    create_distribution = _blocking(AsyncRegistry.create_distribution)
    distribution = _blocking(AsyncRegistry.distribution)
    distributions = _blocking(AsyncRegistry.distributions)
    update_distribution = _blocking(AsyncRegistry.update_distribution)
    delete_distribution = _blocking(AsyncRegistry.delete_distribution)
    create_pull_through_remote = _blocking(AsyncRegistry.create_pull_through_remote)
    pull_through_remote = _blocking(AsyncRegistry.pull_through_remote)
    pull_through_remotes = _blocking(AsyncRegistry.pull_through_remotes)
    update_pull_through_remote = _blocking(AsyncRegistry.update_pull_through_remote)
    delete_pull_through_remote = _blocking(AsyncRegistry.delete_pull_through_remote)
    create_pull_through_distribution = _blocking(AsyncRegistry.create_pull_through_distribution)
    pull_through_distribution = _blocking(AsyncRegistry.pull_through_distribution)
    pull_through_distributions = _blocking(AsyncRegistry.pull_through_distributions)
    update_pull_through_distribution = _blocking(AsyncRegistry.update_pull_through_distribution)
    delete_pull_through_distribution = _blocking(AsyncRegistry.delete_pull_through_distribution)
    create_user = _blocking(AsyncRegistry.create_user)
    user = _blocking(AsyncRegistry.user)
    users = _blocking(AsyncRegistry.users)
    update_user = _blocking(AsyncRegistry.update_user)
    delete_user = _blocking(AsyncRegistry.delete_user)
    grant = _blocking(AsyncRegistry.grant)
    revoke = _blocking(AsyncRegistry.revoke)
    authenticate = _blocking(AsyncRegistry.authenticate)
    put_blob = _blocking(AsyncRegistry.put_blob)
    put_manifest = _blocking(AsyncRegistry.put_manifest)
    has_blob = _blocking(AsyncRegistry.has_blob)
    get_manifest = _blocking(AsyncRegistry.get_manifest)
    sync_all = _blocking(AsyncRegistry.sync_all)
    orphan_cleanup = _blocking(AsyncRegistry.orphan_cleanup)
    repair = _blocking(AsyncRegistry.repair)

    def close(self) -> None:
        """Close the stores and stop the loop thread."""
        try:
            self._portal.call(self._async.close())
        finally:
            self._portal.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(
    *,
    home: str | os.PathLike[str] | None = None,
    database_url: str | None = None,
    storage_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Registry:
    """Open a registry for scripts and notebooks (blocking calls, its own loop thread).

    With nothing given: SQLite and files under ``$OCIMIRROR_HOME`` (or the user's data
    directory). ``database_url`` (``sqlite:///...``, ``postgresql://...``), ``storage_url``
    (``file://...``, ``s3://bucket/prefix``, ``memory://...``) and ``storage_options`` (for
    fsspec, such as S3 credentials) override it, each defaulting to its ``OCIMIRROR_*``
    variable. The async counterpart is :meth:`AsyncRegistry.open`. Close it, or use ``with``.
    """
    portal = _Portal()
    try:
        registry = portal.call(
            AsyncRegistry.open(
                home=home,
                database_url=database_url,
                storage_url=storage_url,
                storage_options=storage_options,
            )
        )
    except BaseException:
        portal.close()
        raise
    return Registry(registry, portal)
