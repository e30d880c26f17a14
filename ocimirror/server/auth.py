"""Docker registry token authentication: the token endpoint, and Bearer tokens on every request.

The dance (Docker's token spec): a request without the access it needs is answered ``401`` with
``WWW-Authenticate: Bearer realm="<server>/token",service="ocimirror",scope="repository:<name>:
pull"``; the client asks ``GET /token?service=&scope=`` (with Basic credentials, or none to be
anonymous), receives a short-lived JWT signed ES256 that lists what it may do, and repeats the
request with ``Authorization: Bearer <token>``. ``POST /token`` takes OAuth2's password grant.

Who may do what: an admin everything; a user what their grants give
(:func:`ocimirror.users.allowed_actions`) and ``pull`` on public distributions; the anonymous
caller ``pull`` on public distributions, with or without a token. A ``push`` grant on a pattern
also covers names that have no distribution yet (a push there creates one).

Passwords are verified only at ``/token``. A registry request verifies the token's signature
once: verified tokens are kept in a bounded LRU until they expire, so a client reusing its
token costs a dict lookup. A token stays valid until it expires (``ttl``, five minutes), even
if the user loses a grant meanwhile.

Every process must sign with one key: see :mod:`ocimirror.server.keys`. Several hosts behind one
name need one key file between them (``OCIMIRROR_TOKEN_KEY``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ocimirror.backends.metadata import UserRecord
from ocimirror.core.reference import validate_repository_name
from ocimirror.errors import (
    DistributionNotFound,
    InvalidError,
    OcimirrorError,
    Unauthorized,
    UserNotFound,
)
from ocimirror.server.access import PULL, Access, Identity
from ocimirror.server.errors import exception_response, unexpected_response
from ocimirror.server.keys import KEY_FILE, generate_key, key_id, load_key, load_or_create_key
from ocimirror.users import ACTIONS, allowed_actions

if TYPE_CHECKING:
    from ocimirror.registry import AsyncRegistry

__all__ = ["TokenAuth", "parse_scope"]

log = logging.getLogger("ocimirror.server")

_ALGORITHM = "ES256"
_ANONYMOUS = Identity()
_BASIC = 'Basic realm="ocimirror"'
# Actions in the order Docker writes them in a scope.
_ORDER = ("pull", "push", "delete")
# Bounds on what one token request may ask for.
_MAX_SCOPES = 64
_MAX_FORM = 64 * 1024


def parse_scope(text: str) -> tuple[str, frozenset[str]] | None:
    """``repository:<name>:<action>[,<action>...]`` as (name, actions); None for a scope of
    another resource type (``registry:catalog:*``) or a name that cannot be a repository."""
    kind, _, rest = text.partition(":")
    name, _, actions = rest.rpartition(":")
    if kind.partition("(")[0] != "repository" or not name:
        return None
    try:
        validate_repository_name(name)
    except InvalidError:
        return None
    return name, frozenset(a for a in actions.split(",") if a)


class TokenAuth:
    """The token authenticator (the default of ``ocimirror serve``): an
    :class:`~ocimirror.server.access.Authenticator` that serves ``/token``.

    Args:
        key: The signing key: a PEM file's path, or the PEM itself (bytes, or text beginning
            ``-----BEGIN``); an EC P-256 private key. Default: ``token-key.pem`` in the
            registry's home, made on first start (an ephemeral key when the registry has no
            home).
        service: The token audience, and the ``service`` of challenges.
        issuer: The token issuer.
        ttl: Seconds a token is valid.
        realm: The token endpoint's URL in challenges; default: this server's ``/token``, from
            each request (scheme, host and mount point).
        leeway: Seconds of clock difference tolerated on ``exp`` and ``nbf``.
        cache_size: How many verified tokens each process remembers.
        clock: Seconds since the epoch (tests move it).

    Nothing is read until :meth:`bind`.
    """

    def __init__(
        self,
        *,
        key: str | bytes | os.PathLike[str] | None = None,
        service: str = "ocimirror",
        issuer: str = "ocimirror",
        ttl: int = 300,
        realm: str | None = None,
        leeway: float = 10.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0 or cache_size <= 0 or leeway < 0:
            raise InvalidError("ttl and cache_size must be positive, leeway not negative")
        for label, value in (("service", service), ("issuer", issuer), ("realm", realm or "")):
            if '"' in value or any(ord(c) < 32 for c in value):
                raise InvalidError(f"{label} may not hold quotes or control characters")
        self._key_source = key
        self.service = service
        self.issuer = issuer
        self.ttl = ttl
        self.realm = realm
        self.leeway = leeway
        self._cache_size = cache_size
        self._clock = clock
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._public_key: ec.EllipticCurvePublicKey | None = None
        self._kid = ""
        self._registry: AsyncRegistry | None = None
        self._verified: OrderedDict[str, tuple[float, Identity]] = OrderedDict()

    def __repr__(self) -> str:
        return f"TokenAuth(service={self.service!r}, issuer={self.issuer!r}, ttl={self.ttl})"

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **options: Any
    ) -> TokenAuth:
        """A TokenAuth configured by the environment (what ``ocimirror serve`` sets for its
        workers): ``OCIMIRROR_TOKEN_KEY`` names the key file, ``OCIMIRROR_TOKEN_REALM`` the
        token endpoint's public URL (behind a proxy), ``OCIMIRROR_TOKEN_SERVICE`` the service
        name. Options given here win."""
        env = os.environ if environ is None else environ
        if env.get("OCIMIRROR_TOKEN_KEY") and "key" not in options:
            options["key"] = Path(env["OCIMIRROR_TOKEN_KEY"]).expanduser()
        if env.get("OCIMIRROR_TOKEN_REALM") and "realm" not in options:
            options["realm"] = env["OCIMIRROR_TOKEN_REALM"]
        if env.get("OCIMIRROR_TOKEN_SERVICE") and "service" not in options:
            options["service"] = env["OCIMIRROR_TOKEN_SERVICE"]
        return cls(**options)

    # -- setup ----------------------------------------------------------------------------------

    def bind(self, registry: AsyncRegistry) -> None:
        """Use ``registry`` for users and distributions, and load (or make) the signing key.

        Synchronous (a small file, once), so an app can bind as it is made as well as in its
        lifespan; binding again keeps the key.
        """
        self._registry = registry
        if self._key is None:
            key = self._load_key(registry)
            self._key, self._public_key = key, key.public_key()
            self._kid = key_id(self._public_key)

    def _load_key(self, registry: AsyncRegistry) -> ec.EllipticCurvePrivateKey:
        source = self._key_source
        if isinstance(source, bytes):
            return load_key(source, where="the token signing key")
        if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
            return load_key(source.encode(), where="the token signing key")
        if source is not None:
            path = Path(source)
            try:
                pem = path.read_bytes()
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"the token signing key {str(path)!r} does not exist"
                ) from None
            return load_key(pem, where=f"token signing key {str(path)!r}")
        if registry.config is None:
            log.warning("no token signing key and no home: tokens last until this process ends")
            return generate_key()
        return load_or_create_key(Path(registry.config.home) / KEY_FILE)

    def routes(self) -> Sequence[BaseRoute]:
        """``GET|POST /token``."""
        return [Route("/token", self._endpoint, methods=["GET", "POST"])]

    # -- tokens ---------------------------------------------------------------------------------

    def issue_token(
        self,
        *,
        username: str | None = None,
        admin: bool = False,
        access: Mapping[str, Iterable[str]] | None = None,
    ) -> str:
        """A signed token for ``username`` (None: anonymous) granting ``access`` (name ->
        actions), valid for ``ttl`` seconds; no check is made here."""
        return self._issue(username, admin, access or {}, int(self._clock()))

    def _issue(
        self, username: str | None, admin: bool, access: Mapping[str, Iterable[str]], now: int
    ) -> str:
        if self._key is None:
            raise OcimirrorError("the token service has no key yet: bind() it to a registry")
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": username or "",
            "aud": self.service,
            "exp": now + self.ttl,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [
                {"type": "repository", "name": name, "actions": _ordered(actions)}
                for name, actions in sorted(access.items())
                if actions
            ],
        }
        if admin:
            claims["admin"] = True
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM, headers={"kid": self._kid})

    def _verify(self, token: str) -> tuple[float, Identity]:
        """(cache until, identity) of a token whose signature, issuer, audience and times hold."""
        if self._public_key is None:
            raise OcimirrorError("the token service has no key yet: bind() it to a registry")
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=[_ALGORITHM],
                audience=self.service,
                issuer=self.issuer,
                # Times are checked below, on this object's clock.
                options={
                    "require": ["exp", "iat", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
            exp, nbf = claims["exp"], claims.get("nbf", claims["iat"])
            if not all(isinstance(t, int | float) for t in (exp, nbf)):
                raise jwt.InvalidTokenError("exp and nbf must be numbers")
            now = self._clock()
            if now >= exp + self.leeway:
                raise jwt.ExpiredSignatureError("the token has expired")
            if now < nbf - self.leeway:
                raise jwt.ImmatureSignatureError("the token is not valid yet")
            identity = Identity(
                username=claims.get("sub") or None,
                admin=claims.get("admin") is True,
                access=_access(claims.get("access")),
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {exc}") from None
        return exp + self.leeway, identity

    # -- the Authenticator protocol -------------------------------------------------------------

    async def identify(self, request: Request) -> Identity:
        """The caller: anonymous without ``Authorization``, else from a verified Bearer token."""
        header = request.headers.get("authorization")
        if header is None:
            return _ANONYMOUS
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "this registry takes Bearer tokens: get one from its token endpoint",
                challenge=self._challenge(request),
            )
        now = self._clock()
        cached = self._verified.get(token)
        if cached is not None:
            if now < cached[0]:
                self._verified.move_to_end(token)
                return cached[1]
            del self._verified[token]
        try:
            until, identity = self._verify(token)
        except Unauthorized as exc:
            exc.challenge = self._challenge(request, error="invalid_token")
            raise
        self._verified[token] = (until, identity)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return identity

    def check(self, request: Request, identity: Identity, access: Access) -> None:
        """Allow an admin, a pull of a public name, or what the token grants; else 401 with
        the challenge for the scope needed."""
        if identity.admin or (access.public and access.actions <= PULL):
            return
        if access.actions <= identity.access.get(access.name, frozenset()):
            return
        token = "authorization" in request.headers
        actions = _ordered(access.actions)
        raise Unauthorized(
            "the token does not grant this" if token else "authentication required",
            challenge=self._challenge(
                request,
                scope=f"repository:{access.name}:{','.join(actions)}",
                error="insufficient_scope" if token else None,
            ),
            detail=[{"Type": "repository", "Name": access.name, "Action": a} for a in actions],
        )

    def check_login(self, request: Request, identity: Identity) -> None:
        """``GET /v2/``: any verified token will do; none is answered with the challenge."""
        if not identity.anonymous or "authorization" in request.headers:
            return
        raise Unauthorized("authentication required", challenge=self._challenge(request))

    async def may_pull(self, identity: Identity, names: Iterable[tuple[str, bool]]) -> list[str]:
        """Public names, names the token grants pull on, and names the user's grants cover."""
        if identity.admin:
            return [name for name, _ in names]
        user = await self._user(identity.username)
        if user is not None and user.admin:
            return [name for name, _ in names]
        return [
            name
            for name, public in names
            if public
            or "pull" in identity.access.get(name, ())
            or "pull" in allowed_actions(user, name)
        ]

    def realm_of(self, request: Request) -> str:
        """The token endpoint's URL: ``realm``, else this server's ``/token`` as the request
        reached it."""
        if self.realm:
            return self.realm
        # From the scope directly: building ``request.url`` costs more than the whole check.
        scope = request.scope
        scheme = scope.get("scheme", "http")
        host = request.headers.get("host")
        if not host:
            server = scope.get("server") or ("localhost", None)
            default = {"http": 80, "https": 443}.get(scheme)
            host = server[0] if server[1] in (None, default) else f"{server[0]}:{server[1]}"
        realm = f"{scheme}://{host}{scope.get('root_path', '')}/token"
        return realm.replace('"', "%22")

    def _challenge(
        self, request: Request, *, scope: str | None = None, error: str | None = None
    ) -> str:
        parts = [f'Bearer realm="{self.realm_of(request)}"', f'service="{self.service}"']
        if scope is not None:
            parts.append(f'scope="{scope}"')
        if error is not None:
            parts.append(f'error="{error}"')
        return ",".join(parts)

    # -- the token endpoint ---------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        try:
            if request.method == "POST":
                return await self._oauth(request)
            return await self._token(request)
        except OcimirrorError as exc:  # an Unauthorized carries its challenge along
            return exception_response(exc, head=request.method == "HEAD")
        except Exception as exc:
            return unexpected_response(exc, request)

    async def _token(self, request: Request) -> Response:
        """``GET /token?service=&scope=...``, with Basic credentials or none."""
        params = request.query_params
        self._check_service(params.get("service"))
        user = await self._basic_login(request.headers.get("authorization"))
        access = await self._grant(user, params.getlist("scope"))
        now = int(self._clock())
        token = self._issue(user.username if user else None, bool(user and user.admin), access, now)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": self.ttl,
            "issued_at": _rfc3339(now),
        }
        return _json(200, body)

    async def _oauth(self, request: Request) -> Response:
        """``POST /token``: OAuth2's password grant (a form); no refresh tokens."""
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > _MAX_FORM:
            return _oauth_error("invalid_request", "the form is too large")
        raw = await request.body()
        if len(raw) > _MAX_FORM:
            return _oauth_error("invalid_request", "the form is too large")
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        grant_type = form.get("grant_type")
        if grant_type != "password":
            return _oauth_error(
                "unsupported_grant_type", "this token service takes grant_type=password only"
            )
        self._check_service(form.get("service"))
        username, password = form.get("username"), form.get("password")
        if not username or password is None:
            return _oauth_error("invalid_request", "the password grant needs username, password")
        user = await self._login(username, password)
        scopes = form.get("scope", "").split()
        access = await self._grant(user, scopes)
        now = int(self._clock())
        token = self._issue(user.username, user.admin, access, now)
        granted = [f"repository:{n}:{','.join(_ordered(a))}" for n, a in sorted(access.items())]
        body = {
            "access_token": token,
            "token": token,
            "token_type": "Bearer",
            "scope": " ".join(granted),
            "expires_in": self.ttl,
            "issued_at": _rfc3339(now),
        }
        return _json(200, body)

    def _check_service(self, service: str | None) -> None:
        if service is not None and service != self.service:
            raise InvalidError(
                f"this token service is {self.service!r}, not {service[:100]!r}",
                detail={"service": self.service},
            )

    async def _basic_login(self, header: str | None) -> UserRecord | None:
        """The user of Basic credentials; None without any (anonymous)."""
        if header is None:
            return None
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthorized("the token endpoint takes Basic credentials", challenge=_BASIC)
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials", challenge=_BASIC) from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise Unauthorized("malformed Basic credentials", challenge=_BASIC)
        if not username and not password:
            return None  # some clients send empty credentials to mean anonymous
        return await self._login(username, password)

    async def _login(self, username: str, password: str) -> UserRecord:
        user = await self._bound().authenticate(username, password)
        if user is None:
            raise Unauthorized("wrong username or password", challenge=_BASIC)
        return user

    async def _grant(self, user: UserRecord | None, scopes: list[str]) -> dict[str, set[str]]:
        """What of the requested scopes the caller gets: name -> actions."""
        wanted: dict[str, set[str]] = {}
        for scope in (s for param in scopes for s in param.split()):
            parsed = parse_scope(scope)
            if parsed is not None:
                wanted.setdefault(parsed[0], set()).update(parsed[1])
        granted: dict[str, set[str]] = {}
        for name, actions in list(wanted.items())[:_MAX_SCOPES]:
            allowed = await self._allowed(user, name)
            given = set(allowed) if "*" in actions else actions & allowed
            if given:
                granted[name] = given
        log.debug(
            "token for %s: %s",
            user.username if user else "the anonymous caller",
            {name: _ordered(actions) for name, actions in granted.items()},
        )
        return granted

    async def _allowed(self, user: UserRecord | None, name: str) -> frozenset[str]:
        if user is not None and user.admin:
            return ACTIONS
        actions = allowed_actions(user, name)
        if "pull" not in actions and await self._public(name):
            actions |= PULL
        return actions

    async def _public(self, name: str) -> bool:
        registry = self._bound()
        try:
            distribution = await registry.metadata.get_distribution(base_path=name)
        except DistributionNotFound:
            # A public pull-through cache serves the name before its repository exists.
            cached = await registry.pull_through.match(name)
            return cached is not None and not cached.distribution.private
        return not distribution.private

    async def _user(self, username: str | None) -> UserRecord | None:
        if username is None:
            return None
        try:
            return await self._bound().user(username)
        except UserNotFound:
            return None

    def _bound(self) -> AsyncRegistry:
        if self._registry is None:
            raise OcimirrorError("the token service is not bound to a registry")
        return self._registry


def _access(claim: Any) -> dict[str, frozenset[str]]:
    """The ``access`` claim (Docker's format) as name -> actions, repositories only."""
    if claim is None:
        return {}
    if not isinstance(claim, list):
        raise jwt.InvalidTokenError("the access claim is not a list")
    access: dict[str, frozenset[str]] = {}
    for entry in claim:
        if not isinstance(entry, dict) or entry.get("type") != "repository":
            continue
        name, actions = entry.get("name"), entry.get("actions")
        if isinstance(name, str) and isinstance(actions, list):
            mine = frozenset(a for a in actions if isinstance(a, str))
            access[name] = access.get(name, frozenset()) | mine
    return access


def _ordered(actions: Iterable[str]) -> list[str]:
    given = set(actions)
    return [a for a in _ORDER if a in given] + sorted(given.difference(_ORDER))


def _rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(status: int, body: Mapping[str, Any]) -> Response:
    # Tokens are credentials: no cache may keep them.
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers={"content-type": "application/json", "cache-control": "no-store"},
    )


def _oauth_error(error: str, description: str) -> Response:
    return _json(400, {"error": error, "error_description": description})
