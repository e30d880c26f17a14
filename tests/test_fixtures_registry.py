"""The registry, token-server and fault-proxy fixtures work against real peers.

Images pushed by the ``Registry`` helper are read back by skopeo (which speaks Basic and the
Docker token flow itself); the proxy's faults are observed with raw sockets and httpx.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.proxy import FaultProxy, ProxyFactory
from fixtures.registry import MANIFEST_TYPES, Registry, RegistryAuth, RegistryFactory, run_registry
from fixtures.tokens import libtrust_key_id, run_token_server

from ocimirror.core.digest import Digest
from ocimirror.testing import Image, Index, random_image, random_index

FLAVOURS = ["docker_registry", "docker_registry_basic", "docker_registry_token"]

IMAGES: dict[str, Callable[[], Image | Index]] = {
    "oci-image": lambda: random_image(seed="fixtures/oci"),
    "docker-image": lambda: random_image(seed="fixtures/docker", docker=True),
    "oci-index": lambda: random_index(seed="fixtures/oci-index"),
    "docker-list": lambda: random_index(seed="fixtures/docker-list", docker=True),
}


@pytest.fixture
def skopeo(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run skopeo with no stored credentials, no registries.conf mirrors and no proxy."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (Debian package skopeo)")
    auth = tmp_path / "skopeo-auth.json"
    auth.write_text('{"auths": {}}')
    conf = tmp_path / "registries.conf"
    conf.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env |= {"REGISTRY_AUTH_FILE": str(auth), "CONTAINERS_REGISTRIES_CONF": str(conf)}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            ["skopeo", *args], capture_output=True, env=env, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"skopeo {' '.join(args)} failed:\n{result.stderr.decode()}")
        return result

    return run


def inspect_raw(
    skopeo: Callable[..., subprocess.CompletedProcess[bytes]],
    registry: Registry,
    reference: str,
    *,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    creds = ["--creds", registry.creds] if registry.creds else []
    return skopeo(
        "inspect", "--raw", "--tls-verify=false", *creds, f"docker://{reference}", check=check
    )


# -- the registry flavours ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", IMAGES)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_pushed_images_read_back_byte_identical_with_skopeo(
    request: pytest.FixtureRequest,
    flavour: str,
    kind: str,
    registry_name: str,
    skopeo: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    """Each flavour serves what the helper pushed, to skopeo, with the pushed digest."""
    registry: Registry = request.getfixturevalue(flavour)
    image = IMAGES[kind]()
    assert registry.push(registry_name, image, tag="v1") == image.digest

    raw = inspect_raw(skopeo, registry, registry.reference(registry_name, "v1")).stdout
    assert Digest.of(raw) == image.digest
    assert registry.tags(registry_name) == ["v1"]
    assert registry.manifest_digest(registry_name, "v1") == image.digest
    assert registry.manifest(registry_name, "v1") == (image.manifest, image.media_type)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_index_children_are_pushed_by_digest(
    request: pytest.FixtureRequest,
    flavour: str,
    registry_name: str,
    skopeo: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    """Every child of a pushed index is there by digest, with its blobs."""
    registry: Registry = request.getfixturevalue(flavour)
    index = random_index(seed="fixtures/children", platforms=("linux/amd64", "linux/s390x"))
    registry.push(registry_name, index)  # by digest only: no tag

    assert registry.tags(registry_name) == []
    for child in index.children:
        assert isinstance(child, Image)
        ref = registry.reference(registry_name, str(child.digest))
        assert Digest.of(inspect_raw(skopeo, registry, ref).stdout) == child.digest
        for blob in child.blobs():
            assert registry.blob(registry_name, blob.digest) == blob.data


def test_delete_manifest_untags_it(docker_registry: Registry, registry_name: str) -> None:
    """Deleting by digest works (storage.delete.enabled) and drops the tag."""
    image = random_image(seed="fixtures/delete", layers=1)
    docker_registry.push(registry_name, image, tag="gone")
    docker_registry.push(registry_name, random_image(seed="fixtures/keep", layers=1), tag="kept")

    docker_registry.delete_manifest(registry_name, image.digest)

    assert docker_registry.tags(registry_name) == ["kept"]
    with docker_registry.client() as client:
        assert client.head(f"/v2/{registry_name}/manifests/{image.digest}").status_code == 404


def test_tags_of_a_missing_repository_are_empty(docker_registry: Registry) -> None:
    """``tags`` answers ``[]`` for a repository that was never pushed."""
    assert docker_registry.tags("test/never-pushed") == []


@pytest.mark.parametrize("flavour", ["docker_registry_basic", "docker_registry_token"])
def test_anonymous_requests_are_refused(
    request: pytest.FixtureRequest,
    flavour: str,
    registry_name: str,
    skopeo: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    """Without credentials the auth flavours answer 401 with a challenge; skopeo fails too."""
    registry: Registry = request.getfixturevalue(flavour)
    registry.push(registry_name, random_image(seed="fixtures/private", layers=1), tag="v1")

    with registry.client(authenticate=False) as client:
        response = client.get(f"/v2/{registry_name}/manifests/v1")
    assert response.status_code == 401
    scheme = response.headers["WWW-Authenticate"].split(" ", 1)[0]
    assert scheme == ("Basic" if flavour.endswith("basic") else "Bearer")

    anonymous = Registry(registry.url)
    result = inspect_raw(skopeo, anonymous, anonymous.reference(registry_name, "v1"), check=False)
    assert result.returncode != 0
    assert b"unauthorized" in result.stderr.lower() or b"401" in result.stderr


def test_wrong_password_is_refused(docker_registry_basic: Registry, registry_name: str) -> None:
    """The htpasswd file is really checked (bcrypt)."""
    assert docker_registry_basic.username is not None
    wrong = Registry(
        docker_registry_basic.url, username=docker_registry_basic.username, password="wrong"
    )
    with wrong.client() as client:
        assert client.get(f"/v2/{registry_name}/tags/list").status_code == 401
    with docker_registry_basic.client() as client:
        assert client.get("/v2/").status_code == 200


# -- the token server ---------------------------------------------------------------------------


def test_token_server_counts_token_requests(
    docker_registry_token: Registry,
    registry_name: str,
    skopeo: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    """One token covers a whole push; skopeo asks for its own pull token, with credentials."""
    tokens = docker_registry_token.token_server
    assert tokens is not None and tokens.count == 0
    image = random_image(seed="fixtures/count")

    docker_registry_token.push(registry_name, image, tag="v1")
    assert tokens.count == 1
    (push,) = tokens.requests
    # Distribution lists the actions in no fixed order.
    (scope,) = push.scopes
    prefix, _, actions = scope.rpartition(":")
    assert prefix == f"repository:{registry_name}"
    assert sorted(actions.split(",")) == ["pull", "push"]
    assert push.service == "test-registry" and push.status == 200
    ((kind, name, granted),) = push.granted
    assert (kind, name, sorted(granted)) == ("repository", registry_name, ["pull", "push"])

    inspect_raw(skopeo, docker_registry_token, docker_registry_token.reference(registry_name, "v1"))
    pulls = tokens.requests[1:]
    assert pulls and all(r.username == docker_registry_token.username for r in pulls)
    assert f"repository:{registry_name}:pull" in {s for r in pulls for s in r.scopes}


def test_token_server_refuses_anonymous_and_wrong_credentials(
    docker_registry_token: Registry, registry_name: str
) -> None:
    """With ``require_credentials`` the token endpoint itself answers 401."""
    tokens = docker_registry_token.token_server
    assert tokens is not None
    params = {"service": "test-registry", "scope": f"repository:{registry_name}:pull"}
    with httpx.Client(trust_env=False) as client:
        assert client.get(tokens.realm, params=params).status_code == 401
        wrong = client.get(tokens.realm, params=params, auth=("tester", "wrong"))
        assert wrong.status_code == 401
        assert docker_registry_token.credentials is not None
        right = client.get(tokens.realm, params=params, auth=docker_registry_token.credentials)
    assert right.status_code == 200
    body = right.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")
    assert [r.status for r in tokens.requests] == [401, 401, 200]


def test_token_server_answers_the_oauth2_password_grant(
    docker_registry_token: Registry, registry_name: str
) -> None:
    """``POST /token`` with a form gives an ``access_token`` the registry accepts."""
    tokens = docker_registry_token.token_server
    assert tokens is not None and docker_registry_token.credentials is not None
    username, password = docker_registry_token.credentials
    form = {
        "grant_type": "password",
        "service": "test-registry",
        "scope": f"repository:{registry_name}:pull repository:test/other:pull",
        "client_id": "ocimirror-tests",
        "username": username,
        "password": password,
    }
    with httpx.Client(trust_env=False) as client:
        answer = client.post(tokens.realm, data=form)
        refused = client.post(tokens.realm, data={**form, "password": "wrong"})
        unsupported = client.post(tokens.realm, data={**form, "grant_type": "refresh_token"})
        token = answer.json()["access_token"]
        listed = client.get(
            f"{docker_registry_token.url}/v2/{registry_name}/tags/list",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 200 and answer.json()["scope"] == form["scope"]
    assert (refused.status_code, unsupported.status_code) == (401, 400)
    assert listed.status_code == 404  # authorised; the repository just does not exist
    assert tokens.requests[0].method == "POST"
    assert len(tokens.requests[0].granted) == 2


def test_anonymous_pull_can_be_allowed(docker_registry_token: Registry, registry_name: str) -> None:
    """``anonymous_pull``: anonymous clients get pull-only tokens; their pushes are refused."""
    tokens = docker_registry_token.token_server
    assert tokens is not None
    image = random_image(seed="fixtures/public", layers=1)
    docker_registry_token.push(registry_name, image, tag="v1")
    tokens.require_credentials = False
    tokens.anonymous_pull = True

    anonymous = Registry(docker_registry_token.url)
    assert anonymous.manifest_digest(registry_name, "v1") == image.digest
    with anonymous.client() as client:
        started = client.post(f"/v2/{registry_name}/blobs/uploads/")
    assert started.status_code == 401
    assert tokens.requests[-1].username is None
    assert tokens.requests[-1].granted == (("repository", registry_name, ("pull",)),)
    anonymous.close()


def test_anonymous_tokens_grant_nothing_without_anonymous_pull(
    docker_registry_token: Registry, registry_name: str
) -> None:
    """Docker Hub style: an anonymous token for a private repository is issued but empty."""
    tokens = docker_registry_token.token_server
    assert tokens is not None
    tokens.require_credentials = False
    anonymous = Registry(docker_registry_token.url)
    with anonymous.client() as client:
        assert client.get(f"/v2/{registry_name}/tags/list").status_code == 401
    assert [(r.status, r.granted) for r in tokens.requests] == [(200, ())]


@pytest.mark.parametrize("key_header", ["kid", "x5c"])
def test_distribution_accepts_either_key_header(
    key_header: str,
    tmp_path: Path,
    docker_registry_factory: RegistryFactory,
    registry_name: str,
    skopeo: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    """Distribution 2.8 finds the signing key by libtrust ``kid`` or by the ``x5c`` chain."""
    with run_token_server(
        tmp_path / "tokens", users={"alice": "s3cret"}, key_header=key_header
    ) as tokens:
        registry = docker_registry_factory(auth="token", username="alice", token_server=tokens)
        image = random_index(seed=f"fixtures/{key_header}")
        registry.push(registry_name, image, tag="v1")
        raw = inspect_raw(skopeo, registry, registry.reference(registry_name, "v1")).stdout
        assert Digest.of(raw) == image.digest
        assert tokens.count >= 2


def test_libtrust_key_id_has_twelve_groups_of_four(tmp_path: Path) -> None:
    """The ``kid`` format: 48 base32 characters in 12 groups of 4, of the certified key."""
    with run_token_server(tmp_path) as tokens:
        groups = tokens.key_id.split(":")
        cert = x509.load_pem_x509_certificate(tokens.cert_path.read_bytes())
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert libtrust_key_id(public_key) == tokens.key_id


def test_registry_refuses_tokens_it_should_not_trust(
    docker_registry_token: Registry, registry_name: str, tmp_path: Path
) -> None:
    """Foreign key, wrong audience, wrong issuer, expired or too narrow: all refused."""
    tokens = docker_registry_token.token_server
    assert tokens is not None
    docker_registry_token.push(registry_name, random_image(seed="fixtures/trust"), tag="v1")
    pull = [("repository", registry_name, ("pull",))]
    with run_token_server(tmp_path / "other") as stranger:
        foreign = stranger.issue(pull)
    bad = {
        "foreign key": foreign,
        "audience": tokens.issue(pull, audience="another-registry"),
        "issuer": tokens.issue(pull, issuer="another-issuer"),
        "expired": tokens.issue(pull, now=time.time() - 3600),
        "other repository": tokens.issue([("repository", "test/other", ("pull",))]),
    }
    url = f"{docker_registry_token.url}/v2/{registry_name}/manifests/v1"
    accept = {"Accept": ",".join(MANIFEST_TYPES)}
    with httpx.Client(trust_env=False, headers=accept) as client:
        for reason, token in bad.items():
            response = client.head(url, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, reason
        good = client.head(url, headers={"Authorization": f"Bearer {tokens.issue(pull)}"})
    assert good.status_code == 200


def test_expired_knob_issues_tokens_the_registry_refuses(
    docker_registry_token: Registry, registry_name: str
) -> None:
    """``expired``: the token response looks fresh but the registry rejects the token."""
    tokens = docker_registry_token.token_server
    assert tokens is not None
    tokens.expired = True
    with docker_registry_token.client() as client:
        assert client.get(f"/v2/{registry_name}/tags/list").status_code == 401
    assert tokens.requests[-1].status == 200


# -- process handling ---------------------------------------------------------------------------


def test_factory_registries_are_isolated(
    docker_registry: Registry, docker_registry_factory: RegistryFactory, registry_name: str
) -> None:
    """A factory registry has its own storage, and its own config merged in."""
    fresh = docker_registry_factory(config={"log": {"level": "info"}})
    assert fresh.url != docker_registry.url and fresh.storage != docker_registry.storage
    fresh.push(registry_name, random_image(seed="fixtures/isolated", layers=1), tag="v1")
    assert fresh.tags(registry_name) == ["v1"]
    assert docker_registry.tags(registry_name) == []
    assert fresh.storage is not None and (fresh.storage / "docker").is_dir()


def test_registry_is_killed_on_exit_even_after_a_failure(tmp_path: Path) -> None:
    """The process is gone once ``run_registry`` exits, also when the body raised."""
    with pytest.raises(RuntimeError), run_registry(tmp_path) as registry:
        with httpx.Client(trust_env=False) as client:
            assert client.get(f"{registry.url}/v2/").status_code == 200
        raise RuntimeError("test failed")
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(registry.host.rsplit(":", 1)[1]))) != 0


def test_servers_listen_on_loopback_only(
    docker_registry: Registry, docker_registry_token: Registry, registry_proxy: FaultProxy
) -> None:
    """Every URL the fixtures hand out is on 127.0.0.1, and the config binds there."""
    assert docker_registry_token.token_server is not None
    for url in (
        docker_registry.url,
        docker_registry_token.url,
        docker_registry_token.token_server.url,
        registry_proxy.url,
    ):
        assert url.startswith("http://127.0.0.1:")
    assert docker_registry.log_path is not None
    config = json.loads((docker_registry.log_path.parent / "config.yml").read_text())
    assert config["http"]["addr"] == docker_registry.host


def test_registry_auth_parses_challenges_with_commas() -> None:
    """Scopes with several actions survive the challenge parser."""
    auth = RegistryAuth(None, None)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("Authorization") == "Bearer t":
            return httpx.Response(200)
        challenge = 'Bearer realm="http://x/token",service="s",scope="repository:a/b:pull,push"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        assert client.get("http://x/v2/a/b/tags/list").status_code == 200
        assert client.get("http://x/v2/a/b/tags/list").status_code == 200
    assert seen[1].url.params["scope"] == "repository:a/b:pull,push"
    assert len(seen) == 4  # challenge, token, retry; then the cached token is used at once


# -- the fault proxy -----------------------------------------------------------------------------

BIG = 3 * 2**20


@pytest.fixture
def big_image(docker_registry: Registry, registry_name: str) -> Image:
    """A one-layer image of about 3 MiB, pushed straight to the upstream."""
    image = random_image(seed="fixtures/big", layers=1, layer_size=BIG)
    docker_registry.push(registry_name, image, tag="big")
    return image


def _client(proxy: FaultProxy) -> httpx.Client:
    """A plain client to the proxy that accepts every manifest type."""
    return httpx.Client(
        base_url=proxy.url, trust_env=False, headers={"Accept": ",".join(MANIFEST_TYPES)}
    )


def _blob_path(name: str, image: Image) -> str:
    return f"/v2/{name}/blobs/{image.layers[0].digest}"


def _raw_get(proxy: FaultProxy, path: str, timeout: float = 10.0) -> tuple[bytes, bytes, str]:
    """``(head, body, how it ended)`` of a GET over a raw socket: "eof" or "reset"."""
    with socket.create_connection(("127.0.0.1", int(proxy.host.rsplit(":", 1)[1]))) as sock:
        sock.settimeout(timeout)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode())
        data = b""
        ended = "eof"
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            ended = "reset"
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body, ended


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no Content-Length in {head!r}")


def test_proxy_passes_a_full_blob_through(
    registry_proxy: FaultProxy, big_image: Image, registry_name: str
) -> None:
    """A multi-MiB blob arrives intact, with the upstream's headers."""
    layer = big_image.layers[0]
    with _client(registry_proxy) as client:
        response = client.get(_blob_path(registry_name, big_image))
    assert response.status_code == 200
    assert response.content == layer.data
    assert response.headers["Docker-Content-Digest"] == str(layer.digest)
    assert int(response.headers["Content-Length"]) == layer.size
    (seen,) = registry_proxy.requests
    assert (seen.method, seen.path, seen.status, seen.fault) == (
        "GET",
        _blob_path(registry_name, big_image),
        200,
        None,
    )


def test_proxy_passes_range_requests_through(
    registry_proxy: FaultProxy, big_image: Image, registry_name: str
) -> None:
    """``Range`` goes upstream and the ``206`` comes back with its ``Content-Range``."""
    data = big_image.layers[0].data
    with _client(registry_proxy) as client:
        response = client.get(
            _blob_path(registry_name, big_image), headers={"Range": "bytes=1000-1999"}
        )
    assert response.status_code == 206
    assert response.content == data[1000:2000]
    assert response.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert registry_proxy.requests[0].range == "bytes=1000-1999"
    assert registry_proxy.requests[0].status == 206


def test_pushes_through_the_proxy_follow_rewritten_locations(
    docker_registry: Registry, registry_proxy: FaultProxy, registry_name: str
) -> None:
    """Upload ``Location``s point at the proxy, so a whole push goes through it."""
    image = random_image(seed="fixtures/through", layers=2, layer_size=200_000)
    via = docker_registry.with_url(registry_proxy.url)
    with via.client() as client:
        started = client.post(f"/v2/{registry_name}/blobs/uploads/")
        assert started.headers["Location"].startswith(registry_proxy.url + "/v2/")
        client.delete(started.headers["Location"])
    via.push(registry_name, image, tag="v1")
    via.close()

    assert docker_registry.manifest_digest(registry_name, "v1") == image.digest
    puts = [r for r in registry_proxy.requests if r.method == "PUT"]
    assert len(puts) == 4  # config, two layers, manifest
    assert all(r.status == 201 for r in puts)


def test_skopeo_copies_through_the_proxy(
    registry_proxy: FaultProxy,
    big_image: Image,
    registry_name: str,
    tmp_path: Path,
    skopeo: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    """A real client pulls a whole image through the proxy and verifies every digest."""
    source = f"docker://{registry_proxy.host}/{registry_name}:big"
    skopeo("copy", "--src-tls-verify=false", source, f"dir:{tmp_path / 'out'}")
    layer = big_image.layers[0]
    assert (tmp_path / "out" / layer.digest.hex).read_bytes() == layer.data
    assert any(r.path.endswith(str(layer.digest)) for r in registry_proxy.requests)


def test_status_faults_answer_the_next_n_matching_requests(
    registry_proxy: FaultProxy, big_image: Image, registry_name: str
) -> None:
    """A burst of 503s on manifests only, then normal service; blobs are never touched."""
    registry_proxy.status(503, 2, method="GET", path=r"/manifests/")
    registry_proxy.status(
        429, headers={"Retry-After": "7"}, body=b'{"errors":[]}', path="/tags/list$"
    )
    manifest = f"/v2/{registry_name}/manifests/big"
    with _client(registry_proxy) as client:
        assert client.get(_blob_path(registry_name, big_image)).status_code == 200
        assert client.head(manifest).status_code == 200  # HEAD does not match
        assert [client.get(manifest).status_code for _ in range(3)] == [503, 503, 200]
        limited = client.get(f"/v2/{registry_name}/tags/list")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "7" and limited.content == b'{"errors":[]}'
        assert client.get(f"/v2/{registry_name}/tags/list").status_code == 200
    assert registry_proxy.armed == 0
    assert [(r.status, r.fault) for r in registry_proxy.requests] == [
        (200, None),
        (200, None),
        (503, "status"),
        (503, "status"),
        (200, None),
        (429, "status"),
        (200, None),
    ]


def test_reset_mid_body_sends_part_then_resets(
    registry_proxy: FaultProxy, big_image: Image, registry_name: str
) -> None:
    """Headers and exactly ``after_bytes`` of body, then a TCP reset; httpx sees a read error."""
    data = big_image.layers[0].data
    registry_proxy.reset_mid_body(100_000, path="/blobs/")
    head, body, ended = _raw_get(registry_proxy, _blob_path(registry_name, big_image))
    assert head.startswith(b"HTTP/1.1 200") and _content_length(head) == len(data)
    assert body == data[:100_000] and ended == "reset"

    registry_proxy.reset_mid_body(10, path="/blobs/")
    with (
        _client(registry_proxy) as client,
        pytest.raises(httpx.ReadError),
    ):
        client.get(_blob_path(registry_name, big_image))
    assert [r.fault for r in registry_proxy.requests] == ["reset", "reset"]


def test_truncate_sends_less_than_content_length_then_closes(
    registry_proxy: FaultProxy, big_image: Image, registry_name: str
) -> None:
    """Fewer bytes than ``Content-Length``, then a clean close; httpx sees a protocol error."""
    data = big_image.layers[0].data
    registry_proxy.truncate(70_000, times=2, path="/blobs/")
    head, body, ended = _raw_get(registry_proxy, _blob_path(registry_name, big_image))
    assert _content_length(head) == len(data)
    assert body == data[:70_000] and ended == "eof"

    with (
        _client(registry_proxy) as client,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        client.get(_blob_path(registry_name, big_image))


def test_corrupt_flips_one_byte_and_keeps_the_length(
    registry_proxy: FaultProxy, big_image: Image, registry_name: str
) -> None:
    """One byte differs (all bits flipped), everything else and the length are intact."""
    data = big_image.layers[0].data
    offset = 2 * 2**20 + 17  # well past the first read chunk
    registry_proxy.corrupt(offset, path="/blobs/")
    with _client(registry_proxy) as client:
        bad = client.get(_blob_path(registry_name, big_image)).content
        good = client.get(_blob_path(registry_name, big_image)).content
    assert len(bad) == len(data) and good == data
    assert [i for i in range(len(data)) if bad[i] != data[i]] == [offset]
    assert bad[offset] == data[offset] ^ 0xFF
    assert hashlib.sha256(bad).hexdigest() != big_image.layers[0].digest.hex


def test_stall_pauses_mid_body_without_blocking_other_connections(
    registry_proxy: FaultProxy, big_image: Image, registry_name: str
) -> None:
    """The first bytes come at once, the rest after the pause; meanwhile others are served."""
    data = big_image.layers[0].data
    registry_proxy.stall(0.6, after_bytes=50_000, path="/blobs/")
    other: list[tuple[int, float]] = []

    def fetch_manifest_meanwhile() -> None:
        time.sleep(0.1)
        with _client(registry_proxy) as client:
            status = client.get(f"/v2/{registry_name}/manifests/big").status_code
        other.append((status, time.monotonic()))

    thread = threading.Thread(target=fetch_manifest_meanwhile)
    with _client(registry_proxy) as client:
        start = time.monotonic()
        with client.stream("GET", _blob_path(registry_name, big_image)) as response:
            thread.start()
            received = b""
            first_at = None
            for chunk in response.iter_raw():
                received += chunk
                if first_at is None and len(received) >= 50_000:
                    first_at = time.monotonic() - start
        done = time.monotonic()
    thread.join()
    assert received == data
    assert first_at is not None and first_at < 0.5
    assert done - start >= 0.6
    ((status, other_done),) = other
    assert status == 200 and other_done < done


def test_proxy_serves_concurrent_downloads(
    registry_proxy: FaultProxy, big_image: Image, registry_name: str
) -> None:
    """Eight simultaneous multi-MiB downloads all complete intact."""
    data = big_image.layers[0].data
    results: list[bytes] = []
    lock = threading.Lock()

    def download() -> None:
        with _client(registry_proxy) as client:
            body = client.get(_blob_path(registry_name, big_image)).content
        with lock:
            results.append(body)

    threads = [threading.Thread(target=download) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 8 and all(body == data for body in results)


class _Redirector(BaseHTTPRequestHandler):
    """An upstream that redirects: to itself (absolute and relative) and to another host."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        host, port = self.connection.getsockname()[:2]
        targets = {
            "/v2/self": f"http://{host}:{port}/v2/target?x=1",
            "/v2/relative": "/v2/target",
            "/v2/elsewhere": "http://127.0.0.2:9/v2/target",
        }
        if self.path in targets:
            self.send_response(307)
            self.send_header("Location", targets[self.path])
            self.send_header("Content-Length", "0")
        else:
            self.send_response(200)
            self.send_header("Content-Length", "2")
        self.end_headers()
        if self.path not in targets:
            self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_proxy_rewrites_redirects_to_the_upstream_and_does_not_follow_them(
    fault_proxy_factory: ProxyFactory,
) -> None:
    """A ``Location`` on the upstream now names the proxy; other ones pass unchanged."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        proxy = fault_proxy_factory(f"http://127.0.0.1:{upstream.server_address[1]}")
        with _client(proxy) as client:
            locations = {
                path: client.get(path).headers["Location"]
                for path in ("/v2/self", "/v2/relative", "/v2/elsewhere")
            }
            followed = client.get("/v2/self", follow_redirects=True)
    finally:
        upstream.shutdown()
        upstream.server_close()
        thread.join()
    assert locations == {
        "/v2/self": f"{proxy.url}/v2/target?x=1",
        "/v2/relative": "/v2/target",
        "/v2/elsewhere": "http://127.0.0.2:9/v2/target",
    }
    assert followed.content == b"ok"
    assert [r.status for r in proxy.requests] == [307, 307, 307, 307, 200]


def test_proxy_answers_502_when_the_upstream_is_down(fault_proxy_factory: ProxyFactory) -> None:
    """A refused upstream connection becomes a 502, recorded like any answer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    proxy = fault_proxy_factory(f"http://127.0.0.1:{port}")
    with _client(proxy) as client:
        assert client.get("/v2/").status_code == 502
    assert proxy.requests[0].status == 502


def test_fault_proxy_factory_fronts_any_upstream(
    docker_registry_basic: Registry, fault_proxy_factory: ProxyFactory, registry_name: str
) -> None:
    """A proxy before an auth registry passes challenges and credentials through."""
    proxy = fault_proxy_factory(docker_registry_basic.url)
    via = docker_registry_basic.with_url(proxy.url)
    image = random_image(seed="fixtures/basic-proxy", layers=1)
    via.push(registry_name, image, tag="v1")
    assert via.manifest_digest(registry_name, "v1") == image.digest
    via.close()
    statuses = [r.status for r in proxy.requests]
    assert statuses[0] == 401 and 201 in statuses
    assert any("authorization" in r.headers for r in proxy.requests)


@pytest.mark.parametrize("server", ["werkzeug", "granian"])
def test_moto_serves_s3_either_way_and_granian_keeps_connections(server: str) -> None:
    """The benchmark's two ways of serving moto both store and return an object; granian keeps
    the connection open between requests, moto's own server closes it every time."""
    from fixtures.s3 import moto_server

    with moto_server(server) as s3:
        client = s3.client()
        client.create_bucket(Bucket="fixture-check")
        client.put_object(Bucket="fixture-check", Key="k", Body=b"bytes")
        got = client.get_object(Bucket="fixture-check", Key="k")["Body"].read()
        assert got == b"bytes"
        with httpx.Client(timeout=10) as http:
            answers = [http.get(f"{s3.endpoint_url}/moto-api/") for _ in range(2)]
        closing = [a.headers.get("connection", "").lower() == "close" for a in answers]
        assert closing == ([True, True] if server == "werkzeug" else [False, False])
