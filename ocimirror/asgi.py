"""The registry API as an ASGI app: pull, push, content discovery and management, with token
authentication.

Serve it with granian (``ocimirror serve`` does), or with any ASGI server in factory mode::

    granian --interface asgi --factory ocimirror.asgi:create_app

Each worker process then opens its own registry (from ``OCIMIRROR_*`` variables or the home
directory) as its lifespan starts and closes it at shutdown.

Or embed it in a service, at the root, after the service's own routes (docs/embedding.md)::

    app = Starlette(routes=[Route("/health", health), Mount("/", app=create_app())])

Registry clients (docker, podman, skopeo) always ask for ``/v2/...`` and ``/token`` at the
host's root, so the app must be mounted at ``"/"``: under a prefix it answers (its paths and
``Link`` headers carry the ASGI ``root_path``), but clients never look there; it logs a warning
once. A mounted app's lifespan does not run, so an app that opens its registry itself opens it
on its first request instead (once, however many requests arrive together; a failure answers
``503 UNAVAILABLE`` and the next request tries again) and closes it when the event loop's
remaining tasks are cancelled at shutdown, as ``asyncio.run()`` and uvicorn do. granian stops
its loop without cancelling them: a service that wants the registry closed at a known moment,
under any server, enters the app's lifespan from its own
(``app.router.lifespan_context(app)``). A registry given to :func:`create_app` is its caller's
to open and close.

Who may do what is the ``auth`` argument's to decide (an
:class:`~ocimirror.server.access.Authenticator`). The default is Docker's token
authentication (:class:`~ocimirror.server.auth.TokenAuth`: users and grants from the registry,
tokens from ``/token``); :class:`~ocimirror.server.access.OpenAccess` lets everyone do
everything (``ocimirror serve --no-auth``, or ``OCIMIRROR_AUTH=none``). A service that mounts
the app can pass its own to plug in its identities.

The handlers live in :mod:`ocimirror.server`, one module per API concern.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ocimirror.registry import AsyncRegistry
from ocimirror.server.access import Authenticator, OpenAccess
from ocimirror.server.bodies import CloseUnreadBodies
from ocimirror.server.content import Content
from ocimirror.server.errors import error_response, http_exception_response
from ocimirror.server.routing import RegistryAPI

__all__ = ["RegistryOpener", "create_app"]

log = logging.getLogger("ocimirror.server")

_EVERY_METHOD = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]


def create_app(
    registry: AsyncRegistry | None = None,
    *,
    home: str | os.PathLike[str] | None = None,
    database_url: str | None = None,
    storage_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    auth: Authenticator | None = None,
    redirect_blobs: bool = False,
    cache_ttl: float = 1.0,
) -> Starlette:
    """The registry API app.

    Args:
        registry: An open registry to serve; the caller keeps it open while the app runs and
            closes it. Without one, the app opens one from ``home``, ``database_url``,
            ``storage_url`` and ``storage_options`` (each defaulting to its ``OCIMIRROR_*``
            variable, then to the home directory, as :meth:`AsyncRegistry.open` does): as its
            lifespan starts, or on its first request when no lifespan runs (a mounted app).
            It closes it as its lifespan ends, or else when the event loop cancels its
            remaining tasks at shutdown; ``app.state.opener`` is that registry's
            :class:`RegistryOpener`.
        auth: Who may do what. ``None``: token authentication configured from the
            environment (``OCIMIRROR_TOKEN_KEY``, ...), or no authentication at all when
            ``OCIMIRROR_AUTH`` is ``none``.
        redirect_blobs: Answer blob GETs with a ``307`` to a presigned URL when the blob store
            can sign them (S3); other stores are served directly either way.
        cache_ttl: Seconds a name's resolution to a repository version is reused by a
            process; a new version shows within this time. Versions themselves are immutable
            and cached freely.
    """
    if registry is not None and any(
        option is not None for option in (home, database_url, storage_url, storage_options)
    ):
        raise TypeError("give either a registry or where to open one, not both")
    authenticator = auth if auth is not None else _default_auth()
    content = Content(registry, cache_ttl=cache_ttl)
    api = RegistryAPI(content, auth=authenticator, redirect_blobs=redirect_blobs)
    opener: RegistryOpener | None = None
    if registry is not None:
        _bind(authenticator, registry)
    else:
        options = {
            "home": home,
            "database_url": database_url,
            "storage_url": storage_url,
            "storage_options": storage_options,
        }
        opener = RegistryOpener(options, content=content, auth=authenticator)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if opener is None:
            yield
            return
        await opener.open(watch=False)
        try:
            yield
        finally:
            await opener.close()

    app = Starlette(
        routes=[
            Route("/v2/", api.version, methods=["GET", "HEAD"]),
            # Every method: the API answers those a path does not take with an OCI error.
            Route("/v2/{path:path}", api.handle, methods=_EVERY_METHOD),
            Route("/extensions/v2/{path:path}", api.extension, methods=_EVERY_METHOD),
            *authenticator.routes(),
        ],
        exception_handlers={HTTPException: http_exception_response},
        middleware=[Middleware(_Embedded, opener=opener), Middleware(CloseUnreadBodies)],
        lifespan=lifespan,
    )
    app.state.content = content
    app.state.auth = authenticator
    app.state.opener = opener
    return app


class RegistryOpener:
    """Opens the registry of an app made without one, once, and closes it.

    Concurrent callers of :meth:`open` share one attempt; after a failure the next call tries
    again. An open that is not the lifespan's also starts a task that closes the registry when
    it is cancelled: ``asyncio.run()`` and uvicorn cancel every remaining task as they stop,
    which is the only shutdown signal a mounted app gets.
    """

    def __init__(
        self, options: Mapping[str, Any], *, content: Content, auth: Authenticator
    ) -> None:
        self._options = dict(options)
        self._content = content
        self._auth = auth
        self._registry: AsyncRegistry | None = None
        self._opening: asyncio.Future[AsyncRegistry] | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def registry(self) -> AsyncRegistry | None:
        """The open registry, or ``None`` (not opened yet, or closed)."""
        return self._registry

    async def open(self, *, watch: bool = True) -> AsyncRegistry:
        """The registry, opened now if it is not open; ``watch``: close it when the event loop
        cancels its remaining tasks (for an app whose lifespan does not run)."""
        if self._registry is not None:
            return self._registry
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open(watch))
        # Shielded: a request that gives up (its client went away) leaves the open to the
        # others waiting for it.
        return await asyncio.shield(self._opening)

    async def _open(self, watch: bool) -> AsyncRegistry:
        try:
            registry = await AsyncRegistry.open(**self._options)
            try:
                _bind(self._auth, registry)
            except BaseException:
                await registry.close()
                raise
            self._content.attach(registry)
            self._registry = registry
            if watch:
                loop = asyncio.get_running_loop()
                self._watcher = loop.create_task(self._close_when_cancelled())
            return registry
        finally:
            self._opening = None

    async def _close_when_cancelled(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        except asyncio.CancelledError:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the registry if it is open; the next :meth:`open` opens a new one."""
        registry, self._registry = self._registry, None
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        if registry is None:
            return
        self._content.attach(None)
        await registry.close()


class _Embedded:
    """ASGI middleware of the app's own concerns as a guest: it opens the registry before the
    first request needs it, and warns (once) when mounted under a prefix clients ignore."""

    def __init__(self, app: ASGIApp, opener: RegistryOpener | None) -> None:
        self.app = app
        self.opener = opener
        self._warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")
        if root_path and not self._warned:
            self._warned = True
            log.warning(
                "the registry app is mounted under %r, but registry clients (docker, podman, "
                "skopeo) always ask for /v2/ and /token at the host's root and will not find "
                'it: mount it at "/" (Mount("/", app=create_app(...)) after the service\'s own '
                "routes; docs/embedding.md)",
                root_path,
            )
        if self.opener is not None and self.opener.registry is None:
            try:
                await self.opener.open()
            except Exception as exc:
                from ocimirror.upstream.redact import redact_text

                # A database URL in the message keeps its user, never its password.
                log.error(
                    "could not open the registry (the next request tries again): %s: %s",
                    type(exc).__name__,
                    redact_text(str(exc)),
                )
                response = error_response(
                    "UNAVAILABLE",
                    "the registry could not be opened (the server logged why); try again",
                    status=503,
                    head=scope["method"] == "HEAD",
                    headers={"retry-after": "1"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _default_auth() -> Authenticator:
    """Token auth from the environment, or none when ``OCIMIRROR_AUTH=none``."""
    mode = os.environ.get("OCIMIRROR_AUTH", "token").strip().lower()
    if mode in ("none", "off", "false", "0"):
        return OpenAccess()
    if mode != "token":
        raise ValueError(f"OCIMIRROR_AUTH must be 'token' or 'none', got {mode!r}")
    from ocimirror.server.auth import TokenAuth

    return TokenAuth.from_environment()


def _bind(auth: Authenticator, registry: AsyncRegistry) -> None:
    """Give an authenticator that reads the registry (users, distributions) the registry."""
    bind = getattr(auth, "bind", None)
    if bind is not None:
        bind(registry)
