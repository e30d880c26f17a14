"""Kept-alive connections shared by the registry clients of one event loop.

Every repository of a ``sync_all`` gets its own :class:`RegistryClient` (its own credentials,
tokens, rate limit and request counts), but repositories of one upstream need not each open
their own connections: a no-op re-sync of 40 repositories would otherwise open a connection
for almost every one of its 1,000 HEAD requests. :class:`SharedConnections` gives clients with
the same connection settings (TLS verification, CA, proxy) one HTTP client, whose pool keeps
connections per host.
"""

from __future__ import annotations

from typing import Any

import httpx

from ocimirror.upstream.client import ConnectionSettings, RegistryClient

__all__ = ["SharedConnections"]


class SharedConnections:
    """HTTP clients (and their connection pools) shared by registry clients; close it when
    the clients are done. Use it from one event loop."""

    def __init__(self) -> None:
        self._http: dict[tuple[bool, str | None, str | None], httpx.AsyncClient] = {}
        #: What the syncs of this loop learnt of each upstream, by (what, registry URL):
        #: whether it has the referrers API, the signature API extension.
        self.capabilities: dict[tuple[str, str], bool] = {}

    def client(self, settings: ConnectionSettings, **overrides: Any) -> RegistryClient:
        """A registry client for ``settings`` (as :meth:`RegistryClient.from_remote`) whose
        connections are shared with every other client of the same TLS and proxy settings.
        Closing it leaves the shared connections open."""
        key = (settings.tls_validation, settings.ca_cert, settings.proxy_url)
        http = self._http.get(key)
        if http is None:
            http = RegistryClient.from_remote(settings, **overrides).new_http_client()
            self._http[key] = http
        return RegistryClient.from_remote(settings, client=http, **overrides)

    async def aclose(self) -> None:
        """Close every shared HTTP client."""
        clients, self._http = list(self._http.values()), {}
        for http in clients:
            await http.aclose()
