"""sync_all over worker processes: the work is shared, the report stays exact, a dead worker
costs only its own repositories, and stores that live in one process stay in it."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fixtures.proxy import FaultProxy
from fixtures.registry import Registry

import ocimirror
from ocimirror.cli import main
from ocimirror.errors import InvalidError
from ocimirror.sync import SyncProgress, SyncResult
from ocimirror.testing import random_image, random_layer
from ocimirror.workers import WorkerFailed

BASE = random_layer(2048, seed="workers-base")


def push_corpus(up: Registry, prefix: str, repos: int, tags: int) -> dict[str, dict[str, str]]:
    """``repos`` upstream repositories of ``tags`` images (one layer each, and a base layer
    they all share)."""
    digests: dict[str, dict[str, str]] = {}
    for r in range(repos):
        name = f"{prefix}/app-{r}"
        digests[name] = {}
        for t in range(tags):
            image = random_image(seed=f"{prefix}/{r}/{t}", layers=1, base=[BASE])
            up.push(name, image, f"1.{t}")
            digests[name][f"1.{t}"] = str(image.digest)
    return digests


def mirror_all(reg: ocimirror.Registry, url: str, upstream: dict[str, Any]) -> None:
    for name in upstream:
        local = name.rsplit("/", 1)[-1]
        reg.create_remote(name=local, url=url, upstream_name=name, max_retries=1)
        reg.create_repository(local, remote=local)


def worker_pids() -> list[int]:
    """This process's children that run ``python -m ocimirror.workers``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"ocimirror.workers" in cmdline:
            pids.append(int(entry.name))
    return pids


def upstream_requests(proxy: FaultProxy) -> Counter[str]:
    """What the upstream saw, by the kinds a SyncResult counts."""
    kinds: Counter[str] = Counter()
    for r in proxy.requests:
        if r.path.endswith("/tags/list") or "/tags/list?" in r.path:
            kinds["tags"] += 1
        elif "/referrers/" in r.path:
            kinds["referrers"] += 1
        elif r.path.startswith("/extensions/v2/"):
            kinds["signature"] += 1
        elif "/manifests/" in r.path:
            kinds["manifest_head" if r.method == "HEAD" else "manifest_get"] += 1
        elif "/blobs/" in r.path:
            kinds["blob_head" if r.method == "HEAD" else "blob"] += 1
        elif r.path.rstrip("/") == "/v2":
            kinds["ping"] += 1
    return kinds


def reported_requests(results: dict[str, SyncResult | BaseException]) -> Counter[str]:
    total: Counter[str] = Counter()
    for result in results.values():
        assert isinstance(result, SyncResult), result
        total.update({k: v for k, v in result.requests.items() if v})
    return total


def test_workers_share_the_repositories_and_the_report_stays_exact(
    registry: ocimirror.Registry,
    docker_registry: Registry,
    registry_proxy: FaultProxy,
    registry_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream = push_corpus(docker_registry, registry_name, repos=6, tags=3)
    mirror_all(registry, registry_proxy.url, upstream)
    registry_proxy.clear()
    # Each image's layer download takes a second: this process's two lanes are still busy
    # when the worker process is up, so it takes some repositories.
    registry_proxy.stall(1.0, times=1000, method="GET", path="/blobs/")
    shown: dict[str, SyncProgress] = {}
    with caplog.at_level(logging.DEBUG, logger="ocimirror"):
        results = registry.sync_all(
            workers=2, concurrency=8, progress=lambda p: shown.__setitem__(p.repository, p)
        )
    for name, tags in upstream.items():
        local = name.rsplit("/", 1)[-1]
        result = results[local]
        assert isinstance(result, SyncResult) and result.status == "complete"
        assert registry.repository(local).tags() == tags
        assert result.requests["manifest_get"] == 3 and result.requests["manifest_head"] == 0
        # Every blob of the repository is counted once: downloaded here, or reused.
        # 3 configs, 3 layers and BASE
        assert result.blobs_downloaded + result.blobs_reused == 7
        assert shown[local].phase == "done" and shown[local].tags_done == 3
    # The requests each result reports add up to what the upstream saw, whichever process
    # made them.
    assert reported_requests(results) == upstream_requests(registry_proxy)
    # The worker process synced some of them (its log lines come back marked).
    synced_by_worker = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("[worker 1]")
    ]
    assert any("synced 3 tags" in line for line in synced_by_worker)
    # The worker process is ocimirror's own: once its stores were open, it froze what it had
    # imported (ocimirror._process.settle). This process, a library's caller, froze nothing.
    froze = [r.getMessage() for r in caplog.records if "cycle collector" in r.getMessage()]
    assert froze and all(line.startswith("[worker 1]") for line in froze)

    # A quick no-op re-sync: HEADs only, no new version, and no worker process started for
    # it (its imports would cost more than the whole re-sync).
    registry_proxy.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ocimirror"):
        again = registry.sync_all(workers=2)
    for result in again.values():
        assert isinstance(result, SyncResult) and not result.created
        assert result.requests["manifest_head"] == 3 and result.requests["manifest_get"] == 0
    assert reported_requests(again) == upstream_requests(registry_proxy)
    assert not [r for r in caplog.records if r.getMessage().startswith("[worker")]


def test_a_long_no_op_resync_starts_the_workers_by_its_pace(
    registry: ocimirror.Registry,
    docker_registry: Registry,
    registry_proxy: FaultProxy,
    registry_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing to download, but at the calling loop's pace more than WORTH_A_WORKER seconds
    of work are left: the worker process starts and takes some of it."""
    upstream = push_corpus(docker_registry, registry_name, repos=12, tags=1)
    mirror_all(registry, registry_proxy.url, upstream)
    assert all(isinstance(r, SyncResult) and r.ok for r in registry.sync_all(workers=1).values())
    registry_proxy.clear()
    # Every tag listing takes a second; two lanes in this loop: about six seconds of work.
    registry_proxy.stall(1.0, times=1000, method="GET", path="/tags/list")
    with caplog.at_level(logging.INFO, logger="ocimirror"):
        again = registry.sync_all(workers=2, concurrency=4)
    assert all(isinstance(r, SyncResult) and r.ok and not r.created for r in again.values())
    assert reported_requests(again) == upstream_requests(registry_proxy)
    by_worker = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[worker 1]")]
    assert any("synced 1 tags" in line for line in by_worker)


def test_a_killed_worker_fails_only_its_repositories_and_the_rerun_takes_them_over(
    registry: ocimirror.Registry,
    docker_registry: Registry,
    registry_proxy: FaultProxy,
    registry_name: str,
) -> None:
    upstream = push_corpus(docker_registry, registry_name, repos=4, tags=2)
    mirror_all(registry, registry_proxy.url, upstream)
    # Every blob download stalls, so all four syncs are mid-download at once.
    registry_proxy.stall(5.0, times=1000, method="GET", path="/blobs/")
    killed: list[int] = []

    def kill_when_all_download(p: SyncProgress, seen: dict[str, str] = {}) -> None:  # noqa: B006
        seen[p.repository] = p.phase
        if not killed and list(seen.values()).count("downloading") == len(upstream):
            killed.extend(worker_pids())
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    results = registry.sync_all(workers=2, concurrency=4, progress=kill_when_all_download)
    assert len(killed) == 1
    failed = {n for n, r in results.items() if isinstance(r, WorkerFailed)}
    complete = {n for n, r in results.items() if isinstance(r, SyncResult) and r.ok}
    assert len(failed) == 2 and len(complete) == 2
    for name in failed:
        assert "exited" in str(results[name])
        assert registry.repository(name).latest_version().number == 0

    # The dead worker's leases are stale: the next sync takes those repositories over.
    registry_proxy.clear()
    rerun = registry.sync_all(failed, workers=2)
    assert all(isinstance(r, SyncResult) and r.ok for r in rerun.values())
    for name, tags in upstream.items():
        assert registry.repository(name.rsplit("/", 1)[-1]).tags() == tags
    assert registry.repair().ok


def test_stores_of_one_process_sync_in_it(
    docker_registry: Registry, registry_name: str, tmp_path: Path
) -> None:
    upstream = push_corpus(docker_registry, registry_name, repos=2, tags=1)
    reg = ocimirror.open(
        database_url=f"sqlite:///{tmp_path / 'm.db'}", storage_url=f"memory://{tmp_path.name}"
    )
    try:
        mirror_all(reg, docker_registry.url, upstream)
        with pytest.raises(InvalidError, match="memory:// blob store lives in one process"):
            reg.sync_all(workers=2)
        with pytest.raises(InvalidError, match="workers must be >= 1"):
            reg.sync_all(workers=0)
        # By default (one loop per core) it syncs here, in this process.
        results = reg.sync_all()
        assert all(isinstance(r, SyncResult) and r.ok for r in results.values())
        assert not worker_pids()
    finally:
        reg.close()


def test_the_cli_syncs_all_with_workers(
    docker_registry: Registry, registry_name: str, tmp_path: Path, capsys: Any
) -> None:
    upstream = push_corpus(docker_registry, registry_name, repos=3, tags=2)
    home = str(tmp_path / "home")
    for name in upstream:
        local = name.rsplit("/", 1)[-1]
        main(["--home", home, "remote", "create", "--name", local, "--url", docker_registry.url,
              "--upstream-name", name])  # fmt: skip
        main(["--home", home, "repository", "create", "--name", local, "--remote", local])
    capsys.readouterr()
    status = main(["--home", home, "repository", "sync", "--all", "--workers", "2"])
    out, err = capsys.readouterr()
    assert status == 0, err
    report = json.loads(out)
    assert sorted(r["repository"] for r in report) == ["app-0", "app-1", "app-2"]
    assert all(r["sync"]["status"] == "complete" and r["number"] == 1 for r in report)
    assert main(["--home", home, "repository", "sync", "--name", "app-0", "--workers", "2"]) == 2
