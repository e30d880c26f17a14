"""Pulp's mirror-and-host workflow end to end from the CLI, checked with skopeo as the client.

docker-registry holds the upstream images; ocimirror mirrors them (CLI), serves them
(``ocimirror serve``), and skopeo pulls them back: every digest equals the upstream's. A
second ocimirror then mirrors the first one, as Pulp can mirror "another instance of Pulp".
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.registry import Registry

from ocimirror.testing import random_image, random_index, serving

IMAGES = {
    "1.0": random_image(seed="host/1.0", layers=2, layer_size=8192),
    "1.0-docker": random_image(seed="host/docker", docker=True),
    "multi": random_index(seed="host/multi", platforms=("linux/amd64", "linux/arm64/v8")),
    "multi-docker": random_index(seed="host/dmulti", docker=True),
}


def ocimirror(home: Path, *argv: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "ocimirror", "--home", str(home), *argv],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def skopeo(*argv: str) -> str:
    done = subprocess.run(["skopeo", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def mirror(
    docker_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The workflow from the CLI, served by ``ocimirror serve``."""
    name = "host/upstream"
    for tag, image in IMAGES.items():
        docker_registry.push(name, image, tag)
    home = tmp_path_factory.mktemp("host-home")
    ocimirror(home, "repository", "create", "--name", "foo")
    ocimirror(home, "remote", "create", "--name", "foo", "--url", docker_registry.url,
              "--upstream-name", name)  # fmt: skip
    version = ocimirror(home, "repository", "sync", "--name", "foo", "--remote", "foo")
    assert version["number"] == 1
    ocimirror(home, "distribution", "create", "--name", "foo", "--base-path", "foo",
              "--repository", "foo")  # fmt: skip
    ocimirror(home, "distribution", "create", "--name", "foo-v1", "--base-path", "pinned/foo",
              "--repository", "foo", "--version", "1")  # fmt: skip
    with serving(home) as url:
        yield {"url": url, "home": home}


def test_skopeo_inspects_and_lists_tags(mirror: dict[str, Any]) -> None:
    url = mirror["url"]
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{url}/foo:1.0")
    assert raw.encode() == IMAGES["1.0"].manifest
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{url}/foo"))
    assert sorted(tags["Tags"]) == sorted(IMAGES)
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{url}/pinned/foo:1.0"))
    assert info["Digest"] == str(IMAGES["1.0"].digest)


@pytest.mark.parametrize("tag", ["1.0", "1.0-docker"])
@pytest.mark.parametrize("dest", ["dir", "oci"])
def test_skopeo_copies_by_tag_and_by_digest_with_the_upstream_digests(
    mirror: dict[str, Any], tmp_path: Path, tag: str, dest: str
) -> None:
    url, image = mirror["url"], IMAGES[tag]
    for i, ref in enumerate((f"foo:{tag}", f"foo@{image.digest}")):
        target = tmp_path / f"copy{i}"
        where = f"dir:{target}" if dest == "dir" else f"oci:{target}:x"
        skopeo("copy", "--preserve-digests", "--src-tls-verify=false", f"docker://{url}/{ref}",
               where)  # fmt: skip
        if dest == "dir":
            assert (target / "manifest.json").read_bytes() == image.manifest
        else:
            index = json.loads((target / "index.json").read_text())
            assert index["manifests"][0]["digest"] == str(image.digest)
        for blob in image.blobs():
            name = blob.digest.hex
            path = target / name if dest == "dir" else target / "blobs" / "sha256" / name
            assert path.read_bytes() == blob.data


@pytest.mark.parametrize("tag", ["multi", "multi-docker"])
def test_skopeo_copies_a_multi_arch_index_with_all(
    mirror: dict[str, Any], tmp_path: Path, tag: str
) -> None:
    index = IMAGES[tag]
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
           f"docker://{mirror['url']}/foo:{tag}", f"dir:{tmp_path / 'out'}")  # fmt: skip
    assert (tmp_path / "out" / "manifest.json").read_bytes() == index.manifest
    for child in index.images():
        assert (tmp_path / "out" / f"{child.digest.hex}.manifest.json").read_bytes() == (
            child.manifest
        )


def test_an_ocimirror_mirrors_another_ocimirror_with_digests_preserved(
    mirror: dict[str, Any], tmp_path: Path
) -> None:
    home = tmp_path / "second"
    ocimirror(home, "remote", "create", "--name", "first", "--url", f"http://{mirror['url']}",
              "--upstream-name", "foo")  # fmt: skip
    ocimirror(home, "repository", "create", "--name", "copy", "--remote", "first")
    version = ocimirror(home, "repository", "sync", "--name", "copy")
    first = ocimirror(mirror["home"], "repository", "version", "show", "--repository", "foo",
                      "--version", "1")  # fmt: skip
    assert version["content_summary"]["present"] == first["content_summary"]["present"]
    ocimirror(home, "distribution", "create", "--name", "copy", "--base-path", "copy",
              "--repository", "copy")  # fmt: skip
    with serving(home) as url:
        for tag, image in IMAGES.items():
            raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{url}/copy:{tag}")
            assert raw.encode() == image.manifest
