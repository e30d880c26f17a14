"""How fast is ocimirror's sync next to ``skopeo sync``, on the same corpus, in one run?

Everything runs on 127.0.0.1: an upstream Debian ``docker-registry`` is filled with a corpus of
deterministic random images (default 1,000 images over 40 repositories, 25 tags each; every
image is one of 4 shared base-layer sets of 2 layers of 256 KiB-1 MiB, plus 1-2 own layers of
8-64 KiB and a config). Then:

1. ``skopeo sync --src docker --dest docker`` of every repository, one invocation after another
   (as a user would: skopeo takes one source repository per call), into a second, empty
   ``docker-registry``; then the same again (a no-op re-sync).
2. ocimirror: a fresh home (SQLite + files), one remote and repository per upstream repository,
   ``registry.sync_all(concurrency=32)`` through the blocking facade (what
   ``ocimirror repository sync --all`` runs); then again (no-op). Every tag's digest is checked
   against the upstream's and requests are counted.
3. One image with a single 512 MiB layer (written to a file in a stream, pushed from it):
   ``skopeo sync --src docker --dest dir`` vs ocimirror's sync of it in a subprocess, with the
   peak RSS of both processes.

It prints a table with the ocimirror/skopeo ratios and the targets, and the command line.
Processes and temporary directories are cleaned up; a global deadline stops it::

    .venv/bin/python benchmarks/sync_vs_skopeo.py                 # the full corpus, once
    .venv/bin/python benchmarks/sync_vs_skopeo.py --repeat 3      # medians of 3 rounds
    .venv/bin/python benchmarks/sync_vs_skopeo.py --quick         # 120 images over 8 repositories
    .venv/bin/python benchmarks/sync_vs_skopeo.py --json result.json

Each round starts from nothing (a fresh downstream registry, a fresh ocimirror home); odd
rounds run ocimirror first, so neither tool always meets a warmer upstream. Peak RSS is read
with GNU time (see :func:`run_measured` for why not with ``wait4``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
import traceback
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from fixtures.registry import Registry, run_registry  # noqa: E402

import ocimirror  # noqa: E402
from ocimirror.core.digest import Digest  # noqa: E402
from ocimirror.sync import SyncResult  # noqa: E402
from ocimirror.testing import CREATED, Blob, random_image, random_layer  # noqa: E402

SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
#: GNU time, for the peak RSS of a child (see run_measured); without it RSS is not reported.
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
MiB = 1 << 20
KiB = 1 << 10

TARGETS = {
    "full": ("full sync", 0.15),
    "noop": ("no-op re-sync", 0.20),
    "big": ("512 MiB layer (into a dir)", 1.00),
}
RSS_TARGET_MB = 200.0

_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class Deadline(Exception):
    """The benchmark ran past --timeout."""


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Print rows under a header: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for i, row in enumerate([header, *rows]):
        print(
            "  ".join(
                str(v).ljust(w) if j == 0 else str(v).rjust(w)
                for j, (v, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the corpus ------------------------------------------------------------------------------


def corpus_plan(images: int, repos: int) -> tuple[list[list[Blob]], list[dict[str, Any]]]:
    """The 4 base sets and one spec per image (repository, tag, seed, base set, own layers)."""
    rng = random.Random("ocimirror.bench.sync/corpus")
    bases = [
        [
            random_layer(rng.randint(256 * KiB, MiB), seed=f"sync-bench/base-{b}/{j}")
            for j in range(2)
        ]
        for b in range(4)
    ]
    tags_per_repo = max(1, images // repos)
    specs = []
    for r in range(repos):
        name = f"bench/app-{r:02d}"
        for t in range(tags_per_repo):
            specs.append(
                {
                    "repo": name,
                    "tag": f"1.{t}.0",
                    "seed": f"sync-bench/{name}/{t}",
                    "base": (r + t) % 4,
                    "layers": rng.randint(1, 2),
                    "layer_size": rng.randint(8 * KiB, 64 * KiB),
                }
            )
    return bases, specs


def push_corpus(
    upstream: Registry, bases: list[list[Blob]], specs: list[dict[str, Any]], workers: int
) -> tuple[dict[tuple[str, str], str], dict[str, int]]:
    """Push every image (a thread per repository at a time).

    Returns ``(repo, tag) -> manifest digest`` and the size of every distinct blob.
    """
    sizes: dict[str, int] = {}
    by_repo: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        by_repo.setdefault(spec["repo"], []).append(spec)

    def push_repo(name: str) -> dict[tuple[str, str], str]:
        pushed: set[Digest] = set()  # blobs this repository already has
        digests = {}
        with Registry(upstream.url) as client:
            for spec in by_repo[name]:
                image = random_image(
                    seed=spec["seed"],
                    layers=spec["layers"],
                    layer_size=spec["layer_size"],
                    base=bases[spec["base"]],
                )
                for blob in image.blobs():
                    sizes[str(blob.digest)] = blob.size
                    if blob.digest not in pushed:
                        client.push_blob(name, blob)
                        pushed.add(blob.digest)
                client.push_manifest(name, spec["tag"], image.manifest, image.media_type)
                digests[(name, spec["tag"])] = str(image.digest)
        return digests

    result: dict[tuple[str, str], str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(push_repo, list(by_repo)):
            result.update(part)
    return result, sizes


def upstream_digests(upstream: Registry, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """What the upstream registry answers for every (repository, tag) (``HEAD``)."""
    local = threading.local()

    def head(key: tuple[str, str]) -> tuple[tuple[str, str], str]:
        if not hasattr(local, "client"):
            local.client = Registry(upstream.url)
        return key, str(local.client.manifest_digest(*key))

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(head, keys))


# -- the big layer ---------------------------------------------------------------------------


def write_big_layer(path: Path, size: int, seed: str) -> tuple[Digest, int, Digest]:
    """A gzip (stored blocks) tar holding one file of ``size`` pseudo-random bytes, written in
    1 MiB chunks; returns (blob digest, blob size, diff_id)."""
    rng = random.Random(seed)
    blob_hash, tar_hash = hashlib.sha256(), hashlib.sha256()
    crc, tar_size, blob_size = 0, 0, 0
    with path.open("wb") as out:

        def put(data: bytes) -> None:
            nonlocal blob_size
            out.write(data)
            blob_hash.update(data)
            blob_size += len(data)

        def tar(data: bytes) -> None:  # one piece of the tar, as non-final stored blocks
            nonlocal crc, tar_size
            tar_hash.update(data)
            crc = zlib.crc32(data, crc)
            tar_size += len(data)
            view = memoryview(data)
            for pos in range(0, len(data), 0xFFFF):
                block = view[pos : pos + 0xFFFF]
                put(b"\x00" + struct.pack("<HH", len(block), len(block) ^ 0xFFFF))
                put(bytes(block))

        put(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        info = tarfile.TarInfo("random/big.bin")
        info.size, info.mode, info.mtime = size, 0o644, 1704067200
        tar(info.tobuf(format=tarfile.USTAR_FORMAT))
        left = size
        while left:
            n = min(left, MiB)
            tar(rng.randbytes(n))
            left -= n
        tar(b"\0" * ((-size) % 512) + b"\0" * 1024)
        put(b"\x01" + struct.pack("<HH", 0, 0xFFFF))  # the final (empty) stored block
        put(struct.pack("<II", crc, tar_size & 0xFFFFFFFF))
    blob_digest = Digest("sha256", blob_hash.hexdigest())
    return blob_digest, blob_size, Digest("sha256", tar_hash.hexdigest())


def push_big_image(
    upstream: Registry, name: str, layer: Path, size: int, digest: Digest, diff_id: Digest
) -> str:
    """Push the layer from its file (monolithic ``PUT``, streamed), a config and a manifest."""
    with httpx.Client(base_url=upstream.url, trust_env=False, timeout=600.0) as http:
        started = http.post(f"/v2/{name}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = httpx.URL(upstream.url).join(started.headers["Location"])
        location = location.copy_merge_params({"digest": str(digest)})

        def chunks() -> Iterator[bytes]:
            with layer.open("rb") as f:
                while chunk := f.read(MiB):
                    yield chunk

        done = http.put(
            location,
            content=chunks(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        assert done.status_code == 201, done.text
    config = {
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]},
        "history": [{"created": CREATED, "created_by": "sync_vs_skopeo big layer"}],
    }
    config_blob = Blob(_OCI_CONFIG, json.dumps(config, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": _OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [{"mediaType": _OCI_LAYER_GZIP, "digest": str(digest), "size": size}],
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    with Registry(upstream.url) as client:
        client.push_blob(name, config_blob)
        return str(client.push_manifest(name, "latest", raw, _OCI_MANIFEST))


# -- processes -------------------------------------------------------------------------------


def run_measured(
    cmd: list[str], *, timeout: float, cwd: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a command to its end: wall time, peak RSS (MB), CPU seconds, exit code, output.

    Peak RSS comes from ``/usr/bin/time``, not from our own ``wait4``: Python starts children
    with vfork, and on exec the kernel folds the RSS of the mm being left (this process's) into
    the child's ``ru_maxrss``, so ``wait4``/``RUSAGE_CHILDREN`` would report at least the
    benchmark's own size. The child runs in its own session; after ``timeout`` seconds the
    whole group is killed. Output goes through files (no pipe to fill).
    """
    with (
        tempfile.TemporaryFile(dir=cwd) as out,
        tempfile.TemporaryFile(dir=cwd) as err,
        tempfile.NamedTemporaryFile(dir=cwd) as timing,
    ):
        wrapped = [TIME, "-f", "%M", "-o", timing.name, *cmd] if TIME else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(
            wrapped,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        kill()  # anything the command left behind in its group
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        rss = None
        if TIME:
            lines = Path(timing.name).read_text().split()
            rss = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None
        result = {
            "wall": wall,
            "rss_mb": rss,  # KiB from time(1)
            "cpu": usage.ru_utime + usage.ru_stime,  # CPU times are the child's own
            "rc": proc.returncode,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }
    if result["rc"] != 0:
        tail = result["stderr"][-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} exited with {result['rc']}:\n{tail}")
    return result


_REQUEST = re.compile(rb'"(GET|HEAD|POST|PUT|PATCH|DELETE) /v2/')


class AccessLog:
    """Counts the requests a registry logged (its access log) since the last mark."""

    def __init__(self, registry: Registry) -> None:
        assert registry.log_path is not None
        self.path = registry.log_path
        self.offset = self.path.stat().st_size

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since(self) -> int:
        time.sleep(0.2)  # let the registry finish writing its last lines
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        return len(_REQUEST.findall(data))


def clean_env() -> dict[str, str]:
    """This environment without OCIMIRROR_* or proxy settings (everything is on loopback)."""
    drop = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OCIMIRROR_") and k.lower() not in drop
    }


# -- the phases ------------------------------------------------------------------------------


class ProcessCPU:
    """CPU seconds (user + system) of one process we started, read from ``/proc``."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._ticks = os.sysconf("SC_CLK_TCK")

    @classmethod
    def of_registry(cls, registry: Registry) -> ProcessCPU:
        """The ``docker-registry`` serving ``registry`` (found by its config file's path)."""
        assert registry.log_path is not None
        config = str(registry.log_path.parent / "config.yml").encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if config in argv and any(a.endswith(b"docker-registry") for a in argv):
                    return cls(int(entry.name))
        return cls(None)

    def seconds(self) -> float:
        if self.pid is None:
            return float("nan")
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime, stime


def skopeo_sync_all(
    up: Registry, down: Registry, repos: list[str], work: Path, timeout: float
) -> dict[str, Any]:
    """``skopeo sync`` every repository, one after another; totals."""
    wall = cpu = rss = 0.0
    start = time.perf_counter()
    for name in repos:
        r = run_measured(
            [
                SKOPEO,
                "sync",
                "--src",
                "docker",
                "--dest",
                "docker",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"{up.host}/{name}",
                f"{down.host}/mirror",
            ],
            timeout=timeout,
            cwd=work,
            env=clean_env(),
        )
        cpu += r["cpu"]
        rss = max(rss, r["rss_mb"] or 0.0)
    wall = time.perf_counter() - start
    return {"wall": wall, "cpu": cpu, "rss_mb": rss, "invocations": len(repos)}


def sum_requests(results: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for result in results.values():
        for kind, n in result.requests.items():
            total[kind] = total.get(kind, 0) + n
    return {k: v for k, v in total.items() if v}


def check_results(results: dict[str, Any], *, created: bool) -> dict[str, int]:
    bad = {n: r for n, r in results.items() if not isinstance(r, SyncResult) or not r.ok}
    if bad:
        sample = dict(list(bad.items())[:3])
        raise RuntimeError(f"sync failed for {len(bad)} repositories: {sample}")
    wrong = [n for n, r in results.items() if r.created != created]
    if wrong:
        raise RuntimeError(f"created != {created} for {wrong[:5]}")
    keys = (
        "manifests_downloaded",
        "manifests_reused",
        "blobs_downloaded",
        "blobs_reused",
        "bytes_downloaded",
        "tags",
    )
    return {k: sum(getattr(r, k) for r in results.values()) for k in keys}


BIG_SYNC = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import ocimirror
    home, url, name = sys.argv[1:4]
    with ocimirror.open(home=home, database_url=f"sqlite:///{home}/metadata.db",
                        storage_url="file://" + home + "/storage") as reg:
        reg.create_remote(name="big", url=url, upstream_name=name)
        repo = reg.create_repository("big", remote="big")
        t1 = time.perf_counter()
        result = repo.sync()
        t2 = time.perf_counter()
        tags = repo.tags()
    assert result.ok and result.blobs_downloaded == 2, result
    # VmHWM: this process's own peak RSS (a cross-check of what time(1) reports).
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    print(json.dumps({"startup": t1 - t0, "sync": t2 - t1, "tags": tags,
                      "requests": {k: v for k, v in result.requests.items() if v},
                      "bytes": result.bytes_downloaded, "vmhwm_mb": int(status) / 1024}))
    """
)


class Bench:
    """One benchmark run: the upstream, the corpus, and the measurements of each round."""

    def __init__(self, args: argparse.Namespace, work: Path, up: Registry) -> None:
        self.args = args
        self.work = work
        self.up = up
        self.access = AccessLog(up)
        self.up_cpu = ProcessCPU.of_registry(up)
        self.repos: list[str] = []
        self.truth: dict[tuple[str, str], str] = {}
        self.tags_per_repo = 0
        self.big_digest: str | None = None

    def measured(self, fn: Any, *, downstream: ProcessCPU | None = None) -> dict[str, Any]:
        """Run ``fn`` (which returns a dict with ``wall``) and add what the registries did."""
        self.access.mark()
        up0 = self.up_cpu.seconds()
        down0 = downstream.seconds() if downstream else 0.0
        result: dict[str, Any] = fn()
        result["upstream_requests"] = self.access.since()
        result["upstream_registry_cpu"] = self.up_cpu.seconds() - up0
        if downstream is not None:
            result["downstream_registry_cpu"] = downstream.seconds() - down0
        return result

    # -- the corpus ------------------------------------------------------------------------

    def setup(self) -> dict[str, Any]:
        args = self.args
        bases, specs = corpus_plan(args.images, args.repos)
        self.repos = sorted({s["repo"] for s in specs})
        self.tags_per_repo = len(specs) // len(self.repos)
        start = time.perf_counter()
        pushed, sizes = push_corpus(self.up, bases, specs, args.push_workers)
        push_time = time.perf_counter() - start
        log(
            f"pushed {len(pushed)} images over {len(self.repos)} repositories "
            f"({self.tags_per_repo} tags each; {len(sizes)} distinct blobs, "
            f"{sum(sizes.values()) / MiB:.1f} MiB) in {push_time:.1f}s"
        )
        self.truth = upstream_digests(self.up, sorted(pushed))
        assert self.truth == pushed, "the upstream does not serve what was pushed"
        corpus = {
            "images": len(pushed),
            "repos": len(self.repos),
            "tags_per_repo": self.tags_per_repo,
            "distinct_blobs": len(sizes),
            "distinct_blob_bytes": sum(sizes.values()),
            "push_seconds": push_time,
        }
        if not args.skip_big:
            layer = self.work / "big-layer.tar.gz"
            start = time.perf_counter()
            digest, blob_size, diff_id = write_big_layer(
                layer, args.big_mib * MiB, "sync-bench/big"
            )
            self.big_digest = push_big_image(
                self.up, "bench/big", layer, blob_size, digest, diff_id
            )
            layer.unlink()
            corpus["big_layer_bytes"] = blob_size
            log(
                f"big image: a {blob_size / MiB:.1f} MiB layer written and pushed in "
                f"{time.perf_counter() - start:.1f}s"
            )
        return corpus

    # -- skopeo ----------------------------------------------------------------------------

    def skopeo(self, round_: int) -> dict[str, Any]:
        directory = self.work / f"downstream-{round_}"
        with run_registry(directory) as down:
            down_cpu = ProcessCPU.of_registry(down)

            def once() -> dict[str, Any]:
                return skopeo_sync_all(self.up, down, self.repos, self.work, self.args.timeout)

            log(f"round {round_}: skopeo sync of {len(self.repos)} repositories (full) ...")
            full = self.measured(once, downstream=down_cpu)
            log(f"round {round_}: skopeo full: {full['wall']:.1f}s")
            have = {n: down.tags(f"mirror/{n.rsplit('/', 1)[1]}") for n in self.repos}
            wrong = [n for n, tags in have.items() if len(tags) != self.tags_per_repo]
            if wrong:
                raise RuntimeError(f"skopeo left {len(wrong)} repositories incomplete: {wrong[:3]}")
            log(f"round {round_}: skopeo sync (no-op) ...")
            noop = self.measured(once, downstream=down_cpu)
            log(f"round {round_}: skopeo no-op: {noop['wall']:.1f}s")
        shutil.rmtree(directory, ignore_errors=True)
        return {"full": full, "noop": noop}

    # -- ocimirror -------------------------------------------------------------------------

    def ocimirror(self, round_: int) -> dict[str, Any]:
        home = self.work / f"ocimirror-{round_}"
        start = time.perf_counter()
        reg = ocimirror.open(
            home=home,
            database_url=f"sqlite:///{home}/metadata.db",
            storage_url=(home / "storage").as_uri(),
        )
        for i, name in enumerate(self.repos):
            reg.create_remote(name=f"up-{i:03d}", url=self.up.url, upstream_name=name)
            reg.create_repository(name, remote=f"up-{i:03d}")
        setup_time = time.perf_counter() - start

        def once(created: bool) -> dict[str, Any]:
            cpu0, start = time.process_time(), time.perf_counter()
            results = reg.sync_all(concurrency=self.args.concurrency)
            out: dict[str, Any] = {
                "wall": time.perf_counter() - start,
                "cpu": time.process_time() - cpu0,
            }
            out["counts"] = check_results(results, created=created)
            out["requests"] = sum_requests(results)
            return out

        log(f"round {round_}: ocimirror sync_all (full) ...")
        full = self.measured(lambda: once(True))
        full["setup_seconds"] = setup_time
        log(f"round {round_}: ocimirror full: {full['wall']:.1f}s")
        log(f"round {round_}: ocimirror sync_all (no-op) ...")
        noop = self.measured(lambda: once(False))
        if noop["counts"]["manifests_downloaded"] or noop["counts"]["blobs_downloaded"]:
            raise RuntimeError(f"the no-op re-sync downloaded something: {noop['counts']}")
        log(f"round {round_}: ocimirror no-op: {noop['wall']:.1f}s")
        # Every repository has every tag, each at the digest the upstream serves.
        wrong = []
        for name in self.repos:
            tags = reg.repository(name).tags()
            want = {t: d for (n, t), d in self.truth.items() if n == name}
            if len(tags) != self.tags_per_repo or tags != want:
                wrong.append(name)
        if wrong:
            raise RuntimeError(f"{len(wrong)} repositories differ from the upstream: {wrong[:3]}")
        log(
            f"round {round_}: verified {len(self.repos)} repositories x {self.tags_per_repo} "
            "tags against the upstream's digests"
        )
        reg.close()
        shutil.rmtree(home, ignore_errors=True)
        return {"full": full, "noop": noop}

    # -- the big layer ---------------------------------------------------------------------

    def big_skopeo(self, round_: int) -> dict[str, Any]:
        target = self.work / f"skopeo-dir-{round_}"

        def once() -> dict[str, Any]:
            return run_measured(
                [
                    SKOPEO,
                    "sync",
                    "--src",
                    "docker",
                    "--dest",
                    "dir",
                    "--src-tls-verify=false",
                    f"{self.up.host}/bench/big",
                    str(target),
                ],
                timeout=self.args.timeout,
                cwd=self.work,
                env=clean_env(),
            )

        result = self.measured(once)
        shutil.rmtree(target, ignore_errors=True)
        del result["stdout"], result["stderr"]
        log(f"round {round_}: skopeo big: {result['wall']:.2f}s, {mb(result['rss_mb'])}")
        return result

    def big_ocimirror(self, round_: int) -> dict[str, Any]:
        home = self.work / f"ocimirror-big-{round_}"

        def once() -> dict[str, Any]:
            return run_measured(
                [sys.executable, "-c", BIG_SYNC, str(home), self.up.url, "bench/big"],
                timeout=self.args.timeout,
                cwd=self.work,
                env=clean_env(),
            )

        result = self.measured(once)
        inner = json.loads(result["stdout"].strip().splitlines()[-1])
        if inner["tags"] != {"latest": self.big_digest}:
            raise RuntimeError(f"the big image synced wrong: {inner['tags']}")
        shutil.rmtree(home, ignore_errors=True)
        del result["stdout"], result["stderr"], inner["tags"]
        result.update(inner)
        log(f"round {round_}: ocimirror big: {result['wall']:.2f}s, {mb(result['rss_mb'])}")
        return result

    def round(self, round_: int) -> dict[str, Any]:
        """One measurement of everything; odd rounds run ocimirror first."""
        first_skopeo = round_ % 2 == 0
        parts: dict[str, dict[str, Any]] = {"full": {}, "noop": {}}
        for tool in ("skopeo", "ocimirror") if first_skopeo else ("ocimirror", "skopeo"):
            got = self.skopeo(round_) if tool == "skopeo" else self.ocimirror(round_)
            parts["full"][tool], parts["noop"][tool] = got["full"], got["noop"]
        if not self.args.skip_big:
            parts["big"] = {}
            for tool in ("skopeo", "ocimirror") if first_skopeo else ("ocimirror", "skopeo"):
                run = self.big_skopeo if tool == "skopeo" else self.big_ocimirror
                parts["big"][tool] = run(round_)
        return parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the corpus")
    parser.add_argument("--repos", type=int, default=40, help="repositories they spread over")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a quick run: 120 images over 8 repositories, a 64 MiB layer",
    )
    parser.add_argument("--big-mib", type=int, default=512, help="size of the big layer (MiB)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure everything N times; report medians"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="sync_all's concurrency")
    parser.add_argument("--push-workers", type=int, default=8)
    parser.add_argument("--skip-big", action="store_true", help="leave out the big-layer part")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="where the temporary directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="stop everything after this many seconds"
    )
    args = parser.parse_args()
    if args.quick:
        args.images, args.repos = 120, 8
        if args.big_mib == 512:
            args.big_mib = 64
    if args.images < args.repos or args.repos < 1 or args.repeat < 1:
        parser.error("--images must be >= --repos >= 1, and --repeat >= 1")
    if not Path(SKOPEO).exists():
        parser.error("skopeo is not installed")

    def on_alarm(signum: int, frame: Any) -> None:
        raise Deadline(f"the benchmark ran past --timeout {args.timeout:.0f}s")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(max(1, int(args.timeout)))

    python = sys.executable
    if python.startswith(str(ROOT)):
        python = os.path.relpath(python, ROOT)
    command = shlex.join([python, os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    figures: dict[str, Any] = {
        "command": command,
        "cpus": os.cpu_count(),
        "skopeo": subprocess.run(
            [SKOPEO, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }
    work = Path(tempfile.mkdtemp(prefix="ocimirror-sync-bench-", dir=args.workdir))
    log(f"work directory {work}")
    try:
        with run_registry(work / "upstream") as up:
            log(f"upstream docker-registry at {up.url}")
            bench = Bench(args, work, up)
            figures["corpus"] = bench.setup()
            figures["rounds"] = [bench.round(i) for i in range(args.repeat)]
    except BaseException:
        signal.alarm(0)
        traceback.print_exc()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # An interrupted sync may still hold the loop thread: do not wait for it.
        os._exit(1)
    signal.alarm(0)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    figures["summary"] = summarize(figures["rounds"])
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of every figure the table shows."""
    summary: dict[str, Any] = {}
    for key in rounds[0]:
        summary[key] = {}
        for tool in ("skopeo", "ocimirror"):
            values: dict[str, list[float]] = {}
            for r in rounds:
                for name, value in r[key][tool].items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        values.setdefault(name, []).append(value)
            summary[key][tool] = {name: statistics.median(v) for name, v in values.items()}
            summary[key][tool]["walls"] = [r[key][tool]["wall"] for r in rounds]
        summary[key]["ratio"] = summary[key]["ocimirror"]["wall"] / summary[key]["skopeo"]["wall"]
        summary[key]["target"] = TARGETS[key][1]
        summary[key]["met"] = summary[key]["ratio"] <= TARGETS[key][1]
    if "big" in summary:
        rss = summary["big"]["ocimirror"].get("rss_mb")
        summary["big"]["rss_met"] = rss is not None and rss < RSS_TARGET_MB
    return summary


def label(key: str, corpus: dict[str, Any]) -> str:
    if key == "big":
        return f"{corpus['big_layer_bytes'] / MiB:.0f} MiB layer, into a dir (process)"
    return TARGETS[key][0]


def report(figures: dict[str, Any]) -> None:
    c, s = figures["corpus"], figures["summary"]
    rounds = len(figures["rounds"])
    print()
    print(
        f"corpus: {c['images']} images over {c['repos']} repositories ({c['tags_per_repo']} "
        f"tags each), 4 shared base sets; {c['distinct_blobs']} distinct blobs, "
        f"{c['distinct_blob_bytes'] / MiB:.1f} MiB; pushed in {c['push_seconds']:.1f}s "
        "(not compared)"
    )
    print(
        f"machine: {figures['cpus']} CPUs; {figures['skopeo']}; "
        f"{'median of ' + str(rounds) + ' rounds' if rounds > 1 else 'one round'}"
    )
    rows: list[tuple[str, ...]] = []
    for key, (_, target) in TARGETS.items():
        if key not in s:
            continue
        sk, om = s[key]["skopeo"]["wall"], s[key]["ocimirror"]["wall"]
        rows.append(
            (
                label(key, c),
                f"{sk:.2f} s",
                f"{om:.2f} s",
                f"{s[key]['ratio']:.3f}x",
                f"<= {target:.2f}x",
                "ok" if s[key]["met"] else "MISSED",
            )
        )
    if "big" in s:
        sk, om = s["big"]["skopeo"], s["big"]["ocimirror"]
        rows.append(
            (
                "  ocimirror's sync call alone (no startup)",
                "",
                f"{om['sync']:.2f} s",
                f"{om['sync'] / sk['wall']:.3f}x",
                "",
                "",
            )
        )
        rows.append(
            (
                "peak RSS, big-layer sync",
                mb(sk.get("rss_mb")),
                mb(om.get("rss_mb")),
                f"{om['rss_mb'] / sk['rss_mb']:.2f}x"
                if om.get("rss_mb") and sk.get("rss_mb")
                else "",
                f"< {RSS_TARGET_MB:.0f} MB",
                "ok" if s["big"]["rss_met"] else "MISSED",
            )
        )
    for key in ("full", "noop"):
        sk, om = s[key]["skopeo"], s[key]["ocimirror"]
        name = TARGETS[key][0]
        rows.append(
            (
                f"  {name}: requests to the upstream",
                f"{sk['upstream_requests']:.0f}",
                f"{om['upstream_requests']:.0f}",
                "",
                "",
                "",
            )
        )
        rows.append(
            (
                f"  {name}: CPU s of the tool",
                f"{sk['cpu']:.1f}",
                f"{om['cpu']:.1f}",
                "",
                "",
                "",
            )
        )
        rows.append(
            (
                f"  {name}: CPU s of the registries",
                f"{sk['upstream_registry_cpu'] + sk.get('downstream_registry_cpu', 0):.1f}",
                f"{om['upstream_registry_cpu']:.1f}",
                "",
                "",
                "",
            )
        )
    print_table(("measurement", "skopeo", "ocimirror", "ratio", "target", ""), rows)
    if rounds > 1:
        print()
        for key in s:
            walls = {
                t: ", ".join(f"{w:.2f}" for w in s[key][t]["walls"])
                for t in ("skopeo", "ocimirror")
            }
            print(
                f"{label(key, c)} per round (s): skopeo [{walls['skopeo']}], "
                f"ocimirror [{walls['ocimirror']}]"
            )
    last = figures["rounds"][-1]
    full, noop = last["full"]["ocimirror"], last["noop"]["ocimirror"]
    print()
    print(f"ocimirror full sync (last round): {full['counts']}")
    print(f"  requests (SyncResult.requests summed): {full['requests']}")
    print(f"ocimirror no-op re-sync: requests {noop['requests']}")
    reported = full["counts"]["bytes_downloaded"]
    actual = c["distinct_blob_bytes"]
    # bytes_downloaded counts every body received: the distinct blobs plus the manifests.
    if not actual <= reported < 1.05 * actual:
        print(
            f"NOTE: SyncResult.bytes_downloaded sums to {reported / MiB:.1f} MiB, but the corpus "
            f"holds {actual / MiB:.1f} MiB of distinct blobs, each downloaded once "
            f"({full['counts']['blobs_downloaded']} blobs), plus manifests"
        )
    if "big" in last:
        om = last["big"]["ocimirror"]
        print(
            f"ocimirror big (last round): process {om['wall']:.2f}s = interpreter, imports and "
            f"setup {om['startup']:.2f}s + sync {om['sync']:.2f}s + exit; VmHWM "
            f"{om['vmhwm_mb']:.0f} MB"
        )
    print(
        "skopeo: one `skopeo sync` per repository, in sequence; its figures are the sum. "
        "Requests to the upstream are counted in its access log."
    )
    print()
    print(f"command: {figures['command']}")


if __name__ == "__main__":
    sys.exit(main())
