"""The registry API as an ASGI app: pull, push, content discovery and management, with token
authentication.

Serve it with granian (``ocimirror serve`` does), or with any ASGI server in factory mode::

    granian --interface asgi --factory ocimirror.asgi:create_app

Each worker process then opens its own registry (from ``OCIMIRROR_*`` variables or the home
directory) in the app's lifespan and closes it at shutdown. Or give it a registry you opened,
and mount it anywhere, for example inside a Starlette or FastAPI app::

    registry = await ocimirror.AsyncRegistry.open()
    app = Starlette(routes=[Mount("/registry", app=create_app(registry))])

Paths and ``Link`` headers then carry the mount prefix (the ASGI ``root_path``). A mounted app's
lifespan does not run, so a mounted app needs the registry given to it.

Who may do what is the ``auth`` argument's to decide (an
:class:`~ocimirror.server.access.Authenticator`). The default is Docker's token
authentication (:class:`~ocimirror.server.auth.TokenAuth`: users and grants from the registry,
tokens from ``/token``); :class:`~ocimirror.server.access.OpenAccess` lets everyone do
everything (``ocimirror serve --no-auth``, or ``OCIMIRROR_AUTH=none`` in factory mode). A
service that mounts the app can pass its own to plug in its identities.

The handlers live in :mod:`ocimirror.server`, one module per API concern.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from ocimirror.registry import AsyncRegistry
from ocimirror.server.access import Authenticator, OpenAccess
from ocimirror.server.bodies import CloseUnreadBodies
from ocimirror.server.content import Content
from ocimirror.server.errors import http_exception_response
from ocimirror.server.routing import RegistryAPI

__all__ = ["create_app"]

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
            closes it. Without one, the app's lifespan opens one from ``home``,
            ``database_url``, ``storage_url`` and ``storage_options`` (each defaulting to its
            ``OCIMIRROR_*`` variable, then to the home directory), and closes it at shutdown.
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
    if registry is not None:
        _bind(authenticator, registry)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if registry is not None:
            yield
            return
        opened = await AsyncRegistry.open(
            home=home,
            database_url=database_url,
            storage_url=storage_url,
            storage_options=storage_options,
        )
        content.attach(opened)
        _bind(authenticator, opened)
        try:
            yield
        finally:
            content.attach(None)
            await opened.close()

    app = Starlette(
        routes=[
            Route("/v2/", api.version, methods=["GET", "HEAD"]),
            # Every method: the API answers those a path does not take with an OCI error.
            Route("/v2/{path:path}", api.handle, methods=_EVERY_METHOD),
            Route("/extensions/v2/{path:path}", api.extension, methods=_EVERY_METHOD),
            *authenticator.routes(),
        ],
        exception_handlers={HTTPException: http_exception_response},
        middleware=[Middleware(CloseUnreadBodies)],
        lifespan=lifespan,
    )
    app.state.content = content
    app.state.auth = authenticator
    return app


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
