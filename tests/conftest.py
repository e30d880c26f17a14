"""Shared fixtures: backends (SQLite, PostgreSQL; file, memory, S3) and generated images."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.clients import (  # noqa: F401
    busybox_context,
    docker,
    docker_busybox,
    docker_engine,
    podman,
    podman_busybox,
    podman_engine,
    skopeo,
)
from fixtures.postgres import postgres_url  # noqa: F401
from fixtures.proxy import fault_proxy_factory, registry_proxy  # noqa: F401
from fixtures.registry import (  # noqa: F401
    docker_registry,
    docker_registry_basic,
    docker_registry_factory,
    docker_registry_token,
    docker_registry_token_session,
    registry_name,
)
from fixtures.s3 import s3_server, s3_storage  # noqa: F401
from fixtures.signing import (  # noqa: F401
    cosign_key,
    gpg_key,
    other_cosign_key,
    other_gpg_key,
)

import ocimirror


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each metadata backend in turn: an SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metadata.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[ocimirror.Registry]:
    """A blocking registry over each metadata backend, with blobs in files."""
    reg = ocimirror.open(database_url=database_url, storage_url=(tmp_path / "blobs").as_uri())
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in a fresh home; returns (exit status, parsed stdout, stderr)."""
    from ocimirror.cli import main

    def run(*argv: str) -> tuple[int, Any, str]:
        status = main(["--home", str(tmp_path / "home"), *argv])
        out, err = capsys.readouterr()
        return status, (json.loads(out) if out.strip() else None), err

    return run


@pytest.fixture(params=["file", "memory", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """Each blob backend in turn, as (storage_url, storage_options)."""
    if request.param == "file":
        return (tmp_path / "blobs").as_uri(), {}
    if request.param == "memory":
        return f"memory://ocimirror-{id(request)}-{tmp_path.name}", {}
    s3: tuple[str, dict[str, Any]] = request.getfixturevalue("s3_storage")
    return s3


@pytest.fixture(autouse=True)
def _httpx_stack_under_httpx_mock(request: pytest.FixtureRequest) -> Iterator[None]:
    """pytest-httpx scripts answers by patching httpx's own transport: a test using it gets
    ``RegistryClient``s on that stack (``OCIMIRROR_HTTP_BACKEND=httpx``) whatever the default."""
    if "httpx_mock" not in request.fixturenames:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OCIMIRROR_HTTP_BACKEND", "httpx")
        yield


# -- under CI, a skipped test is a failed run ----------------------------------------------------

_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember every skip (a missing real part: docker-registry, skopeo, dockerd, ...)."""
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``CI=true`` nothing may be skipped quietly: the run fails and names the skips."""
    import os

    if os.environ.get("CI", "").lower() == "true" and _SKIPPED:
        print(f"\nCI=true: {len(_SKIPPED)} test(s) skipped, which CI does not allow:")
        for nodeid in _SKIPPED[:50]:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
