"""The OCI distribution-spec conformance workflows, run against a real ``ocimirror serve``.

Each workflow module (Pull, Push, Content Discovery, Content Management) gets a server of its
own for each auth mode, started once for the module:

* ``no-auth``: ``ocimirror serve --no-auth``, anyone may do anything;
* ``token``: token auth, the client logging in as :data:`PUSHER`, a user granted ``push`` on
  ``conformance/*``. Its :class:`~fixtures.served.BearerAuth` flow is Docker's: the request
  is answered ``401`` with a ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``
  challenge, the flow asks the realm for a token with Basic credentials and retries.

So a test only ever uses ``client``, an :class:`httpx.Client` with ``base_url`` and ``auth``
set, and reads the same in both modes. Repositories are made by pushing to a fresh name
(``conformance/<uuid>``, :func:`~fixtures.distribution.new_name`): a push to a name that no
distribution serves creates the repository and its distribution.

The auth flow, the server runner and the error-body check live in ``tests/fixtures/served.py``
so that the server tests (``tests/server/test_push_security.py``) share them.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fixtures.served import BearerAuth, Seed, Served, run_registry

__all__ = ["AUTH_MODES", "PUSHER", "BearerAuth"]

#: The two ways every workflow runs.
AUTH_MODES = ("no-auth", "token")
#: The user the token-mode client logs in as: ``push`` on ``conformance/*``.
PUSHER = "alice"


@pytest.fixture(scope="module")
def seed() -> Seed | None:
    """What the module's home holds before it is served (a module may override this)."""
    return None


@pytest.fixture(scope="module", params=AUTH_MODES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, seed: Seed | None
) -> Iterator[Served]:
    """``ocimirror serve`` over a fresh home, in each auth mode, for one module."""
    home = tmp_path_factory.mktemp(f"conformance-{request.param}") / "home"
    with run_registry(
        home,
        auth=request.param == "token",
        users={PUSHER: [("conformance/*", "push")]},
        seed=seed,
    ) as served:
        yield served


@pytest.fixture(scope="module")
def client(server: Served) -> Iterator[httpx.Client]:
    """A client of ``server``: logged in as :data:`PUSHER` with token auth."""
    with server.client(PUSHER) as c:
        yield c
