"""Issue 8's acceptance: real clients push to and pull from ``ocimirror serve``, token auth on.

Every test serves a home of its own in which alice (password s3cret) may push under
``team/*``. docker (a private dockerd), podman and skopeo log in as her, push, pull back and
run what they pulled; the Python API then finds the push repository the server made. An
anonymous client pulls a public distribution but is refused a private one, and alice is
refused a push outside her grant.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.clients import GREETING, Tool, describe

import ocimirror
from ocimirror.testing import random_image, serving, write_layout

USERNAME, PASSWORD = "alice", "s3cret"

# What a client prints when the registry answers 401 or 403 (the wording varies by client).
REFUSED = re.compile(r"\b(401|403|unauthorized|denied|authentication required|forbidden)\b", re.I)


class Server:
    """An ``ocimirror serve`` of its own home, where alice may push under ``team/*``."""

    def __init__(self, home: Path, host: str) -> None:
        self.home = home
        #: ``127.0.0.1:PORT``, as image references start.
        self.host = host

    def ref(self, path: str) -> str:
        """``HOST/path`` (``path`` as ``name:tag`` or ``name@digest``)."""
        return f"{self.host}/{path}"

    def push_repository(self, name: str) -> dict[str, str]:
        """The tags of the latest version of ``name``, which must be a push repository."""
        with ocimirror.open(home=self.home) as registry:
            repository = registry.repository(name)
            assert not repository.mirror, f"{repository!r} should be a push repository"
            assert repository.latest_version_number >= 1, f"{repository!r} has no version"
            tags: dict[str, str] = repository.tags()
            return tags

    def set_private(self, base_path: str, private: bool) -> None:
        """Make the distribution at ``base_path`` private or public, through the Python API."""
        with ocimirror.open(home=self.home) as registry:
            distribution = registry.distribution(base_path=base_path)
            registry.update_distribution(distribution.name, private=private)

    def has_repository(self, name: str) -> bool:
        """Whether a repository ``name`` exists."""
        with ocimirror.open(home=self.home) as registry:
            return name in {r.name for r in registry.repositories()}


def cli(home: Path, *argv: str) -> Any:
    """``python -m ocimirror --home HOME argv...``; its JSON output, if any."""
    done = subprocess.run(
        [sys.executable, "-m", "ocimirror", "--home", str(home), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, describe(done)
    return json.loads(done.stdout) if done.stdout.strip() else None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A fresh home with alice granted push on ``team/*``, served with token auth on."""
    home = tmp_path / "home"
    cli(home, "user", "create", "--username", USERNAME, "--password", PASSWORD)
    cli(home, "user", "grant", "--username", USERNAME, "--base-path", "team/*", "--role", "push")
    with serving(home, timeout=60) as host:
        yield Server(home, host)


def refused(done: subprocess.CompletedProcess[str]) -> bool:
    """Whether a client failed because the registry refused it."""
    return done.returncode != 0 and bool(REFUSED.search(done.stderr + done.stdout))


def push_layout(skopeo: Tool, server: Server, tmp_path: Path, path: str, seed: str) -> Any:
    """Push a random image with skopeo (logged in as alice) to ``path``; the image."""
    image = random_image(seed=seed, layers=2, layer_size=4096)
    layout = tmp_path / f"layout-{seed}"
    write_layout(layout, {"v1": image})
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:v1",
           f"docker://{server.ref(path)}")  # fmt: skip
    return image


# -- docker ------------------------------------------------------------------------------------


def test_docker_logs_in_pushes_pulls_back_and_runs_an_image(
    server: Server, docker: Tool, docker_busybox: str
) -> None:
    ref = server.ref("team/hello:1")
    docker("login", "--username", USERNAME, "--password-stdin", server.host, input=PASSWORD)
    image_id = docker("image", "inspect", "--format", "{{.Id}}", docker_busybox).stdout.strip()
    docker("tag", docker_busybox, ref)
    pushed = docker("push", ref)
    found = re.search(r"1: digest: (sha256:[0-9a-f]{64})", pushed.stdout)
    assert found, describe(pushed)
    digest = found.group(1)

    docker("rmi", ref, docker_busybox)  # the image is gone from dockerd: the pull is real
    assert docker.run("image", "inspect", image_id).returncode != 0
    docker("pull", ref)
    assert docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == image_id
    ran = docker("run", "--rm", "--network", "none", ref)
    assert ran.stdout == f"{GREETING}\n", describe(ran)

    assert server.push_repository("team/hello") == {"1": digest}


def test_docker_is_refused_a_push_outside_alices_grant(
    server: Server, docker: Tool, docker_busybox: str
) -> None:
    ref = server.ref("other/hello:1")
    docker("login", "--username", USERNAME, "--password-stdin", server.host, input=PASSWORD)
    docker("tag", docker_busybox, ref)
    done = docker.run("push", ref)
    assert refused(done), describe(done)
    assert not server.has_repository("other/hello")


def test_docker_is_refused_a_login_with_a_wrong_password(server: Server, docker: Tool) -> None:
    done = docker.run("login", "--username", USERNAME, "--password-stdin", server.host,
                      input="wrong")  # fmt: skip
    assert refused(done), describe(done)


# -- podman ------------------------------------------------------------------------------------


def test_podman_logs_in_pushes_pulls_back_and_runs_an_image(
    server: Server, podman: Tool, podman_busybox: str, tmp_path: Path
) -> None:
    ref = server.ref("team/podman:1")
    podman("login", "--tls-verify=false", "--username", USERNAME, "--password-stdin",
           server.host, input=PASSWORD)  # fmt: skip
    image_id = podman("image", "inspect", "--format", "{{.Id}}", podman_busybox).stdout.strip()
    podman("tag", podman_busybox, ref)
    digest_file = tmp_path / "pushed-digest"
    podman("push", "--tls-verify=false", "--digestfile", str(digest_file), ref)
    digest = digest_file.read_text().strip()

    podman("rmi", ref, podman_busybox)  # the image is gone from podman: the pull is real
    assert podman.run("image", "exists", image_id).returncode != 0
    podman("pull", "--tls-verify=false", ref)
    assert podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == image_id
    ran = podman("run", "--rm", "--network", "none", ref)
    assert ran.stdout == f"{GREETING}\n", describe(ran)

    assert server.push_repository("team/podman") == {"1": digest}


def test_podman_is_refused_a_push_outside_alices_grant(
    server: Server, podman: Tool, podman_busybox: str
) -> None:
    ref = server.ref("other/podman:1")
    podman("login", "--tls-verify=false", "--username", USERNAME, "--password-stdin",
           server.host, input=PASSWORD)  # fmt: skip
    podman("tag", podman_busybox, ref)
    done = podman.run("push", "--tls-verify=false", ref)
    assert refused(done), describe(done)
    assert not server.has_repository("other/podman")


# -- skopeo ------------------------------------------------------------------------------------


def test_skopeo_copies_an_image_in_and_back_out_with_the_same_digest(
    server: Server, skopeo: Tool, tmp_path: Path
) -> None:
    skopeo("login", "--tls-verify=false", "--username", USERNAME, "--password-stdin",
           server.host, input=PASSWORD)  # fmt: skip
    image = push_layout(skopeo, server, tmp_path, "team/img:v1", seed="clients/skopeo")

    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{server.ref('team/img:v1')}")
    assert raw.stdout.encode() == image.manifest
    for i, path in enumerate(("team/img:v1", f"team/img@{image.digest}")):
        out = tmp_path / f"back-{i}"
        skopeo("copy", "--preserve-digests", "--src-tls-verify=false",
               f"docker://{server.ref(path)}", f"oci:{out}:v1")  # fmt: skip
        index = json.loads((out / "index.json").read_text())
        assert [m["digest"] for m in index["manifests"]] == [str(image.digest)]
        for blob in image.blobs():
            assert (out / "blobs" / "sha256" / blob.digest.hex).read_bytes() == blob.data

    assert server.push_repository("team/img") == {"v1": str(image.digest)}


def test_skopeo_is_refused_a_push_outside_alices_grant(
    server: Server, skopeo: Tool, tmp_path: Path
) -> None:
    skopeo("login", "--tls-verify=false", "--username", USERNAME, "--password-stdin",
           server.host, input=PASSWORD)  # fmt: skip
    write_layout(tmp_path / "layout", {"v1": random_image(seed="clients/refused")})
    done = skopeo.run("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:v1",
                      f"docker://{server.ref('other/img:v1')}")  # fmt: skip
    assert refused(done), describe(done)
    assert not server.has_repository("other/img")


# -- anonymous pulls -----------------------------------------------------------------------------


def test_an_anonymous_client_pulls_a_public_distribution_without_logging_in(
    server: Server, skopeo: Tool, tmp_path: Path
) -> None:
    skopeo("login", "--tls-verify=false", "--username", USERNAME, "--password-stdin",
           server.host, input=PASSWORD)  # fmt: skip
    image = push_layout(skopeo, server, tmp_path, "team/public:v1", seed="clients/public")
    server.set_private("team/public", False)

    out = tmp_path / "anonymous"
    skopeo("copy", "--src-no-creds", "--preserve-digests", "--src-tls-verify=false",
           f"docker://{server.ref('team/public:v1')}", f"oci:{out}:v1")  # fmt: skip
    index = json.loads((out / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [str(image.digest)]
    # No token at all: a public distribution answers a bare request.
    response = httpx.get(
        f"http://{server.ref('v2/team/public/manifests/v1')}",
        headers={"Accept": image.media_type},
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    assert response.content == image.manifest


def test_an_anonymous_client_is_refused_a_private_distribution_with_401(
    server: Server, skopeo: Tool, tmp_path: Path
) -> None:
    skopeo("login", "--tls-verify=false", "--username", USERNAME, "--password-stdin",
           server.host, input=PASSWORD)  # fmt: skip
    image = push_layout(skopeo, server, tmp_path, "team/private:v1", seed="clients/private")
    server.set_private("team/private", True)

    done = skopeo.run("inspect", "--no-creds", "--tls-verify=false",
                      f"docker://{server.ref('team/private:v1')}")  # fmt: skip
    assert refused(done), describe(done)
    response = httpx.get(
        f"http://{server.ref('v2/team/private/manifests/v1')}",
        headers={"Accept": image.media_type},
        trust_env=False,
    )
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer "), response.headers
    # alice, logged in, still pulls it.
    info = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{server.ref('team/private:v1')}").stdout
    )
    assert info["Digest"] == str(image.digest)
