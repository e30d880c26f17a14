"""Run the registry API with granian: ``serve()``, what ``ocimirror serve`` calls.

granian starts ``workers`` processes; each calls :func:`ocimirror.asgi.create_app` (factory
mode) and opens its own registry in the app's lifespan. The registry's location reaches them
through the ``OCIMIRROR_HOME``, ``OCIMIRROR_DATABASE_URL`` and ``OCIMIRROR_STORAGE_URL``
environment variables, set for the time the server runs. The registry is opened once before
the workers start, so a wrong URL fails at once and the schema is created (or checked) by one
process only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ocimirror.errors import InvalidError
from ocimirror.registry import AsyncRegistry

__all__ = ["DEFAULT_PORT", "serve"]

#: The port ``serve`` listens on unless told otherwise.
DEFAULT_PORT = 24817

_LEVELS = ("critical", "error", "warning", "info", "debug")


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 1,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    database_url: str | None = None,
    storage_url: str | None = None,
    log_level: str = "info",
    auth: bool = True,
    token_key: str | os.PathLike[str] | None = None,
    token_realm: str | None = None,
) -> None:
    """Serve the registry API until interrupted (SIGINT or SIGTERM); HTTPS with a cert and key.

    Args:
        host: The address to listen on (``0.0.0.0`` for every IPv4 interface).
        port: The TCP port.
        workers: Processes answering requests (one per CPU core is a good start).
        certfile: A PEM certificate (chain) for HTTPS; needs ``keyfile``.
        keyfile: The PEM private key of ``certfile``.
        home, database_url, storage_url: Where the registry lives, as for
            :meth:`ocimirror.AsyncRegistry.open` (unset ones come from the environment).
        log_level: granian's and ocimirror's log level (``debug`` ... ``critical``).
        auth: Docker token authentication (users and grants from the registry). ``False``
            lets anyone pull and push, and says so on stderr.
        token_key: The token signing key (a PEM file of an EC P-256 key); default
            ``token-key.pem`` in the home, made on first start. Hosts serving one name share
            one key.
        token_realm: The token endpoint's URL as clients reach it (behind a proxy); default
            this server's ``/token``, from each request.
    """
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    if (certfile is None) != (keyfile is None):
        raise InvalidError("HTTPS needs both certfile and keyfile")
    if workers < 1:
        raise InvalidError(f"workers must be >= 1, got {workers}")
    if log_level.lower() not in _LEVELS:
        raise InvalidError(f"log_level must be one of {', '.join(_LEVELS)}, got {log_level!r}")
    for path in (certfile, keyfile, token_key):
        if path is not None and not Path(path).is_file():
            raise InvalidError(f"{os.fspath(path)!r} is not a file")
    level = log_level.lower()
    settings = {
        "OCIMIRROR_HOME": home,
        "OCIMIRROR_DATABASE_URL": database_url,
        "OCIMIRROR_STORAGE_URL": storage_url,
        "OCIMIRROR_AUTH": "token" if auth else "none",
        "OCIMIRROR_TOKEN_KEY": token_key,
        "OCIMIRROR_TOKEN_REALM": token_realm,
    }
    if not auth:
        print(
            "ocimirror serve: authentication is OFF (--no-auth): anyone who can reach "
            f"{host}:{port} may pull and push",
            file=sys.stderr,
        )
    with _environment({k: os.fspath(v) for k, v in settings.items() if v is not None}):
        asyncio.run(_check_registry())
        server = Granian(
            "ocimirror.asgi:create_app",
            factory=True,
            interface=Interfaces.ASGI,
            address=host,
            port=port,
            workers=workers,
            websockets=False,
            ssl_cert=Path(certfile) if certfile is not None else None,
            ssl_key=Path(keyfile) if keyfile is not None else None,
            log_level=LogLevels(level),
            log_dictconfig=_logging_config(level),
        )
        server.serve()


async def _check_registry() -> None:
    registry = await AsyncRegistry.open()
    await registry.close()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by the workers) for the duration."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _logging_config(level: str) -> dict[str, Any]:
    """granian's logging, plus ocimirror's records through granian's console handler.

    Each worker applies this when it starts: ``serve`` runs processes of its own, so it is
    the one place in ocimirror that decides where log records go.
    """
    numeric = logging.getLevelName(level.upper())
    return {
        "loggers": {
            "_granian": {"handlers": ["console"], "level": numeric, "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "ocimirror": {"handlers": ["console"], "level": numeric, "propagate": False},
        }
    }
