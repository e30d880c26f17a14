"""Where an upstream repository really lives: Docker Hub's aliases and implicit ``library/``."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

__all__ = ["DOCKER_HUB_HOSTS", "DOCKER_HUB_URL", "normalize_upstream"]

#: Host names that all mean Docker Hub.
DOCKER_HUB_HOSTS: Final = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)

#: The address of Docker Hub's registry API.
DOCKER_HUB_URL: Final = "https://registry-1.docker.io"


def normalize_upstream(url: str, name: str) -> tuple[str, str]:
    """The registry base URL and repository name to use for ``name`` at ``url``.

    Docker Hub under any of its host names becomes ``https://registry-1.docker.io``, and a
    one-component name there becomes ``library/<name>`` (``alpine`` -> ``library/alpine``).
    Other registries are left as they are, without a trailing slash. A URL without a scheme is
    taken to be ``https://``.
    """
    base = url.strip()
    if "://" not in base:
        base = f"https://{base}"
    base = base.rstrip("/")
    host = (urlsplit(base).hostname or "").lower()
    if host in DOCKER_HUB_HOSTS:
        base = DOCKER_HUB_URL
        if name and "/" not in name:
            name = f"library/{name}"
    return base, name
