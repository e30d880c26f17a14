"""The registry API's handlers, one module per API concern; :mod:`ocimirror.asgi` assembles
them into an app.

* :mod:`~ocimirror.server.base`: ``GET /v2/``, the version check;
* :mod:`~ocimirror.server.catalog`: ``GET /v2/_catalog``;
* :mod:`~ocimirror.server.tags`: ``GET /v2/<name>/tags/list``;
* :mod:`~ocimirror.server.manifests`: ``GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>``;
* :mod:`~ocimirror.server.blobs`: ``GET|HEAD|DELETE /v2/<name>/blobs/<digest>``;
* :mod:`~ocimirror.server.uploads`: ``/v2/<name>/blobs/uploads/...``, blob pushes;
* :mod:`~ocimirror.server.referrers`: ``GET /v2/<name>/referrers/<digest>``;
* :mod:`~ocimirror.server.routing`: which of them answers a path (names contain ``/``), after
  the authenticator says the caller may;
* :mod:`~ocimirror.server.access`: the authenticator seam (``Identity``, ``Access``,
  ``Authenticator``, ``OpenAccess``);
* :mod:`~ocimirror.server.auth`: Docker token authentication and ``/token``;
* :mod:`~ocimirror.server.keys`: the token signing key;
* :mod:`~ocimirror.server.content`: name -> served version, and the per-process caches;
* :mod:`~ocimirror.server.accept`: ``Accept`` negotiation;
* :mod:`~ocimirror.server.references`: a path's ``<reference>``, or the endpoint's error;
* :mod:`~ocimirror.server.pagination`: ``n``, ``last`` and ``Link``;
* :mod:`~ocimirror.server.errors`: OCI error bodies;
* :mod:`~ocimirror.server.bodies`: ``Connection: close`` on answers that left a body unread;
* :mod:`~ocimirror.server.serve`: running the app with granian.
"""

from __future__ import annotations

from ocimirror.server.content import Content, Served
from ocimirror.server.routing import RegistryAPI

__all__ = ["Content", "RegistryAPI", "Served"]
