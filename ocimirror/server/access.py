"""Who may do what: the seam between the registry API and an authenticator.

The API asks two questions of every request, in this order:

1. :meth:`Authenticator.identify`: who is calling? From the request's ``Authorization``
   header; no header is the anonymous caller, a credential that does not verify is refused
   (:class:`~ocimirror.errors.Unauthorized`). This runs on every request, so it must stay off
   slow paths (a token authenticator verifies a JWT, cached; it never hashes a password).
2. :meth:`Authenticator.check`: may that caller do ``actions`` on the repository ``name``?
   Refused with :class:`~ocimirror.errors.Unauthorized` carrying the challenge that tells a
   client where to get a token with that scope (Docker's token spec).

:class:`OpenAccess` lets everyone do everything (``ocimirror serve --no-auth``); the default
is :class:`ocimirror.server.auth.TokenAuth`. A service that mounts the app may pass its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol

import attrs
from starlette.requests import Request
from starlette.routing import BaseRoute

__all__ = ["PULL", "PUSH", "Access", "Action", "Authenticator", "Identity", "OpenAccess"]

#: What a request does to a repository (the Docker token spec's actions).
Action = Literal["pull", "push", "delete"]

PULL: frozenset[Action] = frozenset({"pull"})
PUSH: frozenset[Action] = frozenset({"pull", "push"})


@attrs.frozen(kw_only=True)
class Identity:
    """Who is calling, and what their credential grants."""

    #: The user's name; ``None`` for the anonymous caller.
    username: str | None = None
    #: Whether the user may do everything (then ``access`` is not consulted).
    admin: bool = False
    #: The repository actions the credential grants, by repository name.
    access: Mapping[str, frozenset[str]] = attrs.field(factory=dict)

    @property
    def anonymous(self) -> bool:
        """Whether no credential came with the request."""
        return self.username is None and not self.admin


@attrs.frozen(kw_only=True)
class Access:
    """What one request needs."""

    #: The repository name (a distribution's base path).
    name: str
    #: The actions it needs.
    actions: frozenset[Action]
    #: Whether ``name`` is a public distribution (anyone may pull it, with no token at all).
    public: bool = False


class Authenticator(Protocol):
    """Decides who a caller is and what they may do; see the module docstring."""

    def routes(self) -> Sequence[BaseRoute]:
        """Extra routes the app serves beside ``/v2/`` (a token endpoint)."""
        ...

    async def identify(self, request: Request) -> Identity:
        """The caller, from the request's credentials; raise
        :class:`~ocimirror.errors.Unauthorized` for a credential that does not verify."""
        ...

    def check(self, request: Request, identity: Identity, access: Access) -> None:
        """Return if ``identity`` may do ``access``; else raise
        :class:`~ocimirror.errors.Unauthorized` with the challenge for that scope (the request
        tells where the token endpoint is, and whether a token came with it)."""
        ...

    def check_login(self, request: Request, identity: Identity) -> None:
        """``GET /v2/``: return if the caller may use the API at all, else raise
        :class:`~ocimirror.errors.Unauthorized` with a challenge (how ``docker login`` learns
        where the token endpoint is)."""
        ...

    async def may_pull(self, identity: Identity, names: Iterable[tuple[str, bool]]) -> list[str]:
        """Which of ``(name, public)`` the caller may pull (the catalog shows only those)."""
        ...


class OpenAccess:
    """Everyone may do everything: for local development (``serve --no-auth``) or behind a
    proxy that authenticates."""

    def routes(self) -> Sequence[BaseRoute]:
        """No extra routes."""
        return ()

    async def identify(self, request: Request) -> Identity:
        """Everyone is an administrator."""
        return _EVERYONE

    def check(self, request: Request, identity: Identity, access: Access) -> None:
        """Always allowed."""

    def check_login(self, request: Request, identity: Identity) -> None:
        """Always allowed."""

    async def may_pull(self, identity: Identity, names: Iterable[tuple[str, bool]]) -> list[str]:
        """The public names: anyone may pull a private one by name, but with no identities
        there is no one to list it for, so it stays out of the catalog."""
        return [name for name, public in names if public]


_EVERYONE = Identity(username=None, admin=True)
