"""Embedding the registry in a service, as docs/embedding.md says to.

The documentation's ``service.py`` modules are taken from the page word for word and run by
granian in a subprocess, next to their own ``/health`` route; skopeo then inspects and copies an
image through them. In-process tests hold a mounted app (whose lifespan never runs) to what the
page promises: it opens its registry on the first request that reaches it, once however many
arrive together, binds it to token authentication, answers ``503`` while it cannot open it and
tries again on the next request, closes it when the event loop cancels its tasks at shutdown,
and warns once when mounted under a prefix that clients will not follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.clients import Tool
from fixtures.processes import server_process
from server_harness import oci_error
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from ocimirror import AsyncRegistry
from ocimirror.asgi import create_app
from ocimirror.testing import free_port, random_image, write_layout

DOC = Path(__file__).resolve().parents[2] / "docs" / "embedding.md"
IMAGE = random_image(seed="embedding/1.0", layers=2, layer_size=4096)
NAME, TAG = "library/app", "1.0"


def documented_services() -> list[str]:
    """The page's runnable modules: its ``python`` blocks that begin ``# service.py``."""
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.S | re.M)
    return [block for block in blocks if block.startswith("# service.py")]


async def _fill(home: Path) -> None:
    write_layout(home.parent / "layout", {TAG: IMAGE})
    registry = await AsyncRegistry.open(home=home)
    try:
        repo = await registry.create_repository("app")
        await repo.import_layout(home.parent / "layout")
        await registry.create_distribution("app", base_path=NAME, repository="app")
    finally:
        await registry.close()


@pytest.fixture(autouse=True)
def _no_configuration_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets configures the app (not the environment pytest runs in)."""
    for name in list(os.environ):
        if name.startswith("OCIMIRROR_") and not name.startswith("OCIMIRROR_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home (SQLite and files) whose distribution ``library/app`` serves IMAGE as 1.0."""
    home = tmp_path_factory.mktemp("embedding") / "home"
    asyncio.run(_fill(home))
    return home


# -- the documented service, under granian, pulled by skopeo --------------------------------------


def _granian() -> list[str]:
    script = Path(sys.executable).with_name("granian")
    return [str(script)] if script.exists() else [sys.executable, "-m", "granian"]


@contextlib.contextmanager
def granian_serving(code: str, home: Path, workdir: Path) -> Iterator[str]:
    """``code`` as ``service.py`` in ``workdir``, run as the page says (``granian --interface
    asgi service:app``) with ``OCIMIRROR_HOME=home`` and ``OCIMIRROR_AUTH=none``; its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "service.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCIMIRROR_")}
    env.update(OCIMIRROR_HOME=str(home), OCIMIRROR_AUTH="none")

    def command(port: int) -> list[str]:
        return [*_granian(), "--interface", "asgi", "service:app", "--host", "127.0.0.1",
                "--port", str(port)]  # fmt: skip

    log = workdir / "granian.log"
    with server_process(command, env=env, log=log, ready="/health", cwd=workdir) as (url, _):
        yield url


def test_the_page_documents_three_runnable_services() -> None:
    services = documented_services()
    assert len(services) == 3
    assert 'Mount("/", app=create_app())' in services[0]
    assert "granian --interface asgi service:app" in services[0]


def test_skopeo_inspects_and_copies_an_image_through_the_documented_service(
    home: Path, tmp_path: Path, skopeo: Tool
) -> None:
    with granian_serving(documented_services()[0], home, tmp_path / "service") as url:
        health = httpx.get(f"{url}/health", trust_env=False)
        assert (health.status_code, health.text) == (200, "ok")
        ref = f"docker://{url.removeprefix('http://')}/{NAME}:{TAG}"
        info = json.loads(skopeo("inspect", "--tls-verify=false", ref).stdout)
        assert info["Digest"] == str(IMAGE.digest)
        out = tmp_path / "copy"
        skopeo("copy", "--preserve-digests", "--src-tls-verify=false", ref, f"dir:{out}")
    manifest = (out / "manifest.json").read_bytes()
    assert manifest == IMAGE.manifest
    assert f"sha256:{hashlib.sha256(manifest).hexdigest()}" == str(IMAGE.digest)
    for blob in IMAGE.blobs():
        assert (out / blob.digest.hex).read_bytes() == blob.data


def test_docker_pushes_and_pulls_through_the_documented_service(
    tmp_path: Path, docker: Tool, docker_busybox: str
) -> None:
    """The Docker Engine pushes into the embedded registry and pulls back what it pushed
    (dockerd takes loopback registries over plain HTTP)."""
    home = tmp_path / "home"
    with granian_serving(documented_services()[0], home, tmp_path / "service") as url:
        ref = f"{url.removeprefix('http://')}/team/busybox:1"
        image_id = docker("image", "inspect", "--format", "{{.Id}}", docker_busybox).stdout.strip()
        docker("tag", docker_busybox, ref)
        docker("push", ref)
        docker("rmi", ref)
        docker("pull", ref)
        assert docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == image_id
        docker("rmi", ref)
        assert httpx.get(f"{url}/health", trust_env=False).text == "ok"


@pytest.mark.parametrize(
    "which", [pytest.param(1, id="lifespan-entered"), pytest.param(2, id="own-registry")]
)
def test_skopeo_inspects_an_image_through_the_other_documented_services(
    which: int, home: Path, tmp_path: Path, skopeo: Tool
) -> None:
    with granian_serving(documented_services()[which], home, tmp_path / "service") as url:
        assert httpx.get(f"{url}/health", trust_env=False).text == "ok"
        ref = f"docker://{url.removeprefix('http://')}/{NAME}:{TAG}"
        info = json.loads(skopeo("inspect", "--tls-verify=false", ref).stdout)
        assert info["Digest"] == str(IMAGE.digest)
        if which == 2:
            assert httpx.get(f"{url}/distributions", trust_env=False).json() == [NAME]


# -- a mounted app, in-process ---------------------------------------------------------------------


class Spy:
    """Counts AsyncRegistry.open and close calls; ``fail`` makes the next opens raise, and
    ``delay`` holds each open so that requests arrive while it is under way."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[AsyncRegistry] = []
        self.attempts = 0
        self.closed: list[AsyncRegistry] = []
        self.fail = 0
        self.delay = 0.0
        real_open = AsyncRegistry.open.__func__  # type: ignore[attr-defined]
        real_close = AsyncRegistry.close

        async def spy_open(cls: type[AsyncRegistry], /, **options: Any) -> AsyncRegistry:
            self.attempts += 1
            await asyncio.sleep(self.delay)
            if self.fail:
                self.fail -= 1
                raise ConnectionRefusedError("the database is down (a test says so)")
            registry: AsyncRegistry = await real_open(cls, **options)
            self.opened.append(registry)
            return registry

        async def spy_close(registry: AsyncRegistry) -> None:
            self.closed.append(registry)
            await real_close(registry)

        monkeypatch.setattr(AsyncRegistry, "open", classmethod(spy_open))
        monkeypatch.setattr(AsyncRegistry, "close", spy_close)


async def _health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _client(app: Starlette) -> httpx.AsyncClient:
    # ASGITransport runs no lifespan: the mounted app sees requests only, as when mounted.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_a_mounted_app_opens_its_registry_once_on_first_use_and_closes_it_at_loop_shutdown(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Token authentication (the default): /token needs the registry bound to it.
    spy = Spy(monkeypatch)
    spy.delay = 0.2
    registry_app = create_app(home=home)
    service = Starlette(routes=[Route("/health", _health), Mount("/", app=registry_app)])
    opener = registry_app.state.opener

    async def scenario() -> None:
        async with _client(service) as client:
            assert (await client.get("/health")).text == "ok"
            assert spy.attempts == 0 and opener.registry is None  # nothing reached it yet
            url = f"/v2/{NAME}/manifests/{TAG}"
            answers = await asyncio.gather(*(client.get(url) for _ in range(8)))
            assert [a.content for a in answers] == [IMAGE.manifest] * 8
            token = await client.get("/token", params={"service": "ocimirror"})
            assert token.status_code == 200 and token.json()["token"]
        assert spy.attempts == 1 and spy.opened == [opener.registry]
        assert spy.closed == []

    asyncio.run(scenario())  # cancels the tasks left at its end, as uvicorn's loop does
    assert len(spy.opened) == 1 and spy.closed == spy.opened
    assert opener.registry is None
    with pytest.raises(RuntimeError, match="not open"):
        _ = registry_app.state.content.registry


def test_entering_the_apps_lifespan_opens_at_start_and_closes_at_its_end(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCIMIRROR_AUTH", "none")
    spy = Spy(monkeypatch)
    registry_app = create_app(home=home)

    async def scenario() -> None:
        async with registry_app.router.lifespan_context(registry_app):
            assert len(spy.opened) == 1 and spy.closed == []
            async with _client(Starlette(routes=[Mount("/", app=registry_app)])) as client:
                answer = await client.get(f"/v2/{NAME}/manifests/{TAG}")
                assert answer.content == IMAGE.manifest
        assert spy.closed == spy.opened and registry_app.state.opener.registry is None
        # No task is left to close it a second time.
        await asyncio.sleep(0)
        assert len(spy.closed) == 1

    asyncio.run(scenario())
    assert len(spy.opened) == 1 and len(spy.closed) == 1


def test_a_registry_that_fails_to_open_answers_503_and_the_next_request_tries_again(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OCIMIRROR_AUTH", "none")
    spy = Spy(monkeypatch)
    spy.fail = 1
    spy.delay = 0.1
    service = Starlette(routes=[Mount("/", app=create_app(home=home))])
    url = f"/v2/{NAME}/manifests/{TAG}"

    async def scenario() -> None:
        async with _client(service) as client:
            failed = await asyncio.gather(client.get(url), client.get(url), client.head(url))
            assert spy.attempts == 1  # the requests that arrived together shared one attempt
            for answer in failed:
                assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
            assert failed[2].content == b""
            error = oci_error(failed[0])
            assert error["code"] == "UNAVAILABLE" and "database is down" not in error["message"]
            assert (await client.get(url)).content == IMAGE.manifest
            assert spy.attempts == 2 and len(spy.opened) == 1

    with caplog.at_level(logging.ERROR, logger="ocimirror.server"):
        asyncio.run(scenario())
    assert "database is down" in caplog.text  # the cause is logged for the operator
    assert spy.closed == spy.opened


def test_a_bad_database_url_answers_503_on_every_request_without_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OCIMIRROR_AUTH", "none")
    spy = Spy(monkeypatch)
    secret = "db-pa55word-never-shown"
    app = create_app(
        database_url=f"postgresql://nobody:{secret}@127.0.0.1:{free_port()}/none",
        storage_url=(tmp_path / "blobs").as_uri(),
    )

    async def scenario() -> list[httpx.Response]:
        async with _client(Starlette(routes=[Mount("/", app=app)])) as client:
            return [await asyncio.wait_for(client.get("/v2/"), 30) for _ in range(2)]

    with caplog.at_level(logging.DEBUG):
        answers = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [503, 503]
    assert all(oci_error(a)["code"] == "UNAVAILABLE" for a in answers)
    assert spy.attempts == 2 and spy.opened == []
    assert "could not open the registry" in caplog.text
    assert secret not in caplog.text and all(secret not in a.text for a in answers)


def test_a_prefix_is_warned_about_once_because_clients_will_not_follow_it(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OCIMIRROR_AUTH", "none")
    service = Starlette(routes=[Mount("/registry", app=create_app(home=home))])

    async def scenario() -> None:
        async with _client(service) as client:
            for _ in range(3):
                answer = await client.get(f"/registry/v2/{NAME}/manifests/{TAG}")
                assert answer.content == IMAGE.manifest

    with caplog.at_level(logging.WARNING, logger="ocimirror.server"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'/registry'" in warnings[0] and 'mount it at "/"' in warnings[0]
