"""The HTTP stacks under ``RegistryClient`` (aiohttp, the default, and httpx's own), each
against real servers on loopback: what the client relies on holds on both.

Which stack is used, and how it is chosen; a real ``docker-registry``, with faults injected by
the fault proxy (cut bodies, resets, stalls); bodies read in constant memory; a malformed
answer, a timeout and a dropped kept-alive connection; TLS with a custom CA (PEM text, file,
``ssl.SSLContext``) and without verification; a forward proxy, given or from the environment,
for HTTP and (CONNECT) HTTPS; redirects followed by the client's own code, one hop at a time;
cookies; long header lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import http.client
import ipaddress
import select
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fixtures.proxy import FaultProxy
from fixtures.registry import Registry

from ocimirror.core.digest import Digest
from ocimirror.errors import UpstreamError
from ocimirror.testing import random_image
from ocimirror.upstream import RegistryClient
from ocimirror.upstream.client import (
    DEFAULT_HTTP_BACKEND,
    HTTP_BACKEND_ENV,
    HTTP_BACKENDS,
)

_T = TypeVar("_T")

BACKENDS = pytest.mark.parametrize("backend", HTTP_BACKENDS)

BLOB = bytes(range(256)) * 1000  # 256,000 bytes
BLOB_DIGEST = Digest.of(BLOB)
NAME = "team/app"


def run(client: RegistryClient, call: Callable[[RegistryClient], Awaitable[_T]]) -> _T:
    """Run one call against ``client`` in a fresh event loop, then close the client."""

    async def main() -> _T:
        async with client:
            return await call(client)

    return asyncio.run(main())


@attrs.define
class _Writer:
    expected: Digest | None
    data: bytearray = attrs.field(factory=bytearray)

    @property
    def size(self) -> int:
        return len(self.data)

    async def write(self, chunk: bytes) -> None:
        self.data += chunk

    async def commit(self) -> Digest:
        got = Digest.of(bytes(self.data))
        assert self.expected is None or got == self.expected, "stored bytes that do not verify"
        return got

    async def abort(self) -> None:
        self.data.clear()


class Sink:
    """Keeps what was written, for checks; refuses to commit bytes that do not verify."""

    def __init__(self) -> None:
        self.writers: list[_Writer] = []

    def writer(self, *, expected: Digest | None = None, size: int | None = None) -> _Writer:
        self.writers.append(_Writer(expected))
        return self.writers[-1]


class _HashWriter:
    def __init__(self, sink: HashSink, expected: Digest | None) -> None:
        self.sink, self.expected = sink, expected
        self.hash = hashlib.sha256()
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.size += len(chunk)

    async def commit(self) -> Digest:
        got = Digest("sha256", self.hash.hexdigest())
        assert self.expected is None or got == self.expected, "stored bytes that do not verify"
        self.sink.committed = True
        return got

    async def abort(self) -> None:
        pass


class HashSink:
    """Hashes what is written and keeps nothing (for the memory test)."""

    committed = False

    def writer(self, *, expected: Digest | None = None, size: int | None = None) -> _HashWriter:
        return _HashWriter(self, expected)


# -- scripted servers on loopback ------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler], None]


@attrs.frozen
class Seen:
    """One request a scripted server or the forward proxy received."""

    method: str
    path: str
    headers: dict[str, str]


class Upstream:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering ``routes[path](handler)`` (404
    otherwise), over TLS when given a context; every request is recorded in ``seen``."""

    def __init__(self, routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> None:
        self.routes = routes
        self.seen: list[Seen] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one_request(self) -> None:
                with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                    super().handle_one_request()

            def answer(self) -> None:
                path = self.path.partition("?")[0]
                upstream.seen.append(
                    Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()})
                )
                route = upstream.routes.get(path)
                if route is None:
                    send(self, 404, b'{"errors":[{"code":"NOT_FOUND"}]}')
                else:
                    route(self)

            do_GET = do_HEAD = do_CONNECT = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Upstream]]:
    """Start :class:`Upstream` servers for one test; all are closed after it."""
    started: list[Upstream] = []

    def start(routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> Upstream:
        started.append(Upstream(routes, tls))
        return started[-1]

    yield start
    for server in started:
        server.close()


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
) -> None:
    """Answer with ``body`` (none to a HEAD) and a Content-Length of ``length`` (default: the
    body's)."""
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
    handler.wfile.flush()


def blob_route(handler: BaseHTTPRequestHandler) -> None:
    send(handler, 200, BLOB, {"Content-Type": "application/octet-stream"})


BLOB_PATH = f"/v2/{NAME}/blobs/{BLOB_DIGEST}"


def download(upstream: str, backend: str, **options: Any) -> tuple[Digest, Sink]:
    """Download BLOB from ``upstream`` into a fresh sink with a client on ``backend``."""
    sink = Sink()
    client = RegistryClient(upstream, http_backend=backend, **{"max_retries": 0, **options})
    digest = run(client, lambda c: c.download_blob(NAME, BLOB_DIGEST, sink, size=len(BLOB)))
    return digest, sink


# -- choosing the stack ----------------------------------------------------------------------


def _transport(client: RegistryClient) -> httpx.AsyncBaseTransport:
    http = client._http()
    return http._transport


def test_the_default_stack_is_aiohttp_and_the_environment_or_the_caller_may_choose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(HTTP_BACKEND_ENV, raising=False)
    assert DEFAULT_HTTP_BACKEND == "aiohttp"
    assert RegistryClient("https://r.example").http_backend == "aiohttp"
    monkeypatch.setenv(HTTP_BACKEND_ENV, "httpx")
    assert RegistryClient("https://r.example").http_backend == "httpx"
    assert RegistryClient("https://r.example", http_backend="aiohttp").http_backend == "aiohttp"
    with pytest.raises(ValueError, match="http_backend must be one of aiohttp, httpx"):
        RegistryClient("https://r.example", http_backend="curl")
    monkeypatch.setenv(HTTP_BACKEND_ENV, "urllib3")
    with pytest.raises(ValueError, match=f"{HTTP_BACKEND_ENV} must be one of"):
        RegistryClient("https://r.example")


@BACKENDS
def test_each_stack_builds_its_own_transport(backend: str) -> None:
    async def check() -> None:
        async with RegistryClient("https://r.example", http_backend=backend) as client:
            transport = _transport(client)
            if backend == "httpx":
                assert isinstance(transport, httpx.AsyncHTTPTransport)
            else:
                assert type(transport).__name__ == "_AiohttpTransport"

    asyncio.run(check())


def test_a_given_transport_or_client_is_used_whatever_the_stack() -> None:
    transport = httpx.AsyncHTTPTransport()

    async def check() -> None:
        async with RegistryClient(
            "https://r.example", transport=transport, http_backend="aiohttp"
        ) as client:
            assert _transport(client) is transport
        async with (
            httpx.AsyncClient() as http,
            RegistryClient("https://r.example", client=http) as client,
        ):
            assert client._http() is http

    asyncio.run(check())


def test_a_socks_proxy_is_left_to_httpx_on_either_stack() -> None:
    """aiohttp speaks no SOCKS: such a proxy gets httpx's own transport (which needs socksio)."""

    def outcome(backend: str) -> str:
        client = RegistryClient(
            "https://r.example", proxy="socks5://127.0.0.1:1080", http_backend=backend
        )
        try:
            http = client._http()
        except ImportError as exc:
            return f"ImportError: {exc}"
        return ",".join(sorted(type(t).__name__ for t in http._mounts.values() if t))

    assert outcome("aiohttp") == outcome("httpx")


# -- a real registry, with faults --------------------------------------------------------------


@pytest.fixture
def pushed(docker_registry: Registry, registry_name: str) -> dict[str, Any]:
    image = random_image(seed=registry_name, layers=1, layer_size=300_000)
    docker_registry.push(registry_name, image, "v1")
    return {"name": registry_name, "image": image, "layer": image.layers[0]}


@BACKENDS
def test_every_call_works_against_docker_registry(
    backend: str, docker_registry: Registry, pushed: dict[str, Any]
) -> None:
    name, image, layer = pushed["name"], pushed["image"], pushed["layer"]
    sink = Sink()

    async def calls(client: RegistryClient) -> None:
        await client.ping()
        assert await client.list_tags(name) == ["v1"]
        ref = await client.resolve(name, "v1")
        assert ref.digest == image.digest and ref.size == image.size
        fetched = await client.get_manifest(name, "v1")
        assert fetched.raw == image.manifest
        assert await client.blob_exists(name, layer.digest) == layer.size
        assert await client.blob_exists(name, Digest.of(b"absent")) is None
        assert await client.download_blob(name, layer.digest, sink, size=layer.size)
        # more at once than the pool has connections
        await asyncio.gather(*(client.resolve(name, "v1") for _ in range(64)))

    run(RegistryClient(docker_registry.url, http_backend=backend), calls)
    assert bytes(sink.writers[-1].data) == layer.data


@BACKENDS
@pytest.mark.parametrize("fault", ["truncate", "reset_mid_body", "stall"])
def test_a_broken_body_is_noticed_and_resumed_with_a_range_request(
    backend: str, fault: str, registry_proxy: FaultProxy, pushed: dict[str, Any]
) -> None:
    name, layer = pushed["name"], pushed["layer"]
    path = f"/blobs/{layer.digest}"
    if fault == "stall":
        registry_proxy.stall(3.0, after_bytes=100_000, path=path)
    else:
        getattr(registry_proxy, fault)(100_000, path=path)
    sink = Sink()
    client = RegistryClient(
        registry_proxy.url, http_backend=backend, timeout=1.0, max_retries=2, backoff_max=0.01
    )
    digest = run(client, lambda c: c.download_blob(name, layer.digest, sink, size=layer.size))
    assert digest == layer.digest
    assert bytes(sink.writers[-1].data) == layer.data
    gets = [r for r in registry_proxy.requests if r.path.endswith(path)]
    assert gets[0].fault is not None
    assert gets[-1].range == "bytes=100000-" and gets[-1].status == 206
    assert client.stats.requests["retry"] == 1


@BACKENDS
@pytest.mark.parametrize("fault", ["truncate", "reset_mid_body"])
def test_a_cut_body_without_retries_is_an_upstream_error_and_stores_nothing(
    backend: str, fault: str, registry_proxy: FaultProxy, pushed: dict[str, Any]
) -> None:
    name, layer = pushed["name"], pushed["layer"]
    getattr(registry_proxy, fault)(100_000, path=f"/blobs/{layer.digest}")
    sink = Sink()
    client = RegistryClient(registry_proxy.url, http_backend=backend, max_retries=0)
    with pytest.raises(UpstreamError, match=r"(RemoteProtocolError|ReadError)"):
        run(client, lambda c: c.download_blob(name, layer.digest, sink, size=layer.size))
    assert all(not w.data for w in sink.writers)


@BACKENDS
def test_a_large_blob_streams_in_constant_memory(
    backend: str, docker_registry: Registry, registry_name: str
) -> None:
    data = bytes(range(256)) * (128 << 10)  # 32 MiB
    digest, size = docker_registry.push_blob(registry_name, data), len(data)
    del data
    sink = HashSink()

    async def fetch(client: RegistryClient) -> None:
        await client.ping()  # connections and imports before measuring
        tracemalloc.start()
        try:
            await client.download_blob(registry_name, digest, sink, size=size)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 12 << 20, f"peak {peak >> 20} MiB for a 32 MiB blob"

    run(RegistryClient(docker_registry.url, http_backend=backend), fetch)
    assert sink.committed


# -- scripted misbehaviour -----------------------------------------------------------------------


def _raw(payload: bytes) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(payload)
        handler.wfile.flush()
        handler.close_connection = True

    return route


@BACKENDS
@pytest.mark.parametrize(
    "payload",
    [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", b""],
    ids=["garbage", "bad-length", "closed"],
)
def test_a_malformed_answer_is_an_upstream_error(
    backend: str, payload: bytes, serve: Callable[..., Upstream]
) -> None:
    upstream = serve({BLOB_PATH: _raw(payload)})
    with pytest.raises(UpstreamError, match=r"failed: (RemoteProtocolError|ReadError)"):
        download(upstream.url, backend)


@BACKENDS
def test_a_body_shorter_than_its_content_length_is_an_upstream_error(
    backend: str, serve: Callable[..., Upstream]
) -> None:
    def short(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, BLOB[:1000], length=len(BLOB))
        handler.close_connection = True

    upstream = serve({BLOB_PATH: short})
    with pytest.raises(UpstreamError, match="RemoteProtocolError"):
        download(upstream.url, backend)


@BACKENDS
def test_a_silent_upstream_times_out(backend: str, serve: Callable[..., Upstream]) -> None:
    def silent(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(BLOB)))
        handler.end_headers()
        handler.wfile.write(BLOB[:1000])
        handler.wfile.flush()
        time.sleep(2.0)
        handler.close_connection = True

    upstream = serve({BLOB_PATH: silent})
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="ReadTimeout"):
        download(upstream.url, backend, timeout=0.3)
    assert time.monotonic() - started < 1.8


@BACKENDS
def test_a_refused_connection_is_a_connect_error(backend: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(UpstreamError, match="ConnectError"):
        download(f"http://127.0.0.1:{port}", backend)


@BACKENDS
def test_a_kept_alive_connection_the_upstream_closed_is_not_reused(
    backend: str, serve: Callable[..., Upstream]
) -> None:
    def once(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, BLOB, {"Connection": "keep-alive"})
        handler.close_connection = True  # after answering, the server closes it anyway

    upstream = serve({BLOB_PATH: once})

    async def twice(client: RegistryClient) -> None:
        for _ in range(3):
            await client.download_blob(NAME, BLOB_DIGEST, Sink(), size=len(BLOB))
            await asyncio.sleep(0.05)

    run(RegistryClient(upstream.url, http_backend=backend, max_retries=0), twice)
    assert len(upstream.seen) == 3


@BACKENDS
def test_a_long_header_line_is_accepted(backend: str, serve: Callable[..., Upstream]) -> None:
    def long_header(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, BLOB, {"X-Long": "a" * 20_000})

    upstream = serve({BLOB_PATH: long_header})
    assert download(upstream.url, backend)[0] == BLOB_DIGEST


# -- redirects and cookies -----------------------------------------------------------------------


@BACKENDS
def test_redirects_are_followed_hop_by_hop_without_credentials_to_another_origin(
    backend: str, serve: Callable[..., Upstream]
) -> None:
    storage = serve({"/bucket/blob": blob_route})

    def to_storage(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 307, headers={"Location": f"{storage.url}/bucket/blob?sig=s3cr3t"})

    def hop(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 302, headers={"Location": "/v2/hop2"})

    registry = serve({BLOB_PATH: hop, "/v2/hop2": to_storage})
    digest, _ = download(
        registry.url,
        backend,
        username="u",
        password="p",
        headers={"X-Api-Key": "k"},
    )
    assert digest == BLOB_DIGEST
    assert [s.path for s in registry.seen] == [BLOB_PATH, "/v2/hop2"]
    assert all(s.headers["x-api-key"] == "k" for s in registry.seen)
    (got,) = storage.seen
    assert "authorization" not in got.headers and "x-api-key" not in got.headers
    assert "cookie" not in got.headers


@BACKENDS
def test_cookies_go_back_once_to_the_origin_that_set_them(
    backend: str, serve: Callable[..., Upstream]
) -> None:
    def with_cookie(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, BLOB, {"Set-Cookie": "lb=node1; Path=/"})

    upstream = serve({BLOB_PATH: with_cookie})

    async def twice(client: RegistryClient) -> None:
        for _ in range(2):
            await client.download_blob(NAME, BLOB_DIGEST, Sink(), size=len(BLOB))

    run(RegistryClient(upstream.url, http_backend=backend, max_retries=0), twice)
    first, second = upstream.seen
    assert "cookie" not in first.headers
    assert second.headers["cookie"] == "lb=node1"


# -- TLS -----------------------------------------------------------------------------------------


@attrs.frozen
class Certs:
    ca_pem: str
    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A private CA and a server certificate it signed for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocimirror test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    ca_file = directory / "ca.pem"
    ca_file.write_text(ca_pem)
    chain = directory / "server.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain)
    return Certs(ca_pem, ca_file, server)


@BACKENDS
@pytest.mark.parametrize("how", ["pem", "file", "context"])
def test_tls_is_verified_with_a_custom_ca(
    backend: str, how: str, certs: Certs, serve: Callable[..., Upstream]
) -> None:
    upstream = serve({BLOB_PATH: blob_route}, tls=certs.server)
    verify: str | ssl.SSLContext = {
        "pem": certs.ca_pem,
        "file": str(certs.ca_file),
        "context": ssl.create_default_context(cadata=certs.ca_pem),
    }[how]
    assert download(upstream.url, backend, verify=verify)[0] == BLOB_DIGEST


@BACKENDS
def test_tls_with_an_unknown_ca_fails_and_without_verification_works(
    backend: str, certs: Certs, serve: Callable[..., Upstream]
) -> None:
    upstream = serve({BLOB_PATH: blob_route}, tls=certs.server)
    with pytest.raises(UpstreamError, match=r"ConnectError.*(?i:certificate)"):
        download(upstream.url, backend)
    assert download(upstream.url, backend, verify=False)[0] == BLOB_DIGEST


# -- a forward proxy -----------------------------------------------------------------------------


class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1: absolute-form GET/HEAD and CONNECT tunnels; every
    request it received is recorded in ``seen``."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def record(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.seen.append(Seen(self.command, self.path, headers))

            def do_CONNECT(self) -> None:
                self.record()
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)))
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                sockets = [self.connection, upstream]
                with upstream:
                    while True:
                        readable, _, _ = select.select(sockets, [], [], 5.0)
                        if not readable:
                            break
                        for s in readable:
                            data = s.recv(65536)
                            if not data:
                                self.close_connection = True
                                return
                            (upstream if s is self.connection else self.connection).sendall(data)
                self.close_connection = True

            def forward(self) -> None:
                self.record()
                url = httpx.URL(self.path)
                conn = http.client.HTTPConnection(url.host, url.port, timeout=10)
                headers = {
                    k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")
                }
                conn.request(self.command, url.raw_path.decode(), headers=headers)
                response = conn.getresponse()
                body = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                conn.close()

            do_GET = do_HEAD = forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    proxy = ForwardProxy()
    yield proxy
    proxy.close()


@BACKENDS
@pytest.mark.parametrize("given", ["argument", "environment"])
def test_requests_go_through_the_proxy_for_http(
    backend: str,
    given: str,
    forward_proxy: ForwardProxy,
    serve: Callable[..., Upstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = serve({BLOB_PATH: blob_route})
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    options: dict[str, Any] = {}
    if given == "argument":
        options["proxy"] = forward_proxy.url
    else:
        monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    assert download(upstream.url, backend, **options)[0] == BLOB_DIGEST
    assert [(s.method, s.path) for s in forward_proxy.seen] == [("GET", upstream.url + BLOB_PATH)]
    assert len(upstream.seen) == 1


@BACKENDS
def test_https_goes_through_the_proxy_in_a_connect_tunnel(
    backend: str, certs: Certs, forward_proxy: ForwardProxy, serve: Callable[..., Upstream]
) -> None:
    upstream = serve({BLOB_PATH: blob_route}, tls=certs.server)
    digest, _ = download(upstream.url, backend, proxy=forward_proxy.url, verify=certs.ca_pem)
    assert digest == BLOB_DIGEST
    assert [(s.method, s.path) for s in forward_proxy.seen] == [
        ("CONNECT", f"127.0.0.1:{upstream.port}")
    ]


@BACKENDS
def test_a_proxy_that_refuses_the_tunnel_is_an_upstream_error(
    backend: str, certs: Certs, serve: Callable[..., Upstream]
) -> None:
    upstream = serve({BLOB_PATH: blob_route}, tls=certs.server)

    def refuse(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 407, headers={"Proxy-Authenticate": 'Basic realm="p"'})
        handler.close_connection = True

    proxy = serve({f"127.0.0.1:{upstream.port}": refuse})
    with pytest.raises(UpstreamError, match="ProxyError"):
        download(upstream.url, backend, proxy=proxy.url, verify=certs.ca_pem)
    assert [s.method for s in proxy.seen] == ["CONNECT"] and not upstream.seen
