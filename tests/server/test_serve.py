"""``serve()``: granian in a subprocess over a prepared home, pulled by skopeo, HTTP and HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fixtures.processes import server_process
from server_harness import IMAGES, populate

from ocimirror import AsyncRegistry
from ocimirror.errors import InvalidError
from ocimirror.server.serve import serve

SKOPEO = shutil.which("skopeo")
V1 = IMAGES["v1"]
MULTI = IMAGES["multi"]


#: The process id of each running server, by base URL.
SERVERS: dict[str, int] = {}


@contextmanager
def running(home: Path, log: Path, **options: object) -> Iterator[str]:
    """Run ``serve(**options)`` in a subprocess with ``OCIMIRROR_HOME=home``; its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCIMIRROR_")}
    env["OCIMIRROR_HOME"] = str(home)

    def command(port: int) -> list[str]:
        code = (
            "from ocimirror.server.serve import serve\n"
            f"serve(port={port}, log_level='warning', **{options!r})\n"
        )
        return [sys.executable, "-c", code]

    scheme = "https" if options.get("certfile") else "http"
    with server_process(command, env=env, log=log, ready="/v2/", scheme=scheme) as (url, proc):
        SERVERS[url] = proc.pid
        try:
            yield url
        finally:
            SERVERS.pop(url, None)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home holding the ``world`` content (SQLite and files)."""
    tmp = tmp_path_factory.mktemp("serve")

    async def prepare() -> None:
        registry = await AsyncRegistry.open(home=tmp / "home")
        try:
            await populate(registry, tmp)
        finally:
            await registry.close()

    asyncio.run(prepare())
    return tmp / "home"


@pytest.fixture(scope="module")
def http_url(home: Path) -> Iterator[str]:
    """serve() over plain HTTP with two workers."""
    with running(home, home.parent / "http.log", workers=2) as url:
        yield url


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@pytest.fixture(scope="module")
def https_url(home: Path) -> Iterator[str]:
    """serve() over HTTPS with a self-signed certificate."""
    certfile, keyfile = _self_signed(home.parent)
    with running(
        home, home.parent / "https.log", certfile=str(certfile), keyfile=str(keyfile)
    ) as url:
        yield url


def skopeo(*args: str) -> str:
    """Run skopeo (skipping the test when it is not installed); its standard output."""
    if SKOPEO is None:
        pytest.skip("skopeo is not installed")
    done = subprocess.run(
        [SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _client_hello() -> bytes:
    """The first bytes a TLS client sends: a real ClientHello from Python's ssl module."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_serve_challenges_an_anonymous_version_check_with_token_auth(http_url: str) -> None:
    response = httpx.get(f"{http_url}/v2/", trust_env=False)
    assert response.status_code == 401
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{http_url}/token"' in challenge


def test_serve_without_auth_answers_the_version_check(home: Path) -> None:
    with running(home, home.parent / "noauth.log", auth=False) as url:
        response = httpx.get(f"{url}/v2/", trust_env=False)
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


def test_a_tls_client_hello_to_the_plain_port_is_answered_or_closed_at_once(
    http_url: str,
) -> None:
    host, port = http_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(_client_hello())
        with contextlib.suppress(ConnectionError):  # a reset is a prompt close too
            sock.recv(65536)  # an answer, or b"" when closed
        elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the server kept a TLS client waiting {elapsed:.1f}s"


def test_skopeo_inspects_an_image_over_http(http_url: str) -> None:
    host = http_url.removeprefix("http://")
    out = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{host}/library/app:v1"))
    assert out["Digest"] == str(V1.digest)
    assert out["RepoTags"] == ["dlist", "docker", "empty", "later", "multi", "v1"]


def test_skopeo_copies_a_multi_platform_index_digests_intact(http_url: str, tmp_path: Path) -> None:
    host = http_url.removeprefix("http://")
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/library/app:multi")
    assert raw.encode() == MULTI.manifest
    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        f"docker://{host}/library/app:multi",
        f"oci:{tmp_path / 'copy'}:multi",
    )
    index = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [str(MULTI.digest)]


def test_serve_speaks_https_with_a_certificate_and_key(https_url: str) -> None:
    response = httpx.get(f"{https_url}/v2/", verify=False, trust_env=False)
    assert response.status_code == 401
    assert f'realm="{https_url}/token"' in response.headers["www-authenticate"]
    host = https_url.removeprefix("https://")
    out = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{host}/library/app:v1"))
    assert out["Digest"] == str(V1.digest)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"certfile": "cert.pem"}, id="a certificate without its key is refused"),
        pytest.param({"keyfile": "key.pem"}, id="a key without its certificate is refused"),
        pytest.param(
            {"certfile": "missing.pem", "keyfile": "missing.pem"},
            id="a certificate that is not a file is refused",
        ),
        pytest.param({"workers": 0}, id="zero workers are refused"),
        pytest.param({"log_level": "loud"}, id="an unknown log level is refused"),
        pytest.param({"token_key": "missing.pem"}, id="a token key that is not a file is refused"),
    ],
)
def test_serve_refuses_bad_options_before_starting(
    options: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidError):
        serve(home=tmp_path, **options)  # type: ignore[arg-type]


def _rss_peak(pid: int) -> int:
    """The peak resident set of a process and its children, in bytes (VmHWM)."""
    total = 0
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total = max(total, int(line.split()[1]) * 1024)
    return total


def test_a_chunked_upload_completes_across_two_worker_processes(home: Path) -> None:
    """Each request on a new connection, so the chunks may reach either worker."""
    data = os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with running(home, home.parent / "workers.log", workers=2, auth=False) as url:
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=url, trust_env=False, limits=fresh, timeout=60) as client:
            location = client.post("/v2/pushed/chunks/blobs/uploads/").headers["location"]
            for start in range(0, len(data), 1 << 20):
                chunk = data[start : start + (1 << 20)]
                end = start + len(chunk) - 1
                answer = client.patch(
                    location, content=chunk, headers={"content-range": f"{start}-{end}"}
                )
                assert answer.status_code == 202, answer.text
                assert client.get(location).headers["range"] == f"0-{end}"
            done = client.put(location, params={"digest": digest})
            assert done.status_code == 201, done.text
            assert client.get(f"/v2/pushed/chunks/blobs/{digest}").content == data


def test_a_large_blob_streams_through_a_push_in_constant_memory(home: Path) -> None:
    """A 512 MiB layer, streamed in one PATCH: the server's peak RSS barely moves."""
    size, piece = 512 << 20, os.urandom(1 << 20)
    hasher = hashlib.sha256()
    for _ in range(size // len(piece)):
        hasher.update(piece)
    digest = f"sha256:{hasher.hexdigest()}"

    def body() -> Iterator[bytes]:
        for _ in range(size // len(piece)):
            yield piece

    with running(home, home.parent / "large.log", auth=False) as url:
        server = SERVERS[url]
        with httpx.Client(base_url=url, trust_env=False, timeout=300) as client:
            location = client.post("/v2/pushed/large/blobs/uploads/").headers["location"]
            client.patch(location, content=b"x")  # warm up the upload path
            client.delete(location)
            before = _rss_peak(server)
            location = client.post("/v2/pushed/large/blobs/uploads/").headers["location"]
            assert client.patch(location, content=body()).status_code == 202
            assert client.put(location, params={"digest": digest}).status_code == 201
            after = _rss_peak(server)
            head = client.head(f"/v2/pushed/large/blobs/{digest}")
            assert int(head.headers["content-length"]) == size
    assert after - before < 64 << 20, f"peak RSS grew by {(after - before) >> 20} MiB"


def test_serve_signs_with_the_given_key_and_names_the_given_realm(home: Path) -> None:
    """``--token-key`` and ``--token-realm`` (hosts behind a proxy, sharing one key)."""
    import jwt

    key = ec.generate_private_key(ec.SECP256R1())
    pem = home.parent / "shared-key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    realm = "https://registry.example/auth/token"
    with running(home, home.parent / "token.log", token_key=str(pem), token_realm=realm) as url:
        challenge = httpx.get(f"{url}/v2/", trust_env=False).headers["www-authenticate"]
        token = httpx.get(f"{url}/token?service=ocimirror", trust_env=False).json()["token"]
    assert f'realm="{realm}"' in challenge
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], audience="ocimirror")
    assert claims["iss"] == "ocimirror"
