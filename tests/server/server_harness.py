"""Drive the registry API app in-process: a registry, an app and an httpx client on one loop.

Tests are plain functions; a :class:`Harness` owns an :class:`asyncio.Runner` whose loop the
registry, the app and the client all live on, and ``harness.get(...)`` runs one request in it.
The fixtures built on it are in this directory's ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.types import ASGIApp

from ocimirror import AsyncRegistry
from ocimirror.asgi import create_app
from ocimirror.server.access import OpenAccess
from ocimirror.testing import Image, Index, artifact, random_image, random_index, write_layout

_T = TypeVar("_T")

#: What ``world`` holds: tag -> image, for repository ``app`` (version 1).
IMAGES: dict[str, Image | Index] = {
    "v1": random_image(seed="server/v1", layer_size=4096),
    "docker": random_image(seed="server/docker", docker=True),
    "multi": random_index(seed="server/multi"),
    "dlist": random_index(seed="server/dlist", docker=True),
}
IMAGES["empty"] = artifact(IMAGES["v1"], payload=b"")  # its one layer is an empty blob
#: Added in version 2 only, so the distribution pinned to version 1 does not serve it.
LATER = random_image(seed="server/later")


class Harness:
    """A registry, the app over it and a client, all on one event loop."""

    def __init__(self, runner: asyncio.Runner, registry: AsyncRegistry, app: Starlette) -> None:
        self.runner = runner
        self.registry = registry
        self.app = app
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        )

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine on the harness's loop."""
        return self.runner.run(coro)

    def request(
        self, method: str, path: str, headers: Mapping[str, str] | list[tuple[str, str]] = ()
    ) -> httpx.Response:
        """One request to the app; the response is fully read."""
        return self.run(self.client.request(method, path, headers=headers or None))

    def get(
        self, path: str, headers: Mapping[str, str] | list[tuple[str, str]] = ()
    ) -> httpx.Response:
        """``GET path``."""
        return self.request("GET", path, headers)

    def head(
        self, path: str, headers: Mapping[str, str] | list[tuple[str, str]] = ()
    ) -> httpx.Response:
        """``HEAD path``."""
        return self.request("HEAD", path, headers)

    def close(self) -> None:
        """Close the client and the registry, then the loop."""
        try:
            self.run(self.client.aclose())
            self.run(self.registry.close())
        finally:
            self.runner.close()


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run an app's ASGI lifespan (startup now, shutdown on exit), as a server does."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, to_app.get, from_app.put))  # type: ignore[arg-type]
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
        await task


def client_of(app: ASGIApp) -> httpx.AsyncClient:
    """An httpx client calling ``app`` in-process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def oci_error(response: httpx.Response) -> dict[str, Any]:
    """The one error of an OCI error body, checked for shape."""
    assert response.headers["content-type"] == "application/json"
    body = json.loads(response.content)
    assert list(body) == ["errors"] and len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    assert set(error) <= {"code", "message", "detail"} and {"code", "message"} <= set(error)
    assert error["code"].replace("_", "").isalpha() and error["code"].isupper()
    assert isinstance(error["message"], str) and error["message"]
    return error


async def populate(registry: AsyncRegistry, tmp: Path) -> None:
    """Fill ``registry`` with the ``world`` content and distributions."""
    write_layout(tmp / "v1-layout", IMAGES)
    write_layout(tmp / "v2-layout", {"later": LATER})
    repo = await registry.create_repository("app")
    first = await repo.import_layout(tmp / "v1-layout")
    await repo.import_layout(tmp / "v2-layout")
    await registry.create_distribution("app", base_path="library/app", repository="app")
    await registry.create_distribution(
        "app-pinned", base_path="pinned/app", repository="app", repository_version=first.number
    )
    await registry.create_distribution(
        "app-private", base_path="private/app", repository="app", private=True
    )
    await registry.create_distribution("unset", base_path="nothing/here")
    # A name with the endpoints' words in it: the path tail decides, not the first match.
    await registry.create_distribution("odd", base_path="odd/manifests/blobs", repository="app")


def open_harness(
    runner: asyncio.Runner,
    database_url: str,
    storage_url: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    fill: Callable[[AsyncRegistry], Coroutine[Any, Any, None]] | None = None,
    **app_options: Any,
) -> Harness:
    """A harness over a new registry at those URLs, filled by ``fill``."""

    async def setup() -> AsyncRegistry:
        registry = await AsyncRegistry.open(
            database_url=database_url, storage_url=storage_url, storage_options=storage_options
        )
        if fill is not None:
            await fill(registry)
        return registry

    registry = runner.run(setup())
    # These tests are about what is served; who may have it is tests/server/test_token_auth.py's.
    app_options.setdefault("auth", OpenAccess())
    return Harness(runner, registry, create_app(registry, **app_options))
