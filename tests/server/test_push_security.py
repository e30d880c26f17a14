"""Push and token auth under attack: hostile names, digests and upload IDs; oversized
manifests; users reaching past their grants; tokens that are expired, forged or unsigned.

Everything runs against a real ``ocimirror serve``: one ``--no-auth`` and one with token auth,
each started once for this module. The token server's users:

* ``alice``: ``push`` on ``conformance/*``;
* ``bob``: ``pull`` on ``conformance/*``;
* ``carol``: ``push`` on ``carol/*``, whose private distribution ``carol/private`` no one
  else may pull.

``open/app`` is public (anyone pulls it, no token needed); ``conformance/seeded`` is private.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import socket
import string
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.distribution import (
    OCTETS,
    blob_bytes,
    digest_of,
    image_manifest,
    location,
    new_name,
    push_blob,
    put_manifest,
    start_upload,
    with_digest,
)
from fixtures.served import (
    Served,
    bearer_challenge,
    error_body,
    oci_error,
    run_registry,
    tree_state,
)

from ocimirror import AsyncRegistry
from ocimirror.testing import Blob, random_image, write_layout

SEEDED = random_image(seed="security/seeded", layers=1)
LAYER = SEEDED.layers[0]
USERS = {
    "alice": [("conformance/*", "push")],
    "bob": [("conformance/*", "pull")],
    "carol": [("carol/*", "push")],
}
PUBLIC = "open/app"
PRIVATE = "conformance/seeded"
CAROLS = "carol/private"
MIB = 1024 * 1024


async def _seed(registry: AsyncRegistry, tmp: Path) -> None:
    write_layout(tmp / "seed-layout", {"v1": SEEDED})
    repository = await registry.create_repository("seeded")
    await repository.import_layout(tmp / "seed-layout")
    for base_path, private in ((PUBLIC, False), (PRIVATE, True), (CAROLS, True)):
        await registry.create_distribution(
            base_path.replace("/", "-"), base_path=base_path, repository="seeded", private=private
        )


def _serve(tmp_path_factory: pytest.TempPathFactory, *, auth: bool) -> Iterator[Served]:
    home = tmp_path_factory.mktemp(f"security-{'token' if auth else 'no-auth'}") / "home"
    with run_registry(home, auth=auth, users=USERS, seed=_seed) as served:
        with served.client("alice") as alice:  # requests naming TARGET reach a repository
            push_blob(alice, TARGET, blob_bytes("security/target", 64))
        yield served


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``ocimirror serve --no-auth``."""
    yield from _serve(tmp_path_factory, auth=False)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``ocimirror serve`` with token auth and :data:`USERS`."""
    yield from _serve(tmp_path_factory, auth=True)


@pytest.fixture(params=["no-auth", "token"])
def server(request: pytest.FixtureRequest) -> Served:
    """Each server in turn."""
    name = "open_server" if request.param == "no-auth" else "token_server"
    served: Served = request.getfixturevalue(name)
    return served


@pytest.fixture(scope="module")
def alices() -> Iterator[dict[str, httpx.Client]]:
    """Alice's client of each server, kept for the module (so her tokens are reused)."""
    clients: dict[str, httpx.Client] = {}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def alice(server: Served, alices: dict[str, httpx.Client]) -> httpx.Client:
    """A client of ``server``, logged in as alice with token auth."""
    if server.mode not in alices:
        alices[server.mode] = server.client("alice")
    return alices[server.mode]


# -- hostile names, digests and upload IDs -----------------------------------------------------

BLOB = blob_bytes("security/hostile", 512)
BLOB_DIGEST = digest_of(BLOB)
CONFIG = Blob("application/vnd.oci.image.config.v1+json", b'{"architecture":"amd64"}')
MANIFEST = image_manifest(CONFIG, [])
MANIFEST_DIGEST = digest_of(MANIFEST)
#: A repository that exists on both servers (made when they start).
TARGET = "conformance/hostile"

NAMES = {
    "dot-dot": "..",
    "dot-dot-segments": "../../escape",
    "dot-dot-inside": "conformance/../../escape",
    "encoded-dots": "conformance/%2e%2e/%2e%2e/escape",
    "encoded-slashes": "conformance%2F..%2F..%2Fescape",
    "encoded-leading-slash": "%2Fescape",
    "backslashes": "conformance\\..\\..\\escape",
    "encoded-nul": "conformance/x%00y",
    "raw-nul": "conformance/x\x00y",
    "absurd-length": "conformance/" + "a" * 5000,
    "absurd-depth": "/".join(["a"] * 1500),
}
NAME_ENDPOINTS = {
    "post-upload": ("POST", "/v2/{}/blobs/uploads/", b""),
    "post-monolithic": ("POST", f"/v2/{{}}/blobs/uploads/?digest={BLOB_DIGEST}", BLOB),
    "patch-upload": ("PATCH", f"/v2/{{}}/blobs/uploads/{uuid.uuid4().hex}", BLOB),
    "put-upload": ("PUT", f"/v2/{{}}/blobs/uploads/{uuid.uuid4().hex}?digest={BLOB_DIGEST}", BLOB),
    "put-manifest-tag": ("PUT", "/v2/{}/manifests/v1", MANIFEST),
    "put-manifest-digest": ("PUT", f"/v2/{{}}/manifests/{MANIFEST_DIGEST}", MANIFEST),
    "delete-manifest": ("DELETE", "/v2/{}/manifests/v1", b""),
    "delete-blob": ("DELETE", f"/v2/{{}}/blobs/{BLOB_DIGEST}", b""),
    "referrers": ("GET", f"/v2/{{}}/referrers/{MANIFEST_DIGEST}", b""),
}
DIGESTS = {
    "dot-dot": "..",
    "traversal": "sha256:../../../../escape",
    "encoded-traversal": "sha256:..%2F..%2F..%2F..%2Fescape",
    "encoded-slash": "sha256%2F..%2F..%2Fescape",
    "not-hex": "sha256:" + "g" * 64,
    "short": "sha256:" + "a" * 63,
    "uppercase": "sha256:" + "A" * 64,
    "encoded-nul": "sha256:" + "0" * 64 + "%00",
    "raw-nul": "sha256:" + "0" * 64 + "\x00",
    "absurd-length": "sha256:" + "a" * 5000,
    "unsupported-algorithm": "md5:" + "0" * 32,
}
DIGEST_ENDPOINTS = {
    "post-monolithic": ("POST", f"/v2/{TARGET}/blobs/uploads/?digest={{}}", BLOB),
    "get-blob": ("GET", f"/v2/{TARGET}/blobs/{{}}", b""),
    "head-blob": ("HEAD", f"/v2/{TARGET}/blobs/{{}}", b""),
    "delete-blob": ("DELETE", f"/v2/{TARGET}/blobs/{{}}", b""),
    "put-manifest": ("PUT", f"/v2/{TARGET}/manifests/{{}}", MANIFEST),
    "get-manifest": ("GET", f"/v2/{TARGET}/manifests/{{}}", b""),
    "delete-manifest": ("DELETE", f"/v2/{TARGET}/manifests/{{}}", b""),
    "referrers": ("GET", f"/v2/{TARGET}/referrers/{{}}", b""),
}
UPLOAD_IDS = {
    "dot-dot": "..",
    "traversal": "../../../../escape",
    "encoded-traversal": "%2e%2e%2F%2e%2e%2F%2e%2e%2Fescape",
    "encoded-slashes": "..%2F..%2F..%2Fescape",
    "encoded-nul": "x%00",
    "raw-nul": "x\x00",
    "absurd-length": "a" * 5000,
    "made-up": uuid.uuid4().hex,
}
UPLOAD_METHODS = {
    "get": ("GET", "", b""),
    "patch": ("PATCH", "", BLOB),
    "put": ("PUT", f"?digest={BLOB_DIGEST}", BLOB),
    "delete": ("DELETE", "", b""),
}


def _hostile_cases() -> list[Any]:
    cases = []
    for name_id, name in NAMES.items():
        for endpoint_id, (method, template, body) in NAME_ENDPOINTS.items():
            target = template.format(name)
            cases.append(pytest.param(method, target, body, id=f"name-{name_id}-{endpoint_id}"))
    for digest_id, digest in DIGESTS.items():
        for endpoint_id, (method, template, body) in DIGEST_ENDPOINTS.items():
            target = template.format(digest)
            cases.append(pytest.param(method, target, body, id=f"digest-{digest_id}-{endpoint_id}"))
    for upload_id, value in UPLOAD_IDS.items():
        for method_id, (method, query, body) in UPLOAD_METHODS.items():
            target = f"/v2/{TARGET}/blobs/uploads/{value}{query}"
            cases.append(pytest.param(method, target, body, id=f"upload-{upload_id}-{method_id}"))
    return cases


@pytest.fixture
def untouched(server: Served) -> Iterator[None]:
    """Asserts that nothing outside the server's home changed (its parent directory), and
    that no file named ``escape`` appeared in the home or any directory above it."""
    home = server.home
    parent = home.parent
    before = tree_state(parent, skip=home)
    yield
    assert tree_state(parent, skip=home) == before
    for place in (home, *home.parents):
        assert not (place / "escape").exists(), place


@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize(("method", "target", "body"), _hostile_cases())
def test_a_hostile_name_digest_or_upload_id_is_refused_and_touches_nothing_outside_the_storage(
    server: Served, alice: httpx.Client, method: str, target: str, body: bytes
) -> None:
    headers = {**OCTETS, "Content-Range": f"0-{len(body) - 1}"} if method == "PATCH" else {}
    response = alice.request(
        method,
        "/",
        content=body,
        headers=headers,
        extensions={"raw_target": target.encode("latin-1")},
    )
    allowed = {400, 404} | ({401, 403} if server.auth else set())
    assert response.status_code in allowed, (response.status_code, response.content[:300])
    error_body(response)


@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize(
    "params",
    [
        *({"mount": digest, "from": "conformance/source"} for digest in DIGESTS.values()),
        *({"mount": BLOB_DIGEST, "from": name} for name in NAMES.values()),
    ],
    ids=[*(f"digest-{d}" for d in DIGESTS), *(f"from-{n}" for n in NAMES)],
)
def test_a_hostile_mount_mounts_nothing_and_at_most_opens_an_upload_in_the_target(
    server: Served, alice: httpx.Client, params: dict[str, str]
) -> None:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    response = alice.request(
        "POST",
        "/",
        extensions={"raw_target": f"/v2/{TARGET}/blobs/uploads/?{query}".encode("latin-1")},
    )
    allowed = {202, 400, 404} | ({401, 403} if server.auth else set())
    assert response.status_code in allowed, (response.status_code, response.content[:300])
    if response.status_code == 202:
        assert location(response).path.startswith(f"/v2/{TARGET}/blobs/uploads/")
        assert alice.delete(location(response)).status_code == 204


# -- upload IDs --------------------------------------------------------------------------------


def _bits(upload_id: str) -> int:
    """The random bits an upload ID can hold, judged by its alphabet (a version-4 UUID has 122)."""
    try:
        parsed = uuid.UUID(upload_id)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.version == 4:
        return 122
    if re.fullmatch(r"[0-9a-fA-F-]+", upload_id):
        return 4 * len(upload_id.replace("-", ""))
    if re.fullmatch(r"[A-Za-z0-9_-]+", upload_id):
        return 6 * len(upload_id)
    return 0


def _upload_id(url: httpx.URL) -> str:
    return url.path.rstrip("/").rsplit("/", 1)[-1]


def test_upload_ids_hold_at_least_128_random_bits_and_differ_every_time(
    alice: httpx.Client,
) -> None:
    name = new_name()
    ids = []
    for _ in range(16):
        response = alice.post(f"/v2/{name}/blobs/uploads/")
        assert response.status_code == 202
        ids.append(_upload_id(location(response)))
        assert response.headers.get("docker-upload-uuid", ids[-1]) == ids[-1]
    assert len(set(ids)) == len(ids)
    assert min(_bits(i) for i in ids) >= 128, ids[0]
    # Time-ordered or counted IDs share long prefixes; random ones almost never share eight
    # characters among sixteen IDs.
    shared = max(len(_common_prefix(a, b)) for a in ids for b in ids if a != b)
    assert shared < 8, ids


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _made_up(upload_id: str) -> str:
    """An ID of the same alphabet and length as ``upload_id`` that the server never gave."""
    hexadecimal = re.fullmatch(r"[0-9a-f-]+", upload_id)
    alphabet = "0123456789abcdef" if hexadecimal else string.ascii_letters + string.digits
    rng = random.Random(upload_id)
    made = "".join(c if c == "-" else rng.choice(alphabet) for c in upload_id)
    assert made != upload_id
    return made


def test_a_made_up_upload_id_is_404_blob_upload_unknown(alice: httpx.Client) -> None:
    name = new_name()
    real = start_upload(alice, name)
    fake = real.copy_with(path=real.path.rsplit("/", 1)[0] + "/" + _made_up(_upload_id(real)))
    for method, query, body in UPLOAD_METHODS.values():
        url = fake.join(query) if query else fake
        headers = {**OCTETS, "Content-Range": f"0-{len(body) - 1}"} if method == "PATCH" else {}
        response = alice.request(method, url, content=body, headers=headers)
        assert response.status_code == 404, (method, response.status_code)
        oci_error(response, "BLOB_UPLOAD_UNKNOWN")


def test_an_upload_id_works_only_in_the_repository_it_was_opened_in(
    alice: httpx.Client,
) -> None:
    opened_in, elsewhere = new_name(), new_name()
    push_blob(alice, elsewhere, blob_bytes("security/elsewhere", 16))
    upload = start_upload(alice, opened_in)
    moved = upload.copy_with(path=upload.path.replace(opened_in, elsewhere, 1))
    for method, query, body in UPLOAD_METHODS.values():
        url = moved.join(query) if query else moved
        headers = {**OCTETS, "Content-Range": f"0-{len(body) - 1}"} if method == "PATCH" else {}
        response = alice.request(method, url, content=body, headers=headers)
        assert response.status_code == 404, (method, response.status_code)
        oci_error(response, "BLOB_UPLOAD_UNKNOWN")
    done = alice.put(with_digest(upload, BLOB_DIGEST), content=BLOB, headers=OCTETS)
    assert done.status_code == 201
    assert alice.get(f"/v2/{elsewhere}/blobs/{BLOB_DIGEST}").status_code == 404


def test_another_user_cannot_use_an_upload_opened_by_alice(token_server: Served) -> None:
    name = new_name()
    with (
        token_server.client("alice") as alice_client,
        token_server.client("bob") as bob,
        token_server.client("carol") as carol,
    ):
        upload = start_upload(alice_client, name)
        for intruder in (bob, carol):
            for method, query, body in UPLOAD_METHODS.values():
                url = upload.join(query) if query else upload
                response = intruder.request(method, url, content=body)
                assert response.status_code == 401, (method, response.status_code)
        status = alice_client.get(upload)
        assert status.status_code == 204


# -- manifest size -----------------------------------------------------------------------------


def _manifest_of_size(size: int) -> bytes:
    """An image manifest (config :data:`CONFIG`, no layers) padded to exactly ``size`` bytes."""
    empty = image_manifest(CONFIG, [], annotations={"org.example.padding": ""})
    padding = "p" * (size - len(empty))
    data = image_manifest(CONFIG, [], annotations={"org.example.padding": padding})
    assert len(data) == size
    return data


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_a_manifest_over_4_mib_is_refused_and_not_stored(alice: httpx.Client, by: str) -> None:
    name = new_name()
    push_blob(alice, name, CONFIG.data)
    data = _manifest_of_size(4 * MIB + 1)
    reference = "huge" if by == "tag" else digest_of(data)
    response = put_manifest(alice, name, reference, data)
    assert response.status_code in (400, 413), response.status_code
    if response.status_code == 400:
        oci_error(response, "MANIFEST_INVALID")
    assert alice.get(f"/v2/{name}/manifests/{reference}").status_code == 404
    assert alice.get(f"/v2/{name}/manifests/{digest_of(data)}").status_code == 404


def test_a_manifest_of_4_mib_is_accepted(alice: httpx.Client) -> None:
    name = new_name()
    push_blob(alice, name, CONFIG.data)
    data = _manifest_of_size(4 * MIB)
    assert put_manifest(alice, name, "big", data).status_code == 201
    assert alice.get(f"/v2/{name}/manifests/big").content == data


# -- who may pull and push ---------------------------------------------------------------------


def _pull_paths(name: str) -> dict[str, str]:
    return {
        "manifest": f"/v2/{name}/manifests/v1",
        "manifest-by-digest": f"/v2/{name}/manifests/{SEEDED.digest}",
        "blob": f"/v2/{name}/blobs/{LAYER.digest}",
        "tags": f"/v2/{name}/tags/list",
        "referrers": f"/v2/{name}/referrers/{SEEDED.digest}",
    }


@pytest.mark.parametrize("path", _pull_paths(PUBLIC).values(), ids=_pull_paths(PUBLIC).keys())
def test_anyone_pulls_a_public_distribution_without_any_token(
    token_server: Served, path: str
) -> None:
    with token_server.client(tokens=False) as anonymous:
        response = anonymous.get(path)
    assert response.status_code == 200
    assert "authorization" not in response.request.headers
    if path.endswith("/v1"):
        assert response.content == SEEDED.manifest


def _assert_challenged(response: httpx.Response, name: str, *, insufficient: bool) -> None:
    assert response.status_code == 401, (response.status_code, response.content[:300])
    challenge = bearer_challenge(response)
    assert challenge is not None and "realm" in challenge and "service" in challenge
    assert f"repository:{name}:" in challenge.get("scope", ""), challenge
    if insufficient:
        assert challenge.get("error") == "insufficient_scope", challenge
    oci_error(response, "UNAUTHORIZED", "DENIED")
    assert SEEDED.manifest not in response.content
    assert LAYER.data not in response.content


@pytest.mark.parametrize("name", [PRIVATE, CAROLS])
@pytest.mark.parametrize("kind", list(_pull_paths(PRIVATE)))
def test_a_private_distribution_answers_401_with_a_challenge_to_anonymous_callers(
    token_server: Served, name: str, kind: str
) -> None:
    path = _pull_paths(name)[kind]
    with token_server.client(tokens=False) as anonymous:
        response = anonymous.get(path)
        assert response.status_code == 401
        assert bearer_challenge(response) is not None
        challenge = bearer_challenge(response)
        assert challenge is not None and challenge.get("scope") == f"repository:{name}:pull"
        oci_error(response, "UNAUTHORIZED")
        assert SEEDED.manifest not in response.content and LAYER.data not in response.content
    with token_server.client(None) as anonymous_tokens:  # anonymous tokens grant nothing here
        assert anonymous_tokens.get(path).status_code == 401


@pytest.mark.parametrize("kind", list(_pull_paths(CAROLS)))
def test_one_user_cannot_pull_another_users_private_distribution(
    token_server: Served, kind: str
) -> None:
    path = _pull_paths(CAROLS)[kind]
    with token_server.client("alice") as alice_client:
        _assert_challenged(alice_client.get(path), CAROLS, insufficient=True)
    with token_server.client("carol") as carol:
        assert carol.get(path).status_code == 200


def _push_requests(name: str) -> dict[str, tuple[str, str, bytes]]:
    return {
        "post-upload": ("POST", f"/v2/{name}/blobs/uploads/", b""),
        "post-monolithic": ("POST", f"/v2/{name}/blobs/uploads/?digest={BLOB_DIGEST}", BLOB),
        "put-manifest": ("PUT", f"/v2/{name}/manifests/v2", SEEDED.manifest),
        "delete-manifest": ("DELETE", f"/v2/{name}/manifests/{SEEDED.digest}", b""),
        "delete-tag": ("DELETE", f"/v2/{name}/manifests/v1", b""),
        "delete-blob": ("DELETE", f"/v2/{name}/blobs/{LAYER.digest}", b""),
    }


PUSH_KINDS = list(_push_requests(PRIVATE))


def _assert_unchanged(served: Served, name: str) -> None:
    """``name`` still serves exactly :data:`SEEDED` under ``v1`` (checked as its owner)."""
    owner = "carol" if name.startswith("carol/") else "alice"
    with served.client(owner) as client:
        assert client.get(f"/v2/{name}/manifests/v1").content == SEEDED.manifest
        assert client.get(f"/v2/{name}/blobs/{LAYER.digest}").status_code == 200
        assert client.get(f"/v2/{name}/tags/list").json()["tags"] == ["v1"]
        assert client.get(f"/v2/{name}/blobs/{BLOB_DIGEST}").status_code == 404


@pytest.mark.parametrize("kind", PUSH_KINDS)
def test_a_pull_only_user_cannot_push_or_delete(token_server: Served, kind: str) -> None:
    fresh = new_name()
    with token_server.client("bob") as bob:
        assert bob.get(f"/v2/{PRIVATE}/manifests/v1").status_code == 200  # bob may pull
        for name in (PRIVATE, fresh):
            method, path, body = _push_requests(name)[kind]
            _assert_challenged(bob.request(method, path, content=body), name, insufficient=True)
    _assert_unchanged(token_server, PRIVATE)
    with token_server.client("alice") as alice_client:
        assert alice_client.get(f"/v2/{fresh}/tags/list").status_code == 404
        assert alice_client.get(f"/v2/{fresh}/blobs/{BLOB_DIGEST}").status_code == 404


@pytest.mark.parametrize("kind", PUSH_KINDS)
@pytest.mark.parametrize(
    ("user", "name"),
    [("alice", CAROLS), ("carol", PRIVATE), (None, PUBLIC), (None, PRIVATE)],
    ids=["alice-into-carols", "carol-into-alices", "anonymous-into-public", "anonymous"],
)
def test_no_one_pushes_outside_their_grants(
    token_server: Served, kind: str, user: str | None, name: str
) -> None:
    method, path, body = _push_requests(name)[kind]
    with token_server.client(user) as client:
        _assert_challenged(
            client.request(method, path, content=body), name, insufficient=user is not None
        )
    with token_server.client(user, tokens=False) as client:
        assert client.request(method, path, content=body).status_code == 401
    _assert_unchanged(token_server, name)


def test_a_mount_from_a_repository_the_user_cannot_pull_mounts_nothing(
    token_server: Served,
) -> None:
    target = new_name()
    with token_server.client("alice") as alice_client:
        response = alice_client.post(
            f"/v2/{target}/blobs/uploads/", params={"mount": str(LAYER.digest), "from": CAROLS}
        )
        assert response.status_code in (202, 401), response.status_code
        assert alice_client.get(f"/v2/{target}/blobs/{LAYER.digest}").status_code == 404


# -- tokens ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(served: Served, username: str, scope: str) -> str:
    """A token the server's token endpoint issues to ``username`` for ``scope``."""
    with httpx.Client(base_url=served.base_url, trust_env=False, timeout=60) as plain:
        challenge = bearer_challenge(plain.get("/v2/"))
    assert challenge is not None
    auth = served.bearer(username)
    token = auth.fetch(served.base_url + "/v2/", {**challenge, "scope": scope})
    assert token is not None
    return token


def _server_key(served: Served) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(
        (served.home / "token-key.pem").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _resign(token: str, key: Any, change: Callable[[dict[str, Any]], None] = lambda c: None) -> str:
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    change(claims)
    extra = {k: v for k, v in header.items() if k not in ("alg", "typ")}
    return jwt.encode(claims, key, algorithm="ES256", headers=extra)


def _claims(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(claims: dict[str, Any]) -> None:
        claims.update(changes)

    return change


#: Far enough that no clock skew allowance and no test run can bridge it.
HOUR = 3600


def _expired(token: str, served: Served) -> str:
    now = int(time.time())
    return _resign(
        token, _server_key(served), _claims(iat=now - 2 * HOUR, nbf=now - 2 * HOUR, exp=now - HOUR)
    )


def _not_yet_valid(token: str, served: Served) -> str:
    now = int(time.time())
    return _resign(
        token, _server_key(served), _claims(iat=now + HOUR, nbf=now + HOUR, exp=now + 2 * HOUR)
    )


def _forged(token: str, served: Served) -> str:
    return _resign(token, ec.generate_private_key(ec.SECP256R1()))


def _wrong_audience(token: str, served: Served) -> str:
    return _resign(token, _server_key(served), _claims(aud="another-registry"))


def _unsigned(token: str, served: Served) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, None, algorithm="none")


def _hmac_with_the_public_key(token: str, served: Served) -> str:
    """The old algorithm-confusion attack: HS256, keyed with the server's public key."""
    public = (
        _server_key(served)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {**jwt.get_unverified_header(token), "alg": "HS256"}
    head = _b64(json.dumps(header).encode())
    body = token.split(".")[1]
    signature = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _tampered(token: str, served: Served) -> str:
    """Claims changed (another subject), the original signature kept."""
    head, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["sub"] = "carol"
    return f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"


def _not_a_jwt(token: str, served: Served) -> str:
    return "not-a-jwt"


BAD_TOKENS: dict[str, Callable[[str, Served], str]] = {
    "expired": _expired,
    "not-yet-valid": _not_yet_valid,
    "forged-with-another-key": _forged,
    "wrong-audience": _wrong_audience,
    "alg-none": _unsigned,
    "hs256-with-the-public-key": _hmac_with_the_public_key,
    "tampered-claims": _tampered,
    "not-a-jwt": _not_a_jwt,
}


def _pull_with(served: Served, token: str) -> httpx.Response:
    with served.client(tokens=False) as client:
        return client.get(
            f"/v2/{PRIVATE}/manifests/v1", headers={"Authorization": f"Bearer {token}"}
        )


def _push_with(served: Served, name: str, token: str) -> httpx.Response:
    with served.client(tokens=False) as client:
        return client.post(
            f"/v2/{name}/blobs/uploads/", headers={"Authorization": f"Bearer {token}"}
        )


def test_a_token_re_signed_with_the_servers_key_is_accepted(token_server: Served) -> None:
    # The control for the tests below: each changes one thing about a token like this one.
    token = _token(token_server, "alice", f"repository:{PRIVATE}:pull")
    assert _pull_with(token_server, token).status_code == 200
    assert _pull_with(token_server, _resign(token, _server_key(token_server))).status_code == 200
    name = new_name()
    push = _token(token_server, "alice", f"repository:{name}:pull,push")
    response = _push_with(token_server, name, _resign(push, _server_key(token_server)))
    assert response.status_code == 202


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_token_is_refused_401_for_pull_and_push(
    token_server: Served, make: Callable[[str, Served], str]
) -> None:
    pull = _token(token_server, "alice", f"repository:{PRIVATE}:pull")
    response = _pull_with(token_server, make(pull, token_server))
    assert response.status_code == 401
    assert bearer_challenge(response) is not None
    oci_error(response, "UNAUTHORIZED")
    assert SEEDED.manifest not in response.content
    name = new_name()
    push = _token(token_server, "alice", f"repository:{name}:pull,push")
    assert _push_with(token_server, name, make(push, token_server)).status_code == 401
    with token_server.client("alice") as alice_client:
        assert alice_client.get(f"/v2/{name}/tags/list").status_code == 404


# -- connections -------------------------------------------------------------------------------


def _read_answer(conn: socket.socket) -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 response from ``conn``: its status and headers (its body is read too)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError(f"the connection closed with no (whole) answer: {data[:100]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split(" ")[1]), headers


@pytest.mark.parametrize("size", [1024, 64 * 1024, 256 * 1024], ids=["1KiB", "64KiB", "256KiB"])
def test_an_answer_that_leaves_a_body_unread_closes_the_connection(
    token_server: Served, size: int
) -> None:
    """A ``401`` to an upload answered before its body arrived: the connection then takes the
    body and serves the next request, or the answer says ``Connection: close``. A server that
    closes the connection silently breaks a client that sends its next request on it (the
    upload again, with the token the ``401`` sent it for)."""
    host, port = token_server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(
            f"PATCH /v2/{new_name()}/blobs/uploads/{uuid.uuid4().hex} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        status, headers = _read_answer(conn)  # answered before any byte of the body was sent
        assert status == 401
        if "close" in headers.get("connection", "").lower():
            return
        conn.sendall(
            blob_bytes("security/unread", size)
            + f"GET /v2/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        )
        status, _ = _read_answer(conn)
        assert status == 401
