"""Token authentication: Docker's token dance, who gets what, and tokens that must not pass.

The first half drives the whole app (``create_app(registry, auth=TokenAuth(...))``) over each
metadata backend; the second half holds single tokens against one :class:`TokenAuth`, with no
database. Passwords are hashed with argon2's cheapest parameters here (``tests/test_users.py``
checks the real ones).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlencode

import jwt
import pytest
from argon2 import PasswordHasher, profiles
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fixtures.postgres import POSTGRES_URL, _admin
from server_harness import IMAGES, Harness, oci_error, open_harness, populate
from starlette.requests import Request

import ocimirror.users
from ocimirror import AsyncRegistry
from ocimirror.errors import InvalidError, Unauthorized
from ocimirror.server.access import PULL, PUSH, Access, Identity
from ocimirror.server.auth import TokenAuth, parse_scope
from ocimirror.server.keys import KEY_FILE, key_id, load_or_create_key

SECRET = "correct horse battery staple"
WRONG = "Tr0ub4dor&3"
ALICE = ("alice", SECRET)
BOB = ("bob", "bob's password")
READER = ("reader", "reader's password")
ROOT = ("root", "root's password")

V1 = IMAGES["v1"]


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module", autouse=True)
def cheap_hashing() -> Iterator[None]:
    """The cheapest argon2id parameters, so logging in costs no fifth of a second."""
    cheap = PasswordHasher.from_parameters(profiles.CHEAPEST)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ocimirror.users, "default_hasher", lambda: cheap)
        yield


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def fill(registry: AsyncRegistry, tmp: Path) -> None:
    """The ``world`` content, a few users, and a private distribution per user."""
    await populate(registry, tmp)
    await registry.create_distribution(
        "alice-secret", base_path="alice/secret", repository="app", private=True
    )
    await registry.create_distribution(
        "bob-secret", base_path="bob/secret", repository="app", private=True
    )
    await registry.create_user("root", password=ROOT[1], admin=True)
    for username, password in (ALICE, BOB, READER):
        await registry.create_user(username, password=password)
    await registry.grant("alice", "alice/*", "push")
    await registry.grant("alice", "private/*", "pull")
    await registry.grant("bob", "bob/*", "push")
    await registry.grant("reader", "alice/*", "pull")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """That content served with token auth over each metadata backend, shared by the module:
    the tests only read it (issuing a token writes nothing)."""
    tmp = tmp_path_factory.mktemp("served")
    database = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'metadata.db'}"
    else:
        database = f"ocimirror_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
        url = f"{POSTGRES_URL.rpartition('/')[0]}/{database}"
    harness = open_harness(
        asyncio.Runner(),
        url,
        (tmp / "blobs").as_uri(),
        fill=lambda registry: fill(registry, tmp),
        auth=TokenAuth(key=pem(KEY)),
    )
    try:
        yield harness
    finally:
        harness.close()
        if database is not None:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def basic(username: str, password: str) -> dict[str, str]:
    """Basic credentials."""
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"authorization": f"Basic {encoded}"}


def bearer(token: str) -> dict[str, str]:
    """A Bearer token."""
    return {"authorization": f"Bearer {token}"}


def token_response(h: Harness, *scopes: str, user: tuple[str, str] | None = None) -> Any:
    """``GET /token`` for ``scopes``; the response."""
    query = urlencode([("service", "ocimirror"), *(("scope", s) for s in scopes)])
    return h.get(f"/token?{query}", basic(*user) if user else {})


def token(h: Harness, *scopes: str, user: tuple[str, str] | None = None) -> str:
    """A token for ``scopes`` (as ``user``, or anonymous)."""
    response = token_response(h, *scopes, user=user)
    assert response.status_code == 200, response.text
    value: str = response.json()["token"]
    return value


def granted(value: str) -> dict[str, set[str]]:
    """The access a token grants, name -> actions (read without checking the signature)."""
    claims = jwt.decode(value, options={"verify_signature": False})
    return {entry["name"]: set(entry["actions"]) for entry in claims["access"]}


def challenge(response: Any) -> dict[str, str]:
    """The parameters of a 401's Bearer challenge."""
    assert response.status_code == 401, response.text
    header: str = response.headers["www-authenticate"]
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params = {}
    for part in rest.split('",'):
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip().strip('"')
    return params


def manifest_url(name: str, reference: str = "v1") -> str:
    return f"/v2/{name}/manifests/{reference}"


# -- the dance ----------------------------------------------------------------------------------


def test_docker_login_and_pull_of_a_private_name_follow_the_challenges(served: Harness) -> None:
    """``/v2/`` and the pull answer 401 with where to get a token and which scope; a token got
    there with Basic credentials opens both."""
    ping = served.get("/v2/")
    assert challenge(ping) == {"realm": "http://test/token", "service": "ocimirror"}
    assert oci_error(ping)["code"] == "UNAUTHORIZED"
    refused = served.get(manifest_url("private/app"))
    asked = challenge(refused)
    assert asked == {
        "realm": "http://test/token",
        "service": "ocimirror",
        "scope": "repository:private/app:pull",
    }
    response = token_response(served, asked["scope"], user=ALICE)
    body = response.json()
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    assert body["issued_at"].endswith("Z") and "T" in body["issued_at"]
    assert served.get("/v2/", bearer(body["token"])).status_code == 200
    pulled = served.get(manifest_url("private/app"), bearer(body["token"]))
    assert pulled.status_code == 200 and pulled.content == V1.manifest


def test_a_token_is_an_es256_jwt_naming_its_key_user_and_access(served: Harness) -> None:
    """The JWT: ES256 with a ``kid``, our issuer and audience, the user, a TTL of 300 s."""
    value = token(served, "repository:alice/secret:pull,push", user=ALICE)
    header = jwt.get_unverified_header(value)
    assert header["alg"] == "ES256" and header["kid"] == key_id(KEY.public_key())
    claims = jwt.decode(
        value, KEY.public_key(), algorithms=["ES256"], audience="ocimirror", issuer="ocimirror"
    )
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 300
    assert claims["access"] == [
        {"type": "repository", "name": "alice/secret", "actions": ["pull", "push"]}
    ]


def test_wrong_credentials_are_401_with_an_oci_error(served: Harness) -> None:
    """A wrong password, an unknown user and malformed Basic credentials get no token."""
    for headers in (
        basic("alice", "wrong"),
        basic("nobody", SECRET),
        {"authorization": "Basic !!!not-base64"},
        {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"authorization": "Bearer abc"},
    ):
        response = served.get("/token?service=ocimirror&scope=repository:library/app:pull", headers)
        assert response.status_code == 401, headers
        assert oci_error(response)["code"] == "UNAUTHORIZED"
        assert response.headers["www-authenticate"].startswith("Basic ")


def test_a_token_for_another_service_is_not_issued(served: Harness) -> None:
    """``service`` must be this one."""
    response = served.get("/token?service=elsewhere&scope=repository:library/app:pull")
    assert response.status_code == 400 and "ocimirror" in oci_error(response)["message"]


# -- who gets what ----------------------------------------------------------------------------

#: Who asks, for which scope (``repository:`` implied), the actions granted, and why.
GRANTS = [
    (None, "library/app:pull", "pull", "anyone pulls public"),
    (None, "library/app:pull,push", "pull", "anonymous never pushes"),
    (None, "private/app:pull", "", "anonymous never pulls private"),
    (None, "nowhere/x:pull", "", "no distribution, nothing for anonymous"),
    (ALICE, "private/app:pull,push", "pull", "a pull grant gives pull only"),
    (ALICE, "alice/secret:pull,push,delete", "pull,push,delete", "a push grant gives all three"),
    (ALICE, "alice/new:push,pull", "pull,push", "push where no distribution is, by a grant"),
    (ALICE, "bob/secret:pull", "", "a user cannot pull another's private distribution"),
    (ALICE, "bob/new:push", "", "nor push under another's pattern"),
    (ALICE, "library/app:pull,push", "pull", "a user pulls public names"),
    (READER, "alice/secret:pull,push", "pull", "a reader of a pattern pulls only"),
    (BOB, "bob/secret:*", "pull,push,delete", "star asks for all one may do"),
    (ROOT, "bob/secret:pull,push,delete", "pull,push,delete", "an admin gets what is asked"),
    (ROOT, "anything/new:push", "push", "an admin even where nothing is"),
    (ALICE, "registry:catalog:*", "", "other resource types are ignored"),
]


@pytest.mark.parametrize(("user", "scope", "actions", "why"), GRANTS, ids=[g[3] for g in GRANTS])
def test_a_token_grants_the_intersection_of_what_was_asked_and_what_is_allowed(
    served: Harness, user: tuple[str, str] | None, scope: str, actions: str, why: str
) -> None:
    """Each row: who asks, for which scope, and what the token grants."""
    full = scope if scope.startswith("registry:") else f"repository:{scope}"
    expected = {scope.rpartition(":")[0]: set(actions.split(","))} if actions else {}
    assert granted(token(served, full, user=user)) == expected


def test_many_scopes_in_one_request_are_each_decided(served: Harness) -> None:
    """Repeated ``scope`` parameters (and space-separated ones) are all considered."""
    value = token(
        served,
        "repository:library/app:pull",
        "repository:private/app:pull repository:alice/secret:push",
        user=ALICE,
    )
    assert granted(value) == {
        "library/app": {"pull"},
        "private/app": {"pull"},
        "alice/secret": {"push"},
    }
    assert jwt.decode(value, options={"verify_signature": False}).get("admin") is None


def test_public_names_are_pulled_without_any_token(served: Harness) -> None:
    """Anonymous pulls of public distributions need no token at all."""
    assert served.get(manifest_url("library/app")).status_code == 200
    assert served.get("/v2/library/app/tags/list").status_code == 200


def test_a_private_distribution_refuses_the_anonymous_caller(served: Harness) -> None:
    """No token, or an anonymous token: 401, the latter with ``insufficient_scope``."""
    assert "error" not in challenge(served.get(manifest_url("alice/secret")))
    anonymous = token(served, "repository:alice/secret:pull")
    asked = challenge(served.get(manifest_url("alice/secret"), bearer(anonymous)))
    assert asked["error"] == "insufficient_scope"
    assert asked["scope"] == "repository:alice/secret:pull"


def test_one_user_cannot_pull_another_users_private_distribution(served: Harness) -> None:
    """Bob's token, whatever he asked for, does not open Alice's name."""
    bobs = token(served, "repository:alice/secret:pull", user=BOB)
    response = served.get(manifest_url("alice/secret"), bearer(bobs))
    assert challenge(response)["error"] == "insufficient_scope"
    assert oci_error(response)["detail"] == [
        {"Type": "repository", "Name": "alice/secret", "Action": "pull"}
    ]


def test_a_pull_only_token_cannot_push(served: Harness) -> None:
    """A reader's token pulls Alice's name and is refused a blob upload there."""
    readers = token(served, "repository:alice/secret:pull,push", user=READER)
    assert served.get(manifest_url("alice/secret"), bearer(readers)).status_code == 200
    response = served.run(
        served.client.post("/v2/alice/secret/blobs/uploads/", headers=bearer(readers))
    )
    asked = challenge(response)
    assert asked["scope"] == "repository:alice/secret:pull,push"
    assert asked["error"] == "insufficient_scope"


def test_the_catalog_lists_what_the_caller_may_pull(served: Harness) -> None:
    """Anonymous: public names; a user: also those their grants cover; an admin: all."""
    public = ["library/app", "odd/manifests/blobs", "pinned/app"]

    def catalog(headers: dict[str, str]) -> list[str]:
        response = served.get("/v2/_catalog", headers)
        assert response.status_code == 200, response.text
        names: list[str] = response.json()["repositories"]
        return names

    assert catalog({}) == public
    assert catalog(bearer(token(served))) == public
    alices = token(served, user=ALICE)
    assert catalog(bearer(alices)) == sorted([*public, "alice/secret", "private/app"])
    everything = sorted([*public, "alice/secret", "bob/secret", "private/app"])
    assert catalog(bearer(token(served, user=ROOT))) == everything


def test_basic_credentials_on_registry_requests_are_answered_with_the_challenge(
    served: Harness,
) -> None:
    """Clients get tokens from ``/token``; the API itself takes Bearer tokens only."""
    response = served.get(manifest_url("library/app"), basic(*ALICE))
    assert challenge(response)["realm"] == "http://test/token"


# -- OAuth2 ---------------------------------------------------------------------------------------


def oauth(h: Harness, **form: str) -> Any:
    """``POST /token`` with a form."""
    return h.run(
        h.client.post(
            "/token",
            content=urlencode(form),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    )


def test_the_oauth2_password_grant_issues_a_token(served: Harness) -> None:
    """``grant_type=password`` with username, password and space-separated scopes."""
    response = oauth(
        served,
        grant_type="password",
        service="ocimirror",
        client_id="test",
        username="alice",
        password=SECRET,
        scope="repository:alice/secret:pull,push repository:bob/secret:pull",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "repository:alice/secret:pull,push"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert granted(body["access_token"]) == {"alice/secret": {"pull", "push"}}


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "refresh_token", "refresh_token": "x"}, 400, "unsupported_grant_type"),
        ({"username": "alice", "password": SECRET}, 400, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "alice"}, 400, "invalid_request"),
        ({"grant_type": "password", "username": "alice", "password": "no"}, 401, None),
    ],
    ids=["no refresh tokens", "a grant type is needed", "a password too", "a wrong one is 401"],
)
def test_other_oauth2_requests_are_refused(
    served: Harness, form: dict[str, str], status: int, error: str | None
) -> None:
    """Each row: a form and how it is refused."""
    response = oauth(served, **form)
    assert response.status_code == status
    if error is None:
        assert oci_error(response)["code"] == "UNAUTHORIZED"
    else:
        assert response.json()["error"] == error


# -- secrets stay secret ----------------------------------------------------------------------


def test_passwords_and_tokens_never_reach_a_log_line_or_a_body(
    served: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Logins, right and wrong, at debug level: no password, credential or token is logged,
    and no error body repeats one."""
    caplog.set_level(logging.DEBUG, logger="ocimirror")
    bodies = [
        token_response(served, "repository:alice/secret:pull", user=("alice", WRONG)).text,
        token_response(served, "repository:alice/secret:pull", user=(SECRET, SECRET)).text,
        oauth(served, grant_type="password", username="alice", password=WRONG).text,
    ]
    good = token(served, "repository:alice/secret:pull", user=ALICE)
    bodies.append(served.get(manifest_url("bob/secret"), bearer(good)).text)
    bodies.append(served.get(manifest_url("bob/secret"), bearer(good + "x")).text)
    text = "\n".join([caplog.text, *bodies])
    for secret in (SECRET, WRONG, basic(*ALICE)["authorization"][6:], good):
        assert secret not in text
    assert "alice" in caplog.text
    assert "KEY" not in repr(TokenAuth(key=pem(KEY))) and "BEGIN" not in repr(
        TokenAuth(key=pem(KEY))
    )


# -- single tokens, no database ---------------------------------------------------------------


@pytest.fixture
def auth(clock: Clock) -> TokenAuth:
    """A TokenAuth with a known key and a hand-moved clock, bound to no real registry."""
    auth = TokenAuth(key=pem(KEY), clock=clock, leeway=0)
    auth.bind(cast(AsyncRegistry, SimpleNamespace(config=None)))
    return auth


def request(headers: dict[str, str] | None = None, root_path: str = "") -> Request:
    """A bare registry request."""
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "server": ("registry.test", 80),
            "path": f"{root_path}/v2/x/manifests/v1",
            "root_path": root_path,
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        }
    )


def identify(auth: TokenAuth, value: str) -> Identity:
    """The identity a token gives (raises Unauthorized if it gives none)."""
    return asyncio.run(auth.identify(request(bearer(value))))


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for ``auth`` (now), changed by ``changes`` (None removes a claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "ocimirror",
        "sub": "alice",
        "aud": "ocimirror",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "access": [{"type": "repository", "name": "x", "actions": ["pull"]}],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(payload: dict[str, Any]) -> str:
    """The key-confusion attack: HS256 'signed' with our public key's PEM as the secret."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    secret = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def alg_none(payload: dict[str, Any]) -> str:
    """An unsigned token."""
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(payload).encode())}."


def signed(payload: dict[str, Any], key: Any = KEY) -> str:
    return jwt.encode(payload, key, algorithm="ES256")


def test_a_valid_token_gives_its_user_and_access(auth: TokenAuth) -> None:
    """The identity is the token's subject, admin flag and repository access."""
    found = identify(auth, signed(claims(admin=True)))
    assert found == Identity(username="alice", admin=True, access={"x": frozenset({"pull"})})
    anonymous = identify(auth, signed(claims(sub="", access=None)))
    assert anonymous.anonymous and anonymous.access == {}


BAD_TOKENS = [
    pytest.param(lambda: signed(claims(exp=int(time.time()) - 1)), id="expired"),
    pytest.param(lambda: signed(claims(nbf=int(time.time()) + 60)), id="not valid yet"),
    pytest.param(lambda: signed(claims(), OTHER_KEY), id="signed by another key"),
    pytest.param(lambda: signed(claims(aud="elsewhere")), id="for another service"),
    pytest.param(lambda: signed(claims(aud=None)), id="with no audience"),
    pytest.param(lambda: signed(claims(iss="someone")), id="from another issuer"),
    pytest.param(lambda: signed(claims(exp=None)), id="that never expires"),
    pytest.param(lambda: alg_none(claims()), id="unsigned: alg none"),
    pytest.param(lambda: hs256_with_public_key(claims()), id="HS256 with the public key"),
    pytest.param(lambda: jwt.encode(claims(), "k" * 32, algorithm="HS256"), id="HS256"),
    pytest.param(lambda: signed(claims(access="everything")), id="an access claim not a list"),
    pytest.param(lambda: signed(claims())[:-4] + "AAAA", id="a changed signature"),
    pytest.param(lambda: "not.a.token", id="garbage"),
]


@pytest.mark.parametrize("make", BAD_TOKENS)
def test_these_tokens_are_refused_with_an_invalid_token_challenge(
    auth: TokenAuth, make: Any
) -> None:
    """Each row is a token that must not pass; the answer says to get a new one."""
    with pytest.raises(Unauthorized) as caught:
        identify(auth, make())
    assert caught.value.challenge == (
        'Bearer realm="http://registry.test/token",service="ocimirror",error="invalid_token"'
    )


def test_a_token_is_verified_once_then_remembered(
    auth: TokenAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reusing a token costs no signature check: the verified identity is cached."""
    calls = []
    decode = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    value = auth.issue_token(username="alice", access={"x": ["pull"]})
    first = identify(auth, value)
    assert all(identify(auth, value) is first for _ in range(100))
    assert len(calls) == 1


def test_the_cache_does_not_accept_a_token_after_it_expires(auth: TokenAuth, clock: Clock) -> None:
    """A remembered token stops working at its ``exp``."""
    value = auth.issue_token(username="alice", access={"x": ["pull"]})
    assert identify(auth, value).username == "alice"
    clock.now += 299
    assert identify(auth, value).username == "alice"
    clock.now += 1
    with pytest.raises(Unauthorized):
        identify(auth, value)


def test_the_cache_is_bounded(clock: Clock) -> None:
    """At most ``cache_size`` tokens are remembered; the least recently used goes first, and
    comes back only by verifying again."""
    auth = TokenAuth(key=pem(KEY), clock=clock, cache_size=2)
    auth.bind(cast(AsyncRegistry, SimpleNamespace(config=None)))
    values = [auth.issue_token(username=f"u{i}") for i in range(3)]
    for value in values:
        identify(auth, value)
    assert len(auth._verified) == 2 and values[0] not in auth._verified
    assert identify(auth, values[0]).username == "u0"


ALICE_PULLS_X = Identity(username="alice", access={"x": frozenset({"pull"})})

#: Who, what for, whether it is allowed, and why.
CHECKS = [
    (Identity(admin=True), Access(name="x", actions=PUSH), True, "an admin does anything"),
    (Identity(), Access(name="x", actions=PULL, public=True), True, "anyone pulls a public name"),
    (Identity(), Access(name="x", actions=PUSH, public=True), False, "nobody pushes one unasked"),
    (Identity(), Access(name="x", actions=PULL), False, "nor pulls a private one"),
    (ALICE_PULLS_X, Access(name="x", actions=PULL), True, "the token's pull"),
    (ALICE_PULLS_X, Access(name="x", actions=PUSH), False, "pull is not push"),
    (ALICE_PULLS_X, Access(name="y", actions=PULL), False, "another name's access"),
]


@pytest.mark.parametrize(
    ("identity", "access", "allowed", "why"), CHECKS, ids=[c[3] for c in CHECKS]
)
def test_check_allows_what_the_identity_holds(
    auth: TokenAuth, identity: Identity, access: Access, allowed: bool, why: str
) -> None:
    """Each row: who, what for, and whether it is allowed."""
    if allowed:
        auth.check(request(), identity, access)
    else:
        with pytest.raises(Unauthorized):
            auth.check(request(), identity, access)


def test_the_realm_follows_the_mount_point_or_the_configured_url(auth: TokenAuth) -> None:
    """From the request (scheme, host, root path), unless configured."""
    with pytest.raises(Unauthorized) as caught:
        auth.check_login(request(root_path="/registry"), Identity())
    assert caught.value.challenge == (
        'Bearer realm="http://registry.test/registry/token",service="ocimirror"'
    )
    fixed = TokenAuth(key=pem(KEY), realm="https://auth.example/token", service="reg")
    with pytest.raises(Unauthorized) as caught:
        fixed.check(request(), Identity(), Access(name="a/b", actions=PUSH))
    assert caught.value.challenge == (
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository:a/b:pull", ("a/b", {"pull"})),
        ("repository:a/b:pull,push", ("a/b", {"pull", "push"})),
        ("repository(plugin):a/b:pull", ("a/b", {"pull"})),
        ("repository:a/b:*", ("a/b", {"*"})),
        ("repository:a/b:", ("a/b", set())),
        ("registry:catalog:*", None),
        ("repository:A/B:pull", None),
        ("repository::pull", None),
        ("nonsense", None),
    ],
)
def test_scopes_are_parsed_as_the_token_spec_writes_them(
    text: str, expected: tuple[str, set[str]] | None
) -> None:
    """``type[(class)]:name:actions``; only repositories with valid names count."""
    assert parse_scope(text) == expected


# -- the signing key --------------------------------------------------------------------------


def test_the_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    """The first bind writes ``token-key.pem`` (0600) in the home; a second TokenAuth (another
    worker) reads it, so each verifies the other's tokens."""
    registry = cast(AsyncRegistry, SimpleNamespace(config=SimpleNamespace(home=tmp_path)))
    first, second = TokenAuth(), TokenAuth()
    first.bind(registry)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.read_bytes()
    second.bind(registry)
    assert path.read_bytes() == written
    value = first.issue_token(username="alice", access={"x": ["pull"]})
    assert identify(second, value).access == {"x": frozenset({"pull"})}
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left


def test_workers_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    """Many threads racing to create the key all end up with the same one."""
    path = tmp_path / "home" / KEY_FILE
    barrier = threading.Barrier(8)
    found: list[str] = []

    def start() -> None:
        barrier.wait()
        found.append(key_id(load_or_create_key(path).public_key()))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [KEY_FILE]


def test_a_key_is_taken_from_a_file_the_environment_names(tmp_path: Path) -> None:
    """``OCIMIRROR_TOKEN_KEY`` names a PEM file; a missing one is an error, not a new key."""
    path = tmp_path / "key.pem"
    path.write_bytes(pem(KEY))
    auth = TokenAuth.from_environment({"OCIMIRROR_TOKEN_KEY": str(path)})
    auth.bind(cast(AsyncRegistry, SimpleNamespace(config=None)))
    header = jwt.get_unverified_header(auth.issue_token())
    assert header["kid"] == key_id(KEY.public_key())
    missing = TokenAuth.from_environment({"OCIMIRROR_TOKEN_KEY": str(tmp_path / "nope.pem")})
    with pytest.raises(FileNotFoundError):
        missing.bind(cast(AsyncRegistry, SimpleNamespace(config=None)))


def test_a_key_that_is_not_ec_p256_is_refused_without_quoting_it() -> None:
    """Tokens are ES256: an RSA key, or no key at all, is refused at bind."""
    rsa_pem = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    for key in (rsa_pem, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"):
        auth = TokenAuth(key=key)
        with pytest.raises(InvalidError) as caught:
            auth.bind(cast(AsyncRegistry, SimpleNamespace(config=None)))
        assert "AAAA" not in str(caught.value) and "MII" not in str(caught.value)


def test_the_constructor_does_no_io(tmp_path: Path) -> None:
    """Naming a key file that does not exist fails only at bind."""
    auth = TokenAuth(key=tmp_path / "later.pem")
    assert not (tmp_path / "later.pem").exists()
    with pytest.raises(FileNotFoundError):
        auth.bind(cast(AsyncRegistry, SimpleNamespace(config=None)))


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OCIMIRROR_TOKEN_KEY", raising=False)
    yield


def test_from_environment_without_the_variable_uses_the_home(
    no_env_key: None, tmp_path: Path
) -> None:
    """No ``OCIMIRROR_TOKEN_KEY``: the home's key file."""
    auth = TokenAuth.from_environment(ttl=60)
    assert auth.ttl == 60
    auth.bind(cast(AsyncRegistry, SimpleNamespace(config=SimpleNamespace(home=tmp_path))))
    assert (tmp_path / KEY_FILE).exists() and os.stat(tmp_path / KEY_FILE).st_size > 0
