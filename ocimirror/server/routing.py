"""Which handler answers a ``/v2/...`` path.

Repository names contain ``/``, so the name cannot be one path parameter: the path *tail*
decides (``.../manifests/<reference>``, ``.../blobs/<digest>``, ``.../tags/list``) and the
name is everything before it. A name that breaks the OCI name rules cannot be a base path, so
it is answered ``404 NAME_UNKNOWN`` (with the rule it breaks) before any database read.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from ocimirror.core.reference import validate_repository_name
from ocimirror.errors import InvalidName, NotFound, OcimirrorError, UnknownEndpoint, Unsupported
from ocimirror.server.blobs import get_blob
from ocimirror.server.catalog import catalog
from ocimirror.server.content import Content
from ocimirror.server.errors import exception_response, unexpected_response
from ocimirror.server.manifests import get_manifest
from ocimirror.server.tags import tags_list

__all__ = ["RegistryAPI", "route_path"]

_ITEM = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)")
_TAGS = re.compile(r"/v2/(?P<name>.+)/tags/list")
_UPLOADS = re.compile(r"/v2/.+/blobs/uploads(?:/.*)?")

_READ = ("GET", "HEAD")
_ALLOW = {"allow": "GET, HEAD"}


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
    """The pull and content-discovery API under ``/v2/``; :meth:`handle` is the endpoint.

    Private distributions are served like public ones for now; token auth will check pulls of
    private names here, in :meth:`handle`, once their names are known.
    """

    def __init__(self, content: Content, *, redirect_blobs: bool = False) -> None:
        self.content = content
        self.redirect_blobs = redirect_blobs

    async def handle(self, request: Request) -> Response:
        """Answer one request; every error becomes an OCI error response."""
        head = request.method == "HEAD"
        try:
            return await self._dispatch(request, route_path(request))
        except OcimirrorError as exc:
            return exception_response(exc, head=head)
        except Exception as exc:
            return unexpected_response(exc, request)

    async def _dispatch(self, request: Request, path: str) -> Response:
        method = request.method
        match = _ITEM.fullmatch(path)
        if match is not None and not _UPLOADS.fullmatch(path):
            if method not in _READ:
                return _unsupported(request, "this registry is read-only")
            name, kind, reference = match.group("name", "kind", "reference")
            _check_name(name)
            # Token auth (later) goes here, and before the tag list below: a private
            # distribution (``Served.private``) will need a pull token, else 401 + challenge.
            if kind == "manifests":
                return await get_manifest(self.content, request, name, reference)
            return await get_blob(
                self.content, request, name, reference, redirect=self.redirect_blobs
            )
        match = _TAGS.fullmatch(path)
        if match is not None:
            if method not in _READ:
                return _unsupported(request, "tags are listed with GET")
            name = match.group("name")
            _check_name(name)
            return await tags_list(self.content, request, name)
        if path == "/v2/_catalog":
            if method not in _READ:
                return _unsupported(request, "the catalog is listed with GET")
            return await catalog(self.content, request)
        if _UPLOADS.fullmatch(path):
            return _unsupported(request, "this registry is read-only: pushing is not supported")
        return exception_response(
            UnknownEndpoint(f"no registry API endpoint at {path[:200]!r}"),
            head=method == "HEAD",
        )


def _unsupported(request: Request, message: str) -> Response:
    return exception_response(
        Unsupported(f"{request.method} is not supported here: {message}"),
        head=request.method == "HEAD",
        headers=_ALLOW,
    )
