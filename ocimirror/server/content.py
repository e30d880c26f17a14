"""What a name serves, and the per-process caches that make answering it cheap.

A request names a distribution by its base path. :meth:`Content.resolve` turns that into a
:class:`Served`: the repository and the *number* of one complete version (the latest for a
moving distribution, the pinned one otherwise). Every read of the request then uses that
number, so a request is answered from one version even while a sync publishes the next.

Versions are immutable, and content is addressed by digest, so most answers never change:

* manifest bytes by digest (an LRU bounded by bytes);
* a version's answers to "which digest is this tag?", "does it hold this manifest/blob?" and
  "does this manifest have no signatures?" (asked for every image by clients that use the
  signature extension), keyed by the repository's identity and the version number (LRUs
  bounded by entries).

Only the name's resolution is mutable; it is cached for ``cache_ttl`` seconds, so a new version
(or distribution) shows within that time in every process, while the state shared across
processes stays in the database. A miss (a tag or digest the cached version does not hold)
re-resolves the name once, so a version published a moment ago, or a cached version that
retention has just squashed away, never causes a wrong 404 for long.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import attrs

from ocimirror.backends.metadata import (
    ContentType,
    DistributionRecord,
    ManifestRecord,
    SignatureRecord,
)
from ocimirror.errors import DistributionNotFound, NotFound
from ocimirror.registry import AsyncRegistry

__all__ = ["Content", "Served"]

#: How often a miss reads the name again while the version it names keeps changing.
_MISS_RETRIES = 3

_K = TypeVar("_K")
_V = TypeVar("_V")
_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class Served:
    """One complete repository version, as a distribution serves it right now."""

    #: The distribution's base path (the ``<name>`` in the URL).
    name: str
    #: The repository's name.
    repository: str
    #: The version number every read of the request uses.
    version: int
    #: Whether the distribution is pinned to that version (otherwise it follows the latest).
    pinned: bool
    #: Pulls need a credential that grants them (a public one anyone may pull).
    private: bool
    #: The repository's identity: a repository deleted and created again under the same name
    #: restarts its version numbers, so cached answers are keyed by this, never by the name.
    identity: tuple[int, float]

    @property
    def key(self) -> tuple[int, float, int]:
        """What caches of this (immutable) version are keyed by."""
        return (*self.identity, self.version)


class _LRU(Generic[_K, _V]):
    """A dict that forgets its least recently used entries beyond ``maxsize``."""

    __slots__ = ("_data", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[_K, _V] = OrderedDict()

    def get(self, key: _K) -> _V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: _K, value: _V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def pop(self, key: _K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class _ManifestLRU:
    """Manifest records by digest, forgetting the least recently used beyond ``max_bytes``."""

    __slots__ = ("_data", "max_bytes", "size")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._data: OrderedDict[str, ManifestRecord] = OrderedDict()

    def get(self, digest: str) -> ManifestRecord | None:
        record = self._data.get(digest)
        if record is not None:
            self._data.move_to_end(digest)
        return record

    def put(self, record: ManifestRecord) -> None:
        cost = len(record.data)
        if cost > self.max_bytes or record.digest in self._data:
            return
        self._data[record.digest] = record
        self.size += cost
        while self.size > self.max_bytes:
            _, old = self._data.popitem(last=False)
            self.size -= len(old.data)

    def clear(self) -> None:
        self._data.clear()
        self.size = 0


@attrs.frozen
class _Missing:
    """A cached "no such name": the error to raise again (a fresh one each time)."""

    error: type[NotFound]
    message: str
    detail: Any

    def raise_(self) -> None:
        raise self.error(self.message, detail=self.detail)


@attrs.frozen
class _Resolution:
    result: Served | _Missing
    loaded: float  # time.monotonic() when read from the database


class Content:
    """Reads for the registry API through per-process caches; see the module docstring.

    Args:
        registry: The registry to read, or ``None`` until :meth:`attach` (an app that opens
            its registry itself).
        cache_ttl: Seconds a name's resolution (and the catalog) is reused.
        manifest_cache_bytes: The bound of the manifest cache.
        max_entries: The bound of each of the other caches.
    """

    def __init__(
        self,
        registry: AsyncRegistry | None = None,
        *,
        cache_ttl: float = 1.0,
        manifest_cache_bytes: int = 64 << 20,
        max_entries: int = 100_000,
    ) -> None:
        if cache_ttl < 0:
            raise ValueError(f"cache_ttl must be >= 0 seconds, got {cache_ttl}")
        self._registry = registry
        self.cache_ttl = cache_ttl
        self._names: _LRU[str, _Resolution] = _LRU(max_entries)
        self._loading: dict[str, tuple[float, asyncio.Future[_Resolution]]] = {}
        self._tags: _LRU[tuple[Any, ...], str] = _LRU(max_entries)
        self._present: _LRU[tuple[Any, ...], bool] = _LRU(max_entries)
        self._unsigned: _LRU[tuple[Any, ...], bool] = _LRU(max_entries)
        self._manifests = _ManifestLRU(manifest_cache_bytes)
        self._catalog: tuple[float, list[DistributionRecord]] | None = None

    @property
    def registry(self) -> AsyncRegistry:
        """The registry being served."""
        if self._registry is None:
            raise RuntimeError(
                "the registry is not open: the app opens it as its lifespan starts or on its "
                "first request, and it has been closed since (or was never opened)"
            )
        return self._registry

    def attach(self, registry: AsyncRegistry | None) -> None:
        """Serve ``registry`` (``None``: nothing) from now on, with empty caches."""
        self._registry = registry
        self.clear()

    def forget(self, name: str) -> None:
        """Forget ``name``'s resolution (this process just published a version of it)."""
        self._names.pop(name)
        self._catalog = None

    def clear(self) -> None:
        """Forget everything cached."""
        self._names.clear()
        self._tags.clear()
        self._present.clear()
        self._unsigned.clear()
        self._manifests.clear()
        self._catalog = None

    # -- names --------------------------------------------------------------------------------

    async def resolve(self, name: str) -> Served:
        """What ``name`` serves now (cached for ``cache_ttl``); NAME_UNKNOWN errors otherwise."""
        return _served(await self._resolution(name, time.monotonic()))

    async def _resolution(
        self, name: str, now: float, *, fresher_than: float = -1.0
    ) -> _Resolution:
        cached = self._names.get(name)
        if (
            cached is not None
            and now - cached.loaded < self.cache_ttl
            and cached.loaded > fresher_than
        ):
            return cached
        # One database read per name at a time; concurrent requests share it, unless it began
        # before what the caller must see (a miss wants a read that began after it arrived).
        current = self._loading.get(name)
        loading: asyncio.Future[_Resolution]
        if current is None or current[0] <= fresher_than:
            loading = asyncio.ensure_future(self._load(name))
            self._loading[name] = (time.monotonic(), loading)
            loading.add_done_callback(lambda done: self._forget_loading(name, done))
        else:
            loading = current[1]
        return await asyncio.shield(loading)

    def _forget_loading(self, name: str, done: asyncio.Future[_Resolution]) -> None:
        current = self._loading.get(name)
        if current is not None and current[1] is done:
            del self._loading[name]

    async def _load(self, name: str) -> _Resolution:
        loaded = time.monotonic()
        metadata = self.registry.metadata
        result: Served | _Missing
        try:
            dist, repo = await metadata.serving(name)
            if repo is None:
                raise DistributionNotFound(f"{name!r} serves no repository", detail={"name": name})
            pinned = dist.repository_version
            result = Served(
                name=name,
                repository=repo.name,
                version=repo.latest_version if pinned is None else pinned,
                pinned=pinned is not None,
                private=dist.private,
                identity=(repo.id, repo.created.timestamp()),
            )
        except NotFound as exc:
            message = exc.message
            if isinstance(exc, DistributionNotFound) and exc.detail is None:
                message = f"repository name {name!r} is not known to this registry"
            result = _Missing(type(exc), message, exc.detail or {"name": name})
        resolution = _Resolution(result, loaded)
        self._names.put(name, resolution)
        return resolution

    async def read(
        self, name: str, read: Callable[[Served], Awaitable[_T | None]]
    ) -> tuple[Served, _T | None]:
        """Resolve ``name`` and ``read`` from that version; on a miss, re-resolve.

        The retry, with a read of the name that began after the request arrived, makes a
        version published (or squashed away) before the request show at once, in whichever
        process published it, instead of answering 404 until the cache expires.
        """
        now = time.monotonic()
        resolution = await self._resolution(name, now)
        served = _served(resolution)
        value = await read(served)
        if value is not None or resolution.loaded > now:
            return served, value
        # A read of the name that began after this request arrived: a version published
        # before the request (another process's, say the one whose manifest the client just
        # got) is then seen. Concurrent misses share one such read.
        for _ in range(_MISS_RETRIES):
            fresh = _served(await self._resolution(name, time.monotonic(), fresher_than=now))
            if fresh.key == served.key:
                return served, value
            served, value = fresh, await read(fresh)
            if value is not None:
                break
            # The version read was squashed away meanwhile (retention): read the name again.
            now = time.monotonic()
        return served, value

    # -- one version ---------------------------------------------------------------------------

    async def tag(self, served: Served, tag: str) -> str | None:
        """The manifest digest ``tag`` names in that version, or ``None``."""
        key = (served.key, tag)
        digest = self._tags.get(key)
        if digest is None:
            digest = await self.registry.metadata.get_tag(served.repository, served.version, tag)
            if digest is None:
                return None
            self._tags.put(key, digest)
        return digest

    async def has(self, served: Served, content_type: ContentType, digest: str) -> bool:
        """Whether that version holds the manifest or blob ``digest``."""
        key = (served.key, content_type, digest)
        present = self._present.get(key)
        if present is None:
            present = await self.registry.metadata.has_content(
                served.repository, served.version, content_type, digest
            )
            self._present.put(key, present)
        return present

    async def signatures(self, served: Served, digest: str) -> list[SignatureRecord]:
        """The signatures of the manifest ``digest`` in that version. That a manifest has none
        (most have none) is remembered; signatures themselves are read each time."""
        key = (served.key, digest)
        if self._unsigned.get(key):
            return []
        records = await self.registry.metadata.signatures(served.repository, served.version, digest)
        if not records:
            self._unsigned.put(key, True)
        return records

    # -- content ------------------------------------------------------------------------------

    async def manifest(self, digest: str) -> ManifestRecord | None:
        """The stored manifest ``digest`` (exact bytes and media type), or ``None``."""
        record = self._manifests.get(digest)
        if record is None:
            record = await self.registry.metadata.get_manifest(digest)
            if record is not None:
                self._manifests.put(record)
        return record

    async def distributions(self) -> list[DistributionRecord]:
        """Every distribution (cached for ``cache_ttl``)."""
        now = time.monotonic()
        if self._catalog is not None and now - self._catalog[0] < self.cache_ttl:
            return self._catalog[1]
        records = await self.registry.metadata.list_distributions()
        self._catalog = (now, records)
        return records


def _served(resolution: _Resolution) -> Served:
    if isinstance(resolution.result, _Missing):
        resolution.result.raise_()
    assert isinstance(resolution.result, Served)
    return resolution.result
