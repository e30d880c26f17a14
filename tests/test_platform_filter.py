"""A platform filter that keeps index digests (issue 11, part 3).

The index is kept byte for byte (its digest and every child's stay the upstream's); only the
children for the chosen platforms are downloaded, the others are remote content: fetched on
demand when the remote's policy allows, else answered 404 with a message naming the filter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.clients import Tool, describe
from fixtures.proxy import FaultProxy, ProxyFactory
from fixtures.registry import Registry

import ocimirror
from ocimirror.cli import main
from ocimirror.remote import SyncPolicy
from ocimirror.testing import Index, random_index, serving

PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/s390x")


@pytest.fixture
def upstream(
    docker_registry: Registry, registry_name: str, fault_proxy_factory: ProxyFactory
) -> dict[str, Any]:
    index = random_index(seed=f"{registry_name}-pf", platforms=PLATFORMS, layers=2)
    docker_registry.push(registry_name, index, "multi")
    return {
        "registry": docker_registry,
        "name": registry_name,
        "index": index,
        "proxy": fault_proxy_factory(docker_registry.url),
    }


def child(index: Index, platform: str) -> Any:
    def name(p: dict[str, str]) -> str:
        return "/".join(x for x in (p["os"], p["architecture"], p.get("variant")) if x)

    (image,) = [i for i in index.images() if i.platform and name(i.platform) == platform]
    return image


def blob_gets(proxy: FaultProxy) -> set[str]:
    return {r.path.rsplit("/", 1)[1] for r in proxy.requests if "/blobs/" in r.path}


def test_a_filtered_sync_keeps_the_index_and_downloads_only_the_chosen_children(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    index: Index = upstream["index"]
    proxy: FaultProxy = upstream["proxy"]
    home = tmp_path / "home"
    with ocimirror.open(home=home) as reg:
        reg.create_remote(
            name="up", url=proxy.url, upstream_name=upstream["name"], platforms=["linux/amd64"]
        )
        repo = reg.create_repository("mirror/app", remote="up")
        result = repo.sync()
        assert result.status == "complete"
        assert repo.tags() == {"multi": str(index.digest)}
        fetched = blob_gets(proxy)
        amd64 = child(index, "linux/amd64")
        assert {str(b.digest) for b in amd64.blobs()} <= fetched
        for platform in PLATFORMS[1:]:
            assert not {str(b.digest) for b in child(index, platform).blobs()} & fetched
        # Every child and blob is content of the version, counted like any other.
        summary = result.version.content_summary.present
        assert summary["container.manifest"] == 1 + len(PLATFORMS)
        assert summary["container.blob"] == len({str(b.digest) for b in index.blobs()})
        reg.create_distribution("app", base_path="mirror/app", repository="mirror/app")
    with serving(home, auth=False) as served:
        got = httpx.get(
            f"http://{served}/v2/mirror/app/manifests/multi",
            headers={"Accept": index.media_type},
            timeout=30,
        )
        assert got.content == index.manifest
        assert got.headers["docker-content-digest"] == str(index.digest)
        arm = child(index, "linux/arm64/v8")
        refused = httpx.get(
            f"http://{served}/v2/mirror/app/blobs/{arm.layers[0].digest}", timeout=30
        )
        assert refused.status_code == 404
        assert "linux/amd64" in refused.json()["errors"][0]["message"]


def test_filtered_out_children_come_on_demand_when_the_policy_allows(
    tmp_path: Path, upstream: dict[str, Any], skopeo: Tool
) -> None:
    index: Index = upstream["index"]
    proxy: FaultProxy = upstream["proxy"]
    home = tmp_path / "home"
    with ocimirror.open(home=home) as reg:
        reg.create_remote(name="up", url=proxy.url, upstream_name=upstream["name"],
                          platforms=["linux/amd64"], policy="on_demand")  # fmt: skip
        reg.create_repository("mirror/app", remote="up").sync()
        reg.create_distribution("app", base_path="mirror/app", repository="mirror/app")
    with serving(home, auth=False) as served:
        out = tmp_path / "all"
        done = skopeo.run("copy", "--all", "--src-tls-verify=false",
                          f"docker://{served}/mirror/app:multi", f"dir:{out}")  # fmt: skip
        assert done.returncode == 0, describe(done)
        assert (out / "manifest.json").read_bytes() == index.manifest
        for blob in index.blobs():
            assert (out / blob.digest.hex).read_bytes() == blob.data


def test_the_filter_is_a_sync_policy_and_a_cli_option_too(
    tmp_path: Path, upstream: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    index: Index = upstream["index"]
    proxy: FaultProxy = upstream["proxy"]
    with ocimirror.open(home=tmp_path / "py") as reg:
        reg.create_remote(name="up", url=proxy.url, upstream_name=upstream["name"])
        repo = reg.create_repository("app", remote="up")
        repo.sync(policy=SyncPolicy(platforms=["linux/s390x"]))
        assert repo.tags() == {"multi": str(index.digest)}
    s390x = {str(b.digest) for b in child(index, "linux/s390x").blobs()}
    amd64 = {str(b.digest) for b in child(index, "linux/amd64").blobs()}
    assert s390x <= blob_gets(proxy) and not amd64 & blob_gets(proxy)
    home = str(tmp_path / "cli")
    argv = ["remote", "create", "--name", "up", "--url", proxy.url, "--upstream-name",
            upstream["name"], "--platform", "linux/amd64",
            "--platform", "linux/arm64/v8"]  # fmt: skip
    assert main(["--home", home, *argv]) == 0
    out = capsys.readouterr().out
    assert '"linux/amd64"' in out and '"linux/arm64/v8"' in out
    assert main(["--home", home, "remote", "update", "--name", "up", "--platform", "bad"]) != 0
    assert "platform" in capsys.readouterr().err
