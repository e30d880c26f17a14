"""Pull-through caching, as Pulp (``remote pull-through``, ``distribution pull-through``),
CNCF Distribution's proxy mode, zot and Harbor offer it.

A :class:`PullThroughRemote` names a whole registry (with include/exclude patterns on
repository names); a :class:`PullThroughDistribution` serves it under a base path ``B``. The
first pull of ``B/<name>:<tag>`` (or ``@<digest>``) makes a repository, a remote (the
``on_demand`` policy, upstream name ``<name>``; Docker Hub's ``library/`` rule applies) and a
distribution, all named ``B/<name>``, syncs that one tag into a new version and answers from
it: layers come from the upstream on their first request while they are stored (see
:mod:`ocimirror.ondemand`), and from storage after that.

A fill takes no lease (it only adds, and its version is built on the latest one under the
repository's row lock): the server processes of one cache, on one machine or several, fill
one repository side by side, and every version lands; two of them asked for the same tag at
once may each fetch its manifest once.

A tag pull checks the upstream tag with a HEAD (Docker Hub does not count HEADs against the
pull limit) at most once per ``check_interval``, recorded in the database so that every
server process shares it; a new digest upstream is synced in as a new version. When the
upstream is unreachable or refuses (5xx, 429), the local copy is served. Names outside the
patterns get 404 without any upstream request.

Retention (``max_size`` bytes, ``max_age`` seconds): after a pull fills the cache, the tags
pulled least recently are removed, each in a new version of its repository (the older
versions of that repository are deleted then), and the content no version of any repository
holds any more is deleted; content another repository holds is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from ocimirror.core.digest import Digest
from ocimirror.core.reference import validate_repository_name
from ocimirror.errors import (
    AlreadyExists,
    ManifestNotFound,
    OcimirrorError,
    UpstreamError,
    UpstreamUnavailable,
)
from ocimirror.remote import (
    Remote,
    SyncPolicy,
    _check_name,
    _check_url,
    _masked_headers,
    _masked_url,
    _positive,
    masked_connection,
    patterns,
)

if TYPE_CHECKING:
    from ocimirror.registry import AsyncRegistry
    from ocimirror.upstream import SharedConnections

__all__ = ["PullThrough", "PullThroughDistribution", "PullThroughRemote"]

log = logging.getLogger("ocimirror.pullthrough")

#: How long a process remembers the list of pull-through distributions.
_CACHES_TTL = 5.0


def _name_patterns(value: Any) -> tuple[str, ...]:
    return patterns(value, "name")


@attrs.frozen(kw_only=True)
class PullThroughRemote:
    """A whole upstream registry to cache from; ``include_names``/``exclude_names`` are
    fnmatch patterns on repository names (exclude wins). Secrets are masked as in
    :class:`~ocimirror.remote.Remote`."""

    name: str = attrs.field(validator=_check_name)
    url: str = attrs.field(validator=_check_url, repr=lambda v: repr(_masked_url(v)))
    include_names: tuple[str, ...] = attrs.field(default=(), converter=_name_patterns)
    exclude_names: tuple[str, ...] = attrs.field(default=(), converter=_name_patterns)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls_validation: bool = True
    ca_cert: str | None = attrs.field(default=None, repr=False)
    proxy_url: str | None = attrs.field(default=None, repr=lambda v: repr(_masked_url(v)))
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=lambda v: repr(_masked_headers(v)))
    download_concurrency: int = 10

    def wants(self, name: str) -> bool:
        """Whether a repository name passes the include and exclude patterns."""
        if any(fnmatch.fnmatchcase(name, p) for p in self.exclude_names):
            return False
        return not self.include_names or any(
            fnmatch.fnmatchcase(name, p) for p in self.include_names
        )

    def remote_for(self, name: str, upstream: str) -> Remote:
        """The ``on_demand`` remote of one cached repository."""
        return Remote(
            name=name,
            url=self.url,
            upstream_name=upstream,
            policy="on_demand",
            username=self.username,
            password=self.password,
            tls_validation=self.tls_validation,
            ca_cert=self.ca_cert,
            proxy_url=self.proxy_url,
            headers=dict(self.headers),
            download_concurrency=self.download_concurrency,
        )

    def to_json(self, *, secrets: bool = False) -> dict[str, Any]:
        """The fields as JSON, secrets masked unless ``secrets``."""
        data = attrs.asdict(self)
        data["include_names"] = list(self.include_names)
        data["exclude_names"] = list(self.exclude_names)
        data["headers"] = dict(self.headers)
        return data if secrets else masked_connection(data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PullThroughRemote:
        """From :meth:`to_json` output (with secrets)."""
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@attrs.frozen(kw_only=True)
class PullThroughDistribution:
    """A base path that serves a pull-through remote's repositories below it."""

    name: str = attrs.field(validator=_check_name)
    base_path: str = attrs.field(validator=lambda _, __, value: validate_repository_name(value))
    remote: str
    private: bool = False
    description: str | None = None
    #: Seconds between two upstream checks of one cached tag.
    check_interval: float = attrs.field(default=300.0, validator=_positive)
    #: Evict the least recently pulled tags when the cache holds more bytes than this.
    max_size: int | None = attrs.field(default=None, validator=_positive)
    #: Evict tags not pulled for this many seconds.
    max_age: float | None = attrs.field(default=None, validator=_positive)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON."""
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PullThroughDistribution:
        """From :meth:`to_json` output."""
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def upstream_name(self, name: str) -> str | None:
        """The upstream repository a name below the base path stands for, or None."""
        prefix = self.base_path + "/"
        return name[len(prefix) :] if name.startswith(prefix) and len(name) > len(prefix) else None


@attrs.frozen
class Cached:
    """A name that a pull-through distribution serves."""

    distribution: PullThroughDistribution
    remote: PullThroughRemote
    #: The local name (``<base path>/<upstream name>``): repository, remote, distribution.
    name: str
    upstream: str


class PullThrough:
    """Pull-through caching for one registry, in this process (see the module docstring)."""

    def __init__(self, registry: AsyncRegistry) -> None:
        self.registry = registry
        self._caches: tuple[float, list[tuple[PullThroughDistribution, PullThroughRemote]]] = (
            0.0,
            [],
        )
        self._refreshing: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._made: set[str] = set()
        #: Per cached repository: references waiting for the next fill, and the fill running.
        self._queued: dict[str, list[tuple[str, asyncio.Future[bool]]]] = {}
        self._draining: dict[str, asyncio.Task[None]] = {}
        self._shared: SharedConnections | None = None
        #: (name, reference) -> until when this process knows it needs no check.
        self._fresh: dict[tuple[str, str], float] = {}

    def forget(self) -> None:
        """Re-read the pull-through distributions on the next request."""
        self._caches = (0.0, [])

    async def _all(self) -> list[tuple[PullThroughDistribution, PullThroughRemote]]:
        until, caches = self._caches
        if time.monotonic() < until:
            return caches
        meta = self.registry.metadata
        found = []
        for record in await meta.list_pull_through("distribution"):
            dist = PullThroughDistribution.from_json(record.fields)
            try:
                remote = await meta.get_pull_through("remote", dist.remote)
            except OcimirrorError:
                continue
            found.append((dist, PullThroughRemote.from_json(remote.fields)))
        found.sort(key=lambda pair: -len(pair[0].base_path))  # the longest base path first
        self._caches = (time.monotonic() + _CACHES_TTL, found)
        return found

    async def match(self, name: str) -> Cached | None:
        """The pull-through distribution that serves ``name``, if one does and its remote's
        patterns let the name through (no upstream request either way)."""
        for dist, remote in await self._all():
            upstream = dist.upstream_name(name)
            if upstream is None:
                continue
            if not remote.wants(upstream):
                return None
            return Cached(dist, remote, name, upstream)
        return None

    async def ensure(self, cached: Cached) -> None:
        """Make the repository, remote and distribution of a cached name (idempotent, and
        safe when another process makes them at the same moment)."""
        if cached.name in self._made:
            return
        reg = self.registry
        remote = cached.remote.remote_for(cached.name, cached.upstream)
        dist = cached.distribution
        with contextlib.suppress(AlreadyExists):
            await reg.create_remote(remote)
        with contextlib.suppress(AlreadyExists):
            # Every fill is a version; they are pruned when the cache evicts (squashing a
            # version away on every fill would pull it from under concurrent readers).
            await reg.create_repository(
                cached.name,
                remote=cached.name,
                description=f"pull-through cache of {cached.upstream} ({dist.name})",
            )
        try:
            await reg.create_distribution(
                cached.name, base_path=cached.name, repository=cached.name, private=dist.private
            )
            log.info("pull-through %s: caching %s as %s", dist.name, cached.upstream, cached.name)
        except AlreadyExists:
            pass
        self._made.add(cached.name)

    async def refresh(self, cached: Cached, reference: str) -> bool:
        """Bring ``reference`` (a tag or digest) up to date in the cache before it is
        answered; whether a new version was made. One refresh per name and reference runs
        in this process at a time; the others share its outcome (its error too)."""
        key = (cached.name, reference)
        running = self._refreshing.get(key)
        if running is None:
            running = asyncio.ensure_future(self._refresh(cached, reference))
            self._refreshing[key] = running
            running.add_done_callback(lambda _: self._refreshing.pop(key, None))
        return await asyncio.shield(running)

    async def _refresh(self, cached: Cached, reference: str) -> bool:
        key = (cached.name, reference)
        if time.monotonic() < self._fresh.get(key, 0.0):
            return False  # checked within the interval, as this process knows
        await self.ensure(cached)
        meta = self.registry.metadata
        if ":" in reference:  # a digest: fetched once, then always local
            repo = await self.registry.repository(cached.name)
            if await repo.has_manifest(Digest.parse(reference)):
                self._remember(key, 3600.0)
                return False
            return await self._fill(cached, reference)
        now = datetime.now(UTC)
        interval = timedelta(seconds=cached.distribution.check_interval)
        checked, _ = await meta.tag_times(cached.name, reference)
        if checked is not None and now - checked < interval:
            # Checked within the interval (by any process): the tag is cached. (The first
            # read, before the repository's: a process that did not fill the tag itself learns
            # this with one query.)
            self._remember(key, (checked + interval - now).total_seconds())
            return False
        repo = await self.registry.repository(cached.name)
        local = await meta.get_tag(cached.name, repo.latest_version_number, reference)
        if local is None:
            # Not cached yet: the fill's GET by tag is the check.
            return await self._fill(cached, reference)
        remote = cached.remote.remote_for(cached.name, cached.upstream)
        try:
            client = self._connections().client(remote)
            try:
                upstream = await client.resolve(cached.upstream, reference)
            finally:
                await client.aclose()
        except ManifestNotFound:
            if local is not None:
                return False  # gone upstream: the cached copy is still served
            raise
        except (UpstreamError, OSError) as exc:
            if local is not None:
                log.warning(
                    "pull-through %s: upstream check failed, serving the cached copy: %s",
                    cached.name,
                    exc,
                )
                return False
            raise UpstreamUnavailable(
                f"{cached.name}:{reference} is not cached and the upstream cannot be reached: {exc}"
            ) from exc
        await meta.set_tag_times(cached.name, reference, checked=now)
        if local == str(upstream.digest):
            self._remember(key, cached.distribution.check_interval)
            return False
        return await self._fill(cached, reference)

    async def _fill(self, cached: Cached, reference: str) -> bool:
        """Sync one tag (or digest) into the cached repository, together with whatever
        else this process is waiting for in that repository (one sync for them all);
        whether a new version was made."""
        waiting: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(cached.name, []).append((reference, waiting))
        if cached.name not in self._draining:
            task = asyncio.ensure_future(self._drain(cached))
            self._draining[cached.name] = task
        return await asyncio.shield(waiting)

    async def _drain(self, cached: Cached) -> None:
        try:
            while queue := self._queued.pop(cached.name, None):
                try:
                    created, dropped = await self._sync(cached, queue)
                except BaseException as exc:
                    for _, waiting in queue:
                        if not waiting.done():
                            waiting.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for reference, waiting in queue:
                    if reference not in dropped:
                        waiting.set_result(created)
                        continue
                    reason = dropped[reference]
                    # The report names the error's class first: a tag the upstream does not
                    # have is 404 here too; anything else is the upstream failing.
                    error = (
                        ManifestNotFound
                        if reason.startswith(("ManifestNotFound:", "TagNotFound:"))
                        else UpstreamUnavailable
                    )
                    waiting.set_exception(
                        error(f"{cached.name}:{reference} could not be cached: {reason}")
                    )
        finally:
            del self._draining[cached.name]

    async def _sync(
        self, cached: Cached, queue: list[tuple[str, asyncio.Future[bool]]]
    ) -> tuple[bool, dict[str, str]]:
        """One sync of the queued references. It takes no lease (see
        :func:`~ocimirror.sync.sync_repository`'s ``only``): fills of one repository in other
        processes, or a sync of it, run beside it, and every version lands."""
        from ocimirror.sync import sync_repository

        reg = self.registry
        remote = cached.remote.remote_for(cached.name, cached.upstream)
        references = list(dict.fromkeys(r for r, _ in queue))
        # The process's connections (and what it learnt of the upstream: no referrers API,
        # no signature extension) serve every fill.
        result = await sync_repository(
            reg.metadata, reg.blobs, cached.name, remote, policy=SyncPolicy(),
            only=references, connections=self._connections(),
        )  # fmt: skip
        dropped = {d.get("tag") or d.get("digest", ""): d["reason"] for d in result.dropped}
        now = datetime.now(UTC)
        filled = [r for r in references if r not in dropped]
        filled_tags = [r for r in filled if ":" not in r]
        await reg.metadata.set_tag_times(cached.name, filled_tags, checked=now, pulled=now)
        for reference in filled:
            self._remember((cached.name, reference), cached.distribution.check_interval)
        if result.created:
            await self.evict(cached.distribution)
        return result.created, dropped

    def _connections(self) -> SharedConnections:
        if self._shared is None:
            from ocimirror.upstream import SharedConnections

            self._shared = SharedConnections()
        return self._shared

    async def close(self) -> None:
        """Close the upstream connections of tag checks."""
        if self._shared is not None:
            await self._shared.aclose()
            self._shared = None

    def _remember(self, key: tuple[str, str], seconds: float) -> None:
        """This process need not look at ``key`` again for ``seconds``."""
        if len(self._fresh) > 100_000:
            self._fresh.clear()
        self._fresh[key] = time.monotonic() + seconds

    async def pulled(self, name: str, tag: str) -> None:
        """Note that a cached tag was pulled (for retention)."""
        await self.registry.metadata.set_tag_times(name, tag, pulled=datetime.now(UTC))

    async def evict(self, dist: PullThroughDistribution) -> list[tuple[str, str]]:
        """Apply the distribution's retention; the (repository, tag) pairs evicted."""
        if dist.max_size is None and dist.max_age is None:
            return []
        reg = self.registry
        meta = reg.metadata
        tags = await meta.pulled_tags(dist.base_path)
        now = datetime.now(UTC)
        evicted: list[tuple[str, str]] = []
        if dist.max_age is not None:
            cutoff = now - timedelta(seconds=dist.max_age)
            evicted += [(r, t) for r, t, pulled in tags if pulled is not None and pulled < cutoff]
        if dist.max_size is not None:
            rest = [(r, t) for r, t, _ in tags if (r, t) not in evicted]
            size = await self._size(dist, [r for r, _ in rest], evicted)
            while rest[:-1] and size > dist.max_size:  # the newest tag always stays
                evicted.append(rest.pop(0))
                size = await self._size(dist, [r for r, _ in rest], evicted)
        removed: dict[str, list[str]] = {}
        for repository, tag in evicted:
            removed.setdefault(repository, []).append(tag)
        for repository, names in removed.items():
            repo = await reg.repository(repository)
            present = [t for t in names if t in await repo.tags()]
            if present:
                latest = await repo.remove(tags=present)
                # Older versions would still hold what was evicted: only the latest stays.
                for version in await repo.versions():
                    if version.number < latest.number:
                        await repo.delete_version(version.number)
            for tag in names:
                await meta.forget_tag(repository, tag)
                self._fresh.pop((repository, tag), None)
        if evicted:
            log.info("pull-through %s: evicted %d tags", dist.name, len(evicted))
            await reg.orphan_cleanup(grace=timedelta(seconds=60))
        return evicted

    async def _size(
        self, dist: PullThroughDistribution, repositories: list[str], evicted: list[tuple[str, str]]
    ) -> int:
        """Bytes of the blobs the remaining tags of the cache hold (each blob once)."""
        reg = self.registry
        gone = set(evicted)
        roots: list[str] = []
        for repository in dict.fromkeys(repositories):
            repo = await reg.repository(repository)
            roots += [d for t, d in (await repo.tags()).items() if (repository, t) not in gone]
        if not roots:
            return 0
        closure = await reg.metadata.closure(roots)
        total = 0
        for digest in closure.blobs:
            record = await reg.metadata.get_blob(digest)
            if record is not None:
                total += record.size
        return total


def parse_reference(reference: str) -> str:
    """A manifest reference as the cache keys it (a digest is normalised)."""
    if ":" in reference:
        return str(Digest.parse(reference))
    return reference
