"""Which handler answers a ``/v2/...`` path, and whether the caller may have it answered.

Repository names contain ``/``, so the name cannot be one path parameter: the path *tail*
decides (``.../manifests/<reference>``, ``.../blobs/<digest>``, ``.../blobs/uploads/<id>``,
``.../referrers/<digest>``, ``.../tags/list``) and the name is everything before it. A name
that breaks the OCI name rules cannot be a base path, so it is answered ``404 NAME_UNKNOWN``
(with the rule it breaks) before any database read.

Every request is first identified and checked by the app's
:class:`~ocimirror.server.access.Authenticator`: pulls need ``pull`` on the name (anyone may
pull a public distribution), pushes ``pull,push``, deletes ``delete``.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from ocimirror.core.reference import validate_repository_name
from ocimirror.errors import (
    InvalidName,
    NotFound,
    OcimirrorError,
    Unauthorized,
    UnknownEndpoint,
    Unsupported,
    UploadNotFound,
)
from ocimirror.pullthrough import parse_reference
from ocimirror.push import Push
from ocimirror.server.access import PULL, PUSH, Access, Action, Authenticator, Identity, OpenAccess
from ocimirror.server.base import version_check
from ocimirror.server.blobs import delete_blob, get_blob
from ocimirror.server.catalog import catalog
from ocimirror.server.content import Content
from ocimirror.server.errors import exception_response, unexpected_response
from ocimirror.server.manifests import delete_manifest, get_manifest, put_manifest
from ocimirror.server.referrers import referrers
from ocimirror.server.signatures import get_signatures, put_signatures
from ocimirror.server.tags import tags_list
from ocimirror.server.uploads import (
    cancel_upload,
    finish_upload,
    patch_upload,
    query,
    start_upload,
    upload_status,
)

__all__ = ["RegistryAPI", "route_path"]

_UPLOAD = re.compile(r"/v2/(?P<name>.+)/blobs/uploads(?:/(?P<upload>[^/]*))?")
_ITEM = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|referrers)/(?P<reference>[^/]+)")
_TAGS = re.compile(r"/v2/(?P<name>.+)/tags/list")
_SIGNATURES = re.compile(r"/extensions/v2/(?P<name>.+)/signatures/(?P<reference>[^/]+)")
#: What an upload ID this registry made looks like (base64url, as :func:`new_upload_id`).
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

_READ = ("GET", "HEAD")
_DELETE: frozenset[Action] = frozenset({"delete"})
_ALLOWED = {
    "manifests": "GET, HEAD, PUT, DELETE",
    "blobs": "GET, HEAD, DELETE",
    "referrers": "GET, HEAD",
    "tags": "GET, HEAD",
    "catalog": "GET, HEAD",
    "start": "POST",
    "upload": "GET, PATCH, PUT, DELETE",
    "version": "GET, HEAD",
    "signatures": "GET, HEAD, PUT",
}


def route_path(request: Request) -> str:
    """The request's path below the app's mount point (``root_path``)."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def _check_name(name: str) -> None:
    try:
        validate_repository_name(name)
    except InvalidName as exc:
        raise NotFound(
            f"{exc.message}; so no repository has that name", detail={"name": name[:255]}
        ) from None


class RegistryAPI:
    """The registry API under ``/v2/``: :meth:`handle` is the endpoint, :meth:`version` the
    ``/v2/`` check.

    Args:
        content: The per-process read caches (and the registry behind them).
        auth: Who may do what; :class:`~ocimirror.server.access.OpenAccess` lets everyone.
        redirect_blobs: Answer blob GETs with a redirect to a presigned URL when the store
            can sign them.
    """

    def __init__(
        self,
        content: Content,
        *,
        auth: Authenticator | None = None,
        redirect_blobs: bool = False,
    ) -> None:
        self.content = content
        self.auth: Authenticator = auth or OpenAccess()
        self.redirect_blobs = redirect_blobs

    @property
    def push(self) -> Push:
        """The push service of the registry being served."""
        return self.content.registry.push

    async def version(self, request: Request) -> Response:
        """``GET /v2/``: 200 for a caller who may use the API, else 401 with a challenge."""
        try:
            identity = await self.auth.identify(request)
            self.auth.check_login(request, identity)
        except OcimirrorError as exc:
            # Clients read the API version from the challenge too (docker login does).
            return exception_response(
                exc,
                head=request.method == "HEAD",
                headers={
                    "docker-distribution-api-version": "registry/2.0",
                    # containers-image reads this from the unauthenticated ping's 401.
                    "x-registry-supports-signatures": "1",
                },
            )
        return await version_check(request)

    async def handle(self, request: Request) -> Response:
        """Answer one request; every error becomes an OCI error response."""
        head = request.method == "HEAD"
        try:
            return await self._dispatch(request, route_path(request))
        except OcimirrorError as exc:
            return exception_response(exc, head=head)
        except Exception as exc:
            return unexpected_response(exc, request)

    async def extension(self, request: Request) -> Response:
        """``/extensions/v2/<name>/signatures/<digest>``: the Docker signature API extension
        (:mod:`ocimirror.server.signatures`); GET needs pull access, PUT push access."""
        head = request.method == "HEAD"
        try:
            match = _SIGNATURES.fullmatch(route_path(request))
            if match is None:
                raise UnknownEndpoint(f"no registry API endpoint at {route_path(request)[:200]!r}")
            name, reference = match.group("name", "reference")
            _check_name(name)
            if request.method not in _ALLOWED["signatures"].split(", "):
                return _unsupported(request, "signatures")
            identity = await self.auth.identify(request)
            if request.method in _READ:
                await self._allow_pull(request, identity, name)
                return await get_signatures(self.content, request, name, reference)
            self.auth.check(request, identity, Access(name=name, actions=PUSH))
            response = await put_signatures(self.push, request, name, reference)
            self.content.forget(name)
            return response
        except OcimirrorError as exc:
            return exception_response(exc, head=head)
        except Exception as exc:
            return unexpected_response(exc, request)

    async def _allow_pull(self, request: Request, identity: Identity, name: str) -> None:
        """Pull needs ``pull`` on the name, unless the name is a public distribution."""
        try:
            self.auth.check(request, identity, Access(name=name, actions=PULL))
        except Unauthorized:
            if not await self._public(name):
                raise
            self.auth.check(request, identity, Access(name=name, actions=PULL, public=True))

    async def _public(self, name: str) -> bool:
        try:
            return not (await self.content.resolve(name)).private
        except NotFound:
            # A name a public pull-through cache serves may be pulled (and so fill it) by
            # anyone, before its repository exists.
            cached = await self.content.registry.pull_through.match(name)
            return cached is not None and not cached.distribution.private

    async def _through_cache(self, name: str, reference: str) -> None:
        """For a name a pull-through cache serves: bring the manifest up to date (making the
        repository on the first pull), before it is answered from the cache."""
        pull_through = self.content.registry.pull_through
        cached = await pull_through.match(name)
        if cached is None:
            return
        reference = parse_reference(reference)
        if await pull_through.refresh(cached, reference):
            # A new version: what this process cached of the name is out of date. (A pull
            # that changed nothing keeps it; a miss re-reads the name anyway.)
            self.content.forget(name)
        retention = cached.distribution.max_size or cached.distribution.max_age
        if retention and ":" not in reference:
            await pull_through.pulled(name, reference)

    async def _may_pull(self, request: Request, identity: Identity, name: str) -> bool:
        try:
            _check_name(name)
            await self._allow_pull(request, identity, name)
        except (Unauthorized, NotFound):
            return False
        return True

    async def _dispatch(self, request: Request, path: str) -> Response:
        method = request.method
        if path in ("/v2", "/v2/"):
            return _unsupported(request, "version")
        identity = await self.auth.identify(request)
        match = _UPLOAD.fullmatch(path)
        if match is not None:
            name, upload = match.group("name", "upload")
            _check_name(name)
            kind = "start" if not upload else "upload"
            if method not in _ALLOWED[kind].split(", "):
                return _unsupported(request, kind)
            self.auth.check(request, identity, Access(name=name, actions=PUSH))
            if not upload:
                source = query(request).get("from")
                may_mount = source is not None and await self._may_pull(request, identity, source)
                response = await start_upload(self.push, request, name, may_mount=may_mount)
            else:
                if not _UPLOAD_ID.fullmatch(upload):
                    raise UploadNotFound(f"no blob upload {upload[:80]!r} is in progress")
                handler = {
                    "PATCH": patch_upload,
                    "PUT": finish_upload,
                    "GET": upload_status,
                    "DELETE": cancel_upload,
                }[method]
                response = await handler(self.push, request, name, upload)
            if response.status_code == 201:
                self.content.forget(name)
            return response
        match = _ITEM.fullmatch(path)
        if match is not None:
            name, kind, reference = match.group("name", "kind", "reference")
            _check_name(name)
            if method not in _ALLOWED[kind].split(", "):
                return _unsupported(request, kind)
            if method in _READ:
                await self._allow_pull(request, identity, name)
                if kind == "manifests":
                    await self._through_cache(name, reference)
                    return await get_manifest(self.content, request, name, reference)
                if kind == "referrers":
                    return await referrers(self.content, request, name, reference)
                return await get_blob(
                    self.content, request, name, reference, redirect=self.redirect_blobs
                )
            if method == "PUT":
                self.auth.check(request, identity, Access(name=name, actions=PUSH))
                response = await put_manifest(self.push, request, name, reference)
            else:
                self.auth.check(request, identity, Access(name=name, actions=_DELETE))
                remove = delete_manifest if kind == "manifests" else delete_blob
                response = await remove(self.push, request, name, reference)
            self.content.forget(name)
            return response
        match = _TAGS.fullmatch(path)
        if match is not None:
            name = match.group("name")
            _check_name(name)
            if method not in _READ:
                return _unsupported(request, "tags")
            await self._allow_pull(request, identity, name)
            return await tags_list(self.content, request, name)
        if path == "/v2/_catalog":
            if method not in _READ:
                return _unsupported(request, "catalog")
            return await catalog(
                self.content, request, lambda names: self.auth.may_pull(identity, names)
            )
        return exception_response(
            UnknownEndpoint(f"no registry API endpoint at {path[:200]!r}"),
            head=method == "HEAD",
        )


def _unsupported(request: Request, kind: str) -> Response:
    allowed = _ALLOWED[kind]
    return exception_response(
        Unsupported(f"{request.method} is not supported here; this path takes {allowed}"),
        head=request.method == "HEAD",
        headers={"allow": allowed},
    )
