"""How fast is ocimirror's sync next to ``skopeo sync``, on the same corpus, in one run?

Everything runs on 127.0.0.1: an upstream Debian ``docker-registry`` is filled with a corpus of
deterministic random images (default 1,000 images over 40 repositories, 25 tags each; every
image is one of 4 shared base-layer sets of 2 layers of 256 KiB-1 MiB, plus 1-2 own layers of
8-64 KiB and a config), and with a scale corpus ``--scale`` times larger (default 4: 4,000
images over 160 repositories named ``bench-x4/app-NNN``; the same shape, the same 4 base sets,
the same tags per repository). Then:

1. ``skopeo sync --src docker --dest docker`` of every repository, one invocation after another
   (as a user would: skopeo takes one source repository per call), into a second, empty
   ``docker-registry``; then the same again (a no-op re-sync).
2. ocimirror: a fresh home (SQLite + files) with one remote and repository per upstream
   repository, made by this process, which then closes it; the sync runs in a subprocess that
   opens the home and calls ``registry.sync_all(concurrency=32, workers=--workers)`` through
   the blocking facade (what ``ocimirror repository sync --all`` runs: by default one event
   loop per core, the subprocess's own plus worker processes, see :mod:`ocimirror.workers`);
   then a second subprocess does it again (no-op). The ratio to skopeo is that of the
   ``sync_all`` call's wall time, timed inside the subprocess (as earlier versions of this
   benchmark timed it in-process); the whole process's wall time (interpreter, imports,
   opening the stores, exit), its CPU time (the worker processes included) and peak RSS are
   reported too. Every result must be ok; afterwards every tag's digest is checked against the
   upstream's, and requests are counted.
3. The same ocimirror full and no-op syncs of the scale corpus (ocimirror only), for the time
   per image at 1x and at the scale: the target is that it grows by at most 20%.
4. One image with a single 512 MiB layer (written to a file in a stream, pushed from it):
   ``skopeo sync --src docker --dest dir`` vs ocimirror's sync of it in a subprocess, with the
   peak RSS of both processes.

It prints a table with the ocimirror/skopeo ratios and the targets, one of the scaling, and
the command line. Processes and temporary directories are cleaned up; a global deadline stops
it::

    .venv/bin/python benchmarks/sync_vs_skopeo.py                 # the full corpus, once
    .venv/bin/python benchmarks/sync_vs_skopeo.py --repeat 3      # medians of 3 rounds
    .venv/bin/python benchmarks/sync_vs_skopeo.py --workers 1     # one event loop, no workers
    .venv/bin/python benchmarks/sync_vs_skopeo.py --scale 0       # without the scale corpus
    .venv/bin/python benchmarks/sync_vs_skopeo.py --quick         # 120 images over 8 repositories
    .venv/bin/python benchmarks/sync_vs_skopeo.py --json result.json

Each round starts from nothing (a fresh downstream registry, fresh ocimirror homes); odd
rounds run everything in the opposite order (ocimirror's scale corpus, then its main corpus,
then skopeo), so neither tool always meets a warmer upstream. Peak RSS is read with GNU time
(see :func:`run_measured` for why not with ``wait4``); for a command with child processes it
is the peak of the largest single process of the tree (the benchmark's subprocess or one of
its workers), not their sum.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
#: Time per image of the scale corpus over that of the main corpus (full and no-op), at most.
SCALE_TARGET = 1.20

_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class Deadline(Exception):
    """The benchmark ran past --timeout."""


def start_deadline(timeout: float) -> None:
    """Raise :class:`Deadline` in the main thread after ``timeout`` seconds, and make SIGTERM a
    ``SystemExit``, so either way the benchmark's cleanups run."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Deadline(f"the benchmark ran past --timeout {timeout:.0f}s")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(max(1, int(timeout)))


def compile_package() -> None:
    """Write ocimirror's byte-code, as an installed wheel has it: processes this benchmark
    starts then load it instead of compiling every module (an editable install under
    ``PYTHONDONTWRITEBYTECODE`` would, in each of them)."""
    import compileall

    compileall.compile_dir(ROOT / "ocimirror", quiet=1)


def command_line(script: str) -> str:
    """The command that reproduces this run, paths relative to the repository."""
    python = sys.executable
    if python.startswith(str(ROOT)):
        python = os.path.relpath(python, ROOT)
    return shlex.join([python, os.path.relpath(script, ROOT), *sys.argv[1:]])


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def rss_row(left: dict[str, Any], right: dict[str, Any]) -> tuple[str, ...]:
    """A table row with the peak RSS of two measurements and their ratio."""
    a, b = left.get("rss_mb"), right.get("rss_mb")
    ratio = f"{b / a:.2f}x" if a and b else ""
    return ("  peak RSS (largest process)", mb(a), mb(b), ratio, "", "")


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


def corpus_plan(
    images: int, repos: int, prefix: str = "bench"
) -> tuple[list[list[Blob]], list[dict[str, Any]]]:
    """The 4 base sets and one spec per image (repository, tag, seed, base set, own layers).

    Repositories are named ``<prefix>/app-NN``; every corpus gets the same base sets (their
    seeds and sizes come first), so corpora of other sizes differ only in how many there are.
    """
    rng = random.Random("ocimirror.bench.sync/corpus")
    bases = [
        [
            random_layer(rng.randint(256 * KiB, MiB), seed=f"sync-bench/base-{b}/{j}")
            for j in range(2)
        ]
        for b in range(4)
    ]
    tags_per_repo = max(1, images // repos)
    width = max(2, len(str(repos - 1)))
    specs = []
    for r in range(repos):
        name = f"{prefix}/app-{r:0{width}d}"
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
        result: dict[str, Any] = {
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


#: ocimirror's sync of every repository of a prepared home, in a process of its own:
def check_results(results: dict[str, Any], *, created: bool) -> dict[str, int]:
    """The summed counts of a ``sync_all`` made in this process (serve_vs_registry.py's
    setup), after checking every repository synced completely and ``created`` as expected.
    :data:`SYNC_ALL` checks the same inside its own process (it imports nothing of this one,
    so its start-up stays the tool's own)."""
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


#: ``python -c SYNC_ALL home database_url storage_url concurrency workers full|noop``.
#: It checks every result (a SyncResult, ok, a new version for a full sync and none for a
#: no-op) and prints one JSON line: the sync call's wall time, the startup before it, summed
#: counts and requests.
SYNC_ALL = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import ocimirror
    from ocimirror.sync import SyncResult
    from ocimirror.workers import default_workers
    home, database_url, storage_url, concurrency, workers, phase = sys.argv[1:7]
    workers = None if workers == "default" else int(workers)
    created = {"full": True, "noop": False}[phase]
    with ocimirror.open(home=home, database_url=database_url, storage_url=storage_url) as reg:
        t1, c1 = time.perf_counter(), time.process_time()
        results = reg.sync_all(concurrency=int(concurrency), workers=workers)
        t2, c2 = time.perf_counter(), time.process_time()
    t3 = time.perf_counter()
    bad = {n: r for n, r in results.items() if not isinstance(r, SyncResult) or not r.ok}
    if bad:
        sample = {n: repr(r) for n, r in list(bad.items())[:3]}
        raise SystemExit(f"sync failed for {len(bad)} of {len(results)} repositories: {sample}")
    wrong = [n for n, r in results.items() if r.created != created]
    if wrong:
        raise SystemExit(f"created != {created} for {len(wrong)} repositories: {wrong[:5]}")
    keys = ("manifests_downloaded", "manifests_reused", "blobs_downloaded", "blobs_reused",
            "bytes_downloaded", "tags")
    counts = {k: sum(getattr(r, k) for r in results.values()) for k in keys}
    requests = {}
    for r in results.values():
        for kind, n in r.requests.items():
            requests[kind] = requests.get(kind, 0) + n
    # VmHWM: this process's own peak RSS (time(1) reports the largest process, worker or not).
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    print(json.dumps({
        "startup": t1 - t0, "sync": t2 - t1, "sync_cpu_own": c2 - c1, "close": t3 - t2,
        "loops": min(default_workers() if workers is None else workers, len(results)),
        "repositories": len(results), "counts": counts,
        "requests": {k: v for k, v in requests.items() if v},
        "vmhwm_mb": int(status) / 1024,
    }))
    """
)


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


@dataclasses.dataclass
class Corpus:
    """The images of one corpus in the upstream: what the syncs of it must produce."""

    key: str  # "main", or "scale"
    repos: list[str]
    truth: dict[tuple[str, str], str]  # (repository, tag) -> manifest digest
    tags_per_repo: int
    figures: dict[str, Any]

    @property
    def images(self) -> int:
        return len(self.truth)


class Bench:
    """One benchmark run: the upstream, the corpora, and the measurements of each round."""

    def __init__(self, args: argparse.Namespace, work: Path, up: Registry) -> None:
        self.args = args
        self.work = work
        self.up = up
        self.access = AccessLog(up)
        self.up_cpu = ProcessCPU.of_registry(up)
        self.main: Corpus | None = None
        self.scale: Corpus | None = None
        self.big_digest: str | None = None

    def measured(self, fn: Any, *, downstream: ProcessCPU | None = None) -> dict[str, Any]:
        """Run ``fn`` (which returns a dict with ``wall``) and add what the registries did.

        What the step before left in the page cache is written out first (``sync``), so that
        neither tool's time includes the other's write-back.
        """
        os.sync()
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

    def push(self, key: str, images: int, repos: int, prefix: str) -> Corpus:
        bases, specs = corpus_plan(images, repos, prefix)
        names = sorted({s["repo"] for s in specs})
        tags_per_repo = len(specs) // len(names)
        start = time.perf_counter()
        pushed, sizes = push_corpus(self.up, bases, specs, self.args.push_workers)
        push_time = time.perf_counter() - start
        log(
            f"pushed {len(pushed)} images over {len(names)} repositories {prefix}/* "
            f"({tags_per_repo} tags each; {len(sizes)} distinct blobs, "
            f"{sum(sizes.values()) / MiB:.1f} MiB) in {push_time:.1f}s"
        )
        truth = upstream_digests(self.up, sorted(pushed))
        assert truth == pushed, "the upstream does not serve what was pushed"
        figures = {
            "images": len(pushed),
            "repos": len(names),
            "prefix": prefix,
            "tags_per_repo": tags_per_repo,
            "distinct_blobs": len(sizes),
            "distinct_blob_bytes": sum(sizes.values()),
            "push_seconds": push_time,
        }
        return Corpus(key, names, truth, tags_per_repo, figures)

    def setup(self) -> dict[str, Any]:
        """Push the corpora and the big image; returns the main corpus's figures."""
        args = self.args
        self.main = self.push("main", args.images, args.repos, "bench")
        corpus = self.main.figures
        if args.scale > 1:
            self.scale = self.push(
                "scale", args.images * args.scale, args.repos * args.scale, f"bench-x{args.scale}"
            )
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
        assert self.main is not None
        main = self.main
        directory = self.work / f"downstream-{round_}"
        with run_registry(directory) as down:
            down_cpu = ProcessCPU.of_registry(down)

            def once() -> dict[str, Any]:
                return skopeo_sync_all(self.up, down, main.repos, self.work, self.args.timeout)

            log(f"round {round_}: skopeo sync of {len(main.repos)} repositories (full) ...")
            full = self.measured(once, downstream=down_cpu)
            log(f"round {round_}: skopeo full: {full['wall']:.1f}s, {mb(full['rss_mb'])}")
            have = {n: down.tags(f"mirror/{n.rsplit('/', 1)[1]}") for n in main.repos}
            wrong = [n for n, tags in have.items() if len(tags) != main.tags_per_repo]
            if wrong:
                raise RuntimeError(f"skopeo left {len(wrong)} repositories incomplete: {wrong[:3]}")
            log(f"round {round_}: skopeo sync (no-op) ...")
            noop = self.measured(once, downstream=down_cpu)
            log(f"round {round_}: skopeo no-op: {noop['wall']:.1f}s, {mb(noop['rss_mb'])}")
        shutil.rmtree(directory, ignore_errors=True)
        return {"full": full, "noop": noop}

    # -- ocimirror -------------------------------------------------------------------------

    def ocimirror(self, round_: int, corpus: Corpus) -> dict[str, Any]:
        """Full and no-op ``sync_all`` of a corpus, each in a subprocess (:data:`SYNC_ALL`)."""
        home = self.work / f"ocimirror-{corpus.key}-{round_}"
        database_url = f"sqlite:///{home}/metadata.db"
        storage_url = (home / "storage").as_uri()
        start = time.perf_counter()
        with ocimirror.open(home=home, database_url=database_url, storage_url=storage_url) as reg:
            for i, name in enumerate(corpus.repos):
                reg.create_remote(name=f"up-{i:03d}", url=self.up.url, upstream_name=name)
                reg.create_repository(name, remote=f"up-{i:03d}")
        setup_time = time.perf_counter() - start
        workers = "default" if self.args.workers is None else str(self.args.workers)
        what = f"ocimirror {corpus.key} ({len(corpus.repos)} repositories)"

        def once(phase: str) -> dict[str, Any]:
            run = run_measured(
                [
                    sys.executable,
                    "-c",
                    SYNC_ALL,
                    str(home),
                    database_url,
                    storage_url,
                    str(self.args.concurrency),
                    workers,
                    phase,
                ],
                timeout=self.args.timeout,
                cwd=self.work,
                env=clean_env(),
            )
            inner = json.loads(run["stdout"].strip().splitlines()[-1])
            return {
                "wall": inner.pop("sync"),  # the sync_all call, as the ratio to skopeo uses
                "process_wall": run["wall"],
                "cpu": run["cpu"],  # the whole process, its worker processes included
                "rss_mb": run["rss_mb"],
                **inner,
            }

        log(f"round {round_}: {what}: sync_all (full) in a subprocess ...")
        full = self.measured(lambda: once("full"))
        full["setup_seconds"] = setup_time
        log(
            f"round {round_}: {what} full: sync {full['wall']:.2f}s, process "
            f"{full['process_wall']:.2f}s, {full['loops']} loops, {mb(full['rss_mb'])}"
        )
        log(f"round {round_}: {what}: sync_all (no-op) in a subprocess ...")
        noop = self.measured(lambda: once("noop"))
        if noop["counts"]["manifests_downloaded"] or noop["counts"]["blobs_downloaded"]:
            raise RuntimeError(f"the no-op re-sync downloaded something: {noop['counts']}")
        log(
            f"round {round_}: {what} no-op: sync {noop['wall']:.2f}s, process "
            f"{noop['process_wall']:.2f}s, {mb(noop['rss_mb'])}"
        )
        # Every repository has every tag, each at the digest the upstream serves.
        wrong = []
        with ocimirror.open(home=home, database_url=database_url, storage_url=storage_url) as reg:
            for name in corpus.repos:
                tags = reg.repository(name).tags()
                want = {t: d for (n, t), d in corpus.truth.items() if n == name}
                if len(tags) != corpus.tags_per_repo or tags != want:
                    wrong.append(name)
        if wrong:
            raise RuntimeError(f"{len(wrong)} repositories differ from the upstream: {wrong[:3]}")
        log(
            f"round {round_}: verified {len(corpus.repos)} repositories x "
            f"{corpus.tags_per_repo} tags against the upstream's digests"
        )
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
        """One measurement of everything; odd rounds run it in the opposite order."""
        assert self.main is not None
        first_skopeo = round_ % 2 == 0
        parts: dict[str, dict[str, Any]] = {"full": {}, "noop": {}}
        order = ["skopeo", "ocimirror"] + (["scale"] if self.scale is not None else [])
        for tool in order if first_skopeo else order[::-1]:
            if tool == "skopeo":
                got = self.skopeo(round_)
            elif tool == "ocimirror":
                got = self.ocimirror(round_, self.main)
            else:
                assert self.scale is not None
                parts["scale"] = self.ocimirror(round_, self.scale)
                continue
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
        "--scale",
        type=int,
        default=4,
        metavar="K",
        help="also sync a corpus K times larger (ocimirror only) for the time per image; "
        "0 or 1: not",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a quick run: 120 images over 8 repositories (and K times those), a 64 MiB layer",
    )
    parser.add_argument("--big-mib", type=int, default=512, help="size of the big layer (MiB)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure everything N times; report medians"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="sync_all's concurrency")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="sync_all's event loops (this many processes); default: the library's (one per core)",
    )
    parser.add_argument("--push-workers", type=int, default=8)
    parser.add_argument("--skip-big", action="store_true", help="leave out the big-layer part")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="where the temporary directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="stop everything after this many seconds"
    )
    args = parser.parse_args()
    compile_package()
    if args.quick:
        args.images, args.repos = 120, 8
        if args.big_mib == 512:
            args.big_mib = 64
    if args.images < args.repos or args.repos < 1 or args.repeat < 1:
        parser.error("--images must be >= --repos >= 1, and --repeat >= 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.scale < 0:
        parser.error("--scale must be >= 0")
    if not Path(SKOPEO).exists():
        parser.error("skopeo is not installed")

    start_deadline(args.timeout)

    command = command_line(__file__)
    figures: dict[str, Any] = {
        "command": command,
        "cpus": os.cpu_count(),
        "concurrency": args.concurrency,
        "workers": args.workers,
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
            if bench.scale is not None:
                figures["scale_corpus"] = bench.scale.figures | {"factor": args.scale}
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

    figures["summary"] = summarize(figures["rounds"], figures)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


def medians(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number over the rounds' figures, and the walls of each round."""
    values: dict[str, list[float]] = {}
    for part in parts:
        for name, value in part.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.setdefault(name, []).append(value)
    summary: dict[str, Any] = {name: statistics.median(v) for name, v in values.items()}
    summary["walls"] = [part["wall"] for part in parts]
    return summary


def summarize(rounds: list[dict[str, Any]], figures: dict[str, Any]) -> dict[str, Any]:
    """Medians over the rounds of every figure the tables show."""
    summary: dict[str, Any] = {}
    for key in rounds[0]:
        if key == "scale":
            continue
        summary[key] = {t: medians([r[key][t] for r in rounds]) for t in ("skopeo", "ocimirror")}
        sk, om = summary[key]["skopeo"], summary[key]["ocimirror"]
        summary[key]["ratio"] = om["wall"] / sk["wall"]
        summary[key]["target"] = TARGETS[key][1]
        summary[key]["met"] = summary[key]["ratio"] <= TARGETS[key][1]
        if "process_wall" in om:
            summary[key]["process_ratio"] = om["process_wall"] / sk["wall"]
    if "big" in summary:
        rss = summary["big"]["ocimirror"].get("rss_mb")
        summary["big"]["rss_met"] = rss is not None and rss < RSS_TARGET_MB
    if "scale" in rounds[0]:
        one, many = figures["corpus"]["images"], figures["scale_corpus"]["images"]
        scale: dict[str, Any] = {
            "factor": figures["scale_corpus"]["factor"],
            "images": {"1x": one, "kx": many},
            "target": SCALE_TARGET,
        }
        for phase in ("full", "noop"):
            at1, atk = summary[phase]["ocimirror"], medians([r["scale"][phase] for r in rounds])
            per = {"1x": 1000 * at1["wall"] / one, "kx": 1000 * atk["wall"] / many}
            process = {
                "1x": 1000 * at1["process_wall"] / one,
                "kx": 1000 * atk["process_wall"] / many,
            }
            scale[phase] = {
                "ocimirror": atk,  # the scale corpus's medians (1x: summary[phase]["ocimirror"])
                "ms_per_image": per,
                "process_ms_per_image": process,
                "ratio": per["kx"] / per["1x"],
                "process_ratio": process["kx"] / process["1x"],
                "met": per["kx"] / per["1x"] <= SCALE_TARGET,
            }
        summary["scale"] = scale
    return summary


def report_scale(s: dict[str, Any]) -> None:
    """The table of the time per image at 1x and at the scale (ocimirror only)."""
    scale = s["scale"]
    factor, images = scale["factor"], scale["images"]
    rows: list[tuple[str, ...]] = []
    for key in ("full", "noop"):
        at1, atk = s[key]["ocimirror"], scale[key]["ocimirror"]
        per, process = scale[key]["ms_per_image"], scale[key]["process_ms_per_image"]
        rows.append(
            (
                f"{TARGETS[key][0]}, ms per image",
                f"{per['1x']:.2f}",
                f"{per['kx']:.2f}",
                f"{scale[key]['ratio']:.3f}x",
                f"<= {scale['target']:.2f}x",
                "ok" if scale[key]["met"] else "MISSED",
            )
        )
        rows.append(
            (
                "  whole process, ms per image",
                f"{process['1x']:.2f}",
                f"{process['kx']:.2f}",
                f"{scale[key]['process_ratio']:.3f}x",
                "",
                "",
            )
        )
        rows.append(rss_row(at1, atk))
        rows.append(
            (
                "  requests to the upstream per image",
                f"{at1['upstream_requests'] / images['1x']:.2f}",
                f"{atk['upstream_requests'] / images['kx']:.2f}",
                "",
                "",
                "",
            )
        )
    header = (
        "ocimirror, time per image",
        f"1x ({images['1x']} images)",
        f"{factor}x ({images['kx']} images)",
        "ratio",
        "target",
        "",
    )
    print_table(header, rows)


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
    if "scale_corpus" in figures:
        k = figures["scale_corpus"]
        print(
            f"scale corpus ({k['factor']}x, ocimirror only): {k['images']} images over "
            f"{k['repos']} repositories {k['prefix']}/* ({k['tags_per_repo']} tags each); "
            f"{k['distinct_blobs']} distinct blobs, {k['distinct_blob_bytes'] / MiB:.1f} MiB; "
            f"pushed in {k['push_seconds']:.1f}s"
        )
    print(
        f"machine: {figures['cpus']} CPUs; {figures['skopeo']}; "
        f"{'median of ' + str(rounds) + ' rounds' if rounds > 1 else 'one round'}"
    )
    workers = figures["workers"]
    print(
        f"ocimirror: sync_all(concurrency={figures['concurrency']}, workers="
        f"{'None (one loop per core)' if workers is None else workers}) in a subprocess: "
        f"{figures['rounds'][-1]['full']['ocimirror']['loops']} event loops (processes)"
    )
    rows: list[tuple[str, ...]] = []
    for key, (_, target) in TARGETS.items():
        if key not in s:
            continue
        sk, om = s[key]["skopeo"], s[key]["ocimirror"]
        rows.append(
            (
                label(key, c),
                f"{sk['wall']:.2f} s",
                f"{om['wall']:.2f} s",
                f"{s[key]['ratio']:.3f}x",
                f"<= {target:.2f}x",
                "ok" if s[key]["met"] else "MISSED",
            )
        )
        if key == "big":
            continue
        rows.append(
            (
                "  ocimirror's whole process",
                "",
                f"{om['process_wall']:.2f} s",
                f"{s[key]['process_ratio']:.3f}x",
                "",
                "",
            )
        )
        rows.append(rss_row(sk, om))
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
                f"  {name}: CPU s of the tool (processes)",
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
    if "scale" in s:
        report_scale(s)
    if rounds > 1:
        print()
        for key in s:
            if key == "scale":
                continue
            walls = {
                t: ", ".join(f"{w:.2f}" for w in s[key][t]["walls"])
                for t in ("skopeo", "ocimirror")
            }
            print(
                f"{label(key, c)} per round (s): skopeo [{walls['skopeo']}], "
                f"ocimirror [{walls['ocimirror']}]"
            )
        if "scale" in s:
            for key in ("full", "noop"):
                each = ", ".join(f"{w:.2f}" for w in s["scale"][key]["ocimirror"]["walls"])
                print(f"{TARGETS[key][0]} of the scale corpus per round (s): ocimirror [{each}]")
    last = figures["rounds"][-1]
    full, noop = last["full"]["ocimirror"], last["noop"]["ocimirror"]
    print()
    print(f"ocimirror full sync (last round): {full['counts']}")
    print(f"  requests (SyncResult.requests summed): {full['requests']}")
    print(f"ocimirror no-op re-sync: requests {noop['requests']}")
    for name, om in (("full sync", full), ("no-op re-sync", noop)):
        rest = om["process_wall"] - om["startup"] - om["wall"] - om["close"]
        print(
            f"ocimirror {name} (last round): process {om['process_wall']:.2f}s = interpreter "
            f"and exit {rest:.2f}s + imports and opening {om['startup']:.2f}s + sync "
            f"{om['wall']:.2f}s + close {om['close']:.2f}s; CPU {om['cpu']:.1f}s (the calling "
            f"process's loop during the sync: {om['sync_cpu_own']:.1f}s); VmHWM of the calling "
            f"process {om['vmhwm_mb']:.0f} MB"
        )
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
