"""How fast does ``ocimirror serve`` answer pulls next to ``docker-registry``, same content?

Everything runs on 127.0.0.1. A Debian ``docker-registry`` (Distribution 2.8, configured as a
production deployment would be: access log off, log level ``warn``, the in-memory blob
descriptor cache of Debian's default config) is filled by push with the sync benchmark's corpus
(default 1,000 images over 40 repositories, 25 tags each: see ``sync_vs_skopeo.corpus_plan``)
plus ``bench/big``, an image with one 64 MiB layer. ocimirror gets the same content by syncing
from that registry (a fresh home, SQLite + files; one remote, repository and distribution per
upstream repository, the base path being the repository's name) and is served by
``python -m ocimirror --home H serve --port P --workers 2 --log-level warning`` in a
subprocess. Then, for each server in turn (the other one idle; docker-registry first):

1. manifest GETs by tag with ``wrk -t2 -c32 -d10s`` and an ``Accept`` header for the manifest's
   type, after a 2 s warm-up run: requests/s, p99 latency, non-2xx answers (must be 0);
2. the 64 MiB blob with 4 concurrent ``curl`` clients, in rounds (default 16 rounds, 64
   downloads, after one warm-up round; the servers alternate round by round): aggregate GB/s
   (10^9 bytes);
3. ``skopeo sync --src docker --dest dir`` of every corpus repository, one invocation after
   another, into a directory emptied after each (not timed; dirty pages are synced before each
   server's turn): the sum of their wall times. Every copied manifest is checked against the
   digest pushed.

Before measuring, both servers are checked to serve the same content: every repository's tag
list, a sample of manifest digests (HEAD) and the big blob's sha256. It prints a table with
the ocimirror/docker-registry ratios and the targets, and the command line. Processes (each in
its own process group) and temporary directories are cleaned up, and a global deadline stops
it::

    .venv/bin/python benchmarks/serve_vs_registry.py                 # the full corpus
    .venv/bin/python benchmarks/serve_vs_registry.py --quick         # 120 images, 3 s wrk runs
    .venv/bin/python benchmarks/serve_vs_registry.py --json result.json

The load generators (wrk, curl, skopeo) run on the same machine as both servers and share its
cores with them.
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
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]  # the sync benchmark's helpers, the fixtures

import httpx  # noqa: E402
from fixtures.registry import MANIFEST_TYPES, Registry, run_registry  # noqa: E402
from sync_vs_skopeo import (  # noqa: E402
    SKOPEO,
    MiB,
    ProcessCPU,
    check_results,
    clean_env,
    command_line,
    compile_package,
    corpus_plan,
    log,
    print_table,
    push_big_image,
    push_corpus,
    run_measured,
    start_deadline,
    upstream_digests,
    write_big_layer,
)

import ocimirror  # noqa: E402

WRK = shutil.which("wrk") or "/usr/bin/wrk"
CURL = shutil.which("curl") or "/usr/bin/curl"
BIG_REPO = "bench/big"

#: docker-registry as a production deployment runs it: no access log, warnings only, and the
#: in-memory blob descriptor cache of Debian's /etc/docker/registry/config.yml.
REGISTRY_CONFIG = {
    "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
    "storage": {"cache": {"blobdescriptor": "inmemory"}},
}

#: key -> (label, comparison, target); the ratio is always ocimirror / docker-registry.
TARGETS = {
    "manifest_rps": ("manifest GET by tag, requests/s", ">=", 3.0),
    "blob_gbps": ("64 MiB blob GET, 4 clients, GB/s", ">=", 1.0),
    "copyout_seconds": ("copy-out (skopeo sync to dir), s", "<=", 1.1),
}
SERVERS = ("registry", "ocimirror")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (every process a server started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[3]) == sid:
                pids.append(int(entry.name))
    return pids


class SessionCPU:
    """CPU seconds (user + system) of every live process in one session (a server's tree)."""

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self._ticks = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        total = 0
        for pid in _session_members(self.sid):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += int(fields[11]) + int(fields[12])
        return total / self._ticks


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (granian's workers, for the serve process)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return sorted(children)


@contextlib.contextmanager
def serve_ocimirror(
    home: Path, *, auth: bool, workers: int, log_path: Path
) -> Iterator[tuple[str, int]]:
    """``python -m ocimirror --home H serve [--no-auth]`` in its own session; ``(url, pid)``.
    docker-registry serves without auth here, so this benchmark uses ``--no-auth``
    (``auth_overhead.py`` measures what token auth costs).

    Ready once ``GET /v2/`` answers (200, or 401 with token auth); the whole session is killed
    on exit.
    """
    port = _free_port()
    command = [
        sys.executable, "-m", "ocimirror", "--home", str(home), "serve",
        "--port", str(port), "--workers", str(workers), "--log-level", "warning",
        *([] if auth else ["--no-auth"]),
    ]  # fmt: skip
    setpriv = shutil.which("setpriv")
    if setpriv:  # if this benchmark is killed outright, granian's main process goes too
        command = [setpriv, "--pdeathsig", "TERM", *command]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home,
            env=clean_env(),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"ocimirror serve exited:\n{log_path.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ocimirror serve did not answer on {url} in 60 s")
                try:
                    if client.get(f"{url}/v2/").status_code == (401 if auth else 200):
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        # granian starts its workers one by one: wait until all of them are there.
        while len(_children(proc.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        _kill_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        _kill_group(proc.pid)  # whatever is left of the group (workers)
        for pid in _session_members(proc.pid):  # and of the session, should any have moved
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def run_group(cmd: list[str], timeout: float, cwd: Path) -> str:
    """Run ``cmd`` in its own session to its end (killing the group after ``timeout``); stdout."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=clean_env(),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    _kill_group(proc.pid)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}:\n{err.decode()}")
    return out.decode()


# -- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms), request count, non-2xx/3xx and socket errors."""
    result: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    if m := re.search(r"Requests/sec:\s+([0-9.]+)", output):
        result["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([0-9.]+\w+)", output):
        result["requests"] = int(m.group(1))
        result["duration_s"] = _ms(m.group(2)) / 1000
    for pct in ("50", "75", "90", "99"):
        if m := re.search(rf"^\s+{pct}%\s+(\S+)", output, re.MULTILINE):
            result[f"p{pct}_ms"] = _ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        result["non_2xx"] = int(m.group(1))
    errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    if m := re.search(errors, output):
        result["socket_errors"] = sum(int(g) for g in m.groups())
    if "rps" not in result or "p99_ms" not in result:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    return result


class Bench:
    """The corpus, the two servers and the measurements."""

    def __init__(self, args: argparse.Namespace, work: Path, registry: Registry) -> None:
        self.args = args
        self.work = work
        self.registry = registry
        self.registry_cpu = ProcessCPU.of_registry(registry)
        self.repos: list[str] = []
        self.truth: dict[tuple[str, str], str] = {}
        self.tags_per_repo = 0
        self.big: dict[str, Any] = {}
        self.urls: dict[str, str] = {"registry": registry.url}
        self.cpu: dict[str, Any] = {"registry": self.registry_cpu}

    # -- content ---------------------------------------------------------------------------

    def fill_registry(self) -> dict[str, Any]:
        args = self.args
        bases, specs = corpus_plan(args.images, args.repos)
        self.repos = sorted({s["repo"] for s in specs})
        self.tags_per_repo = len(specs) // len(self.repos)
        start = time.perf_counter()
        pushed, sizes = push_corpus(self.registry, bases, specs, args.push_workers)
        push_time = time.perf_counter() - start
        self.truth = upstream_digests(self.registry, sorted(pushed))
        assert self.truth == pushed, "docker-registry does not serve what was pushed"
        log(
            f"pushed {len(pushed)} images over {len(self.repos)} repositories "
            f"({self.tags_per_repo} tags each; {len(sizes)} distinct blobs, "
            f"{sum(sizes.values()) / MiB:.1f} MiB) in {push_time:.1f}s"
        )
        layer = self.work / "big-layer.tar.gz"
        start = time.perf_counter()
        digest, size, diff_id = write_big_layer(layer, args.big_mib * MiB, "serve-bench/big")
        manifest = push_big_image(self.registry, BIG_REPO, layer, size, digest, diff_id)
        layer.unlink()
        self.big = {"digest": str(digest), "size": size, "manifest": manifest}
        log(f"big image: a {size / MiB:.1f} MiB layer pushed in {time.perf_counter() - start:.1f}s")
        return {
            "images": len(pushed),
            "repos": len(self.repos),
            "tags_per_repo": self.tags_per_repo,
            "distinct_blobs": len(sizes),
            "distinct_blob_bytes": sum(sizes.values()),
            "push_seconds": push_time,
            "big_layer_bytes": size,
        }

    def fill_ocimirror(self, home: Path) -> dict[str, Any]:
        """Sync every repository (the corpus and the big one) from docker-registry; serve each."""
        start = time.perf_counter()
        with ocimirror.open(home=home) as reg:
            names = [*self.repos, BIG_REPO]
            for i, name in enumerate(names):
                reg.create_remote(name=f"up-{i:03d}", url=self.registry.url, upstream_name=name)
                reg.create_repository(name, remote=f"up-{i:03d}")
            results = reg.sync_all(concurrency=32)
            counts = check_results(results, created=True)
            for i, name in enumerate(names):
                reg.create_distribution(f"dist-{i:03d}", base_path=name, repository=name)
        elapsed = time.perf_counter() - start
        log(
            f"ocimirror synced {len(names)} repositories from docker-registry in {elapsed:.1f}s "
            f"({counts['manifests_downloaded']} manifests, {counts['blobs_downloaded']} blobs)"
        )
        return {"sync_seconds": elapsed, **counts}

    def check_same_content(self) -> dict[str, Any]:
        """Both servers: every tag list, a sample of manifest digests, the big blob's sha256."""
        rng = random.Random("serve-bench/sample")
        sample = rng.sample(sorted(self.truth), min(40, len(self.truth)))
        sample.append((BIG_REPO, "latest"))
        truth = {**self.truth, (BIG_REPO, "latest"): self.big["manifest"]}
        accept = ",".join(MANIFEST_TYPES)
        for server, url in self.urls.items():
            with httpx.Client(base_url=url, trust_env=False, timeout=60.0) as http:
                for name in self.repos:
                    got = http.get(f"/v2/{name}/tags/list").json().get("tags") or []
                    want = sorted(t for n, t in self.truth if n == name)
                    if sorted(got) != want:
                        raise RuntimeError(f"{server}: tags of {name} differ: {got[:5]}")
                for name, tag in sample:
                    r = http.head(f"/v2/{name}/manifests/{tag}", headers={"Accept": accept})
                    digest = r.headers.get("docker-content-digest")
                    if r.status_code != 200 or digest != truth[(name, tag)]:
                        raise RuntimeError(
                            f"{server}: {name}:{tag} answered {r.status_code} {digest}, "
                            f"expected {truth[(name, tag)]}"
                        )
                h = hashlib.sha256()
                with http.stream("GET", f"/v2/{BIG_REPO}/blobs/{self.big['digest']}") as r:
                    r.raise_for_status()
                    for chunk in r.iter_bytes(MiB):
                        h.update(chunk)
                if f"sha256:{h.hexdigest()}" != self.big["digest"]:
                    raise RuntimeError(f"{server}: the big blob's bytes differ")
        log(
            f"same content: {len(self.repos)} tag lists, {len(sample)} manifest digests and the "
            f"{self.big['size'] / MiB:.0f} MiB blob's sha256 match on both servers"
        )
        return {"tag_lists": len(self.repos), "manifest_digests": len(sample), "big_blob": True}

    # -- measurements ----------------------------------------------------------------------

    def manifests(self, server: str) -> dict[str, Any]:
        name, tag = self.repos[len(self.repos) // 2], f"1.{self.tags_per_repo // 2}.0"
        with httpx.Client(trust_env=False, timeout=10.0) as http:
            media_type = http.get(
                f"{self.registry.url}/v2/{name}/manifests/{tag}",
                headers={"Accept": ",".join(MANIFEST_TYPES)},
            ).headers["content-type"]
        url = f"{self.urls[server]}/v2/{name}/manifests/{tag}"
        a = self.args
        base = [WRK, f"-t{a.wrk_threads}", f"-c{a.connections}", "-H", f"Accept: {media_type}"]
        run_group([*base, f"-d{a.warmup}s", url], a.warmup + 30, self.work)
        cpu0 = self.cpu[server].seconds()
        command = [*base, f"-d{a.duration}s", "--latency", url]
        out = run_group(command, a.duration + 30, self.work)
        result = parse_wrk(out)
        result["server_cpu"] = self.cpu[server].seconds() - cpu0
        result["url"] = url
        result["accept"] = media_type
        result["command"] = shlex.join([Path(command[0]).name, *command[1:]])
        log(
            f"{server}: manifests {result['rps']:.0f} req/s, p99 {result['p99_ms']:.2f} ms, "
            f"non-2xx {result['non_2xx']}, socket errors {result['socket_errors']}"
        )
        return result

    def _curl_round(self, url: str, clients: int) -> tuple[float, int]:
        fmt = "%{http_code} %{size_download} %{time_total}"
        cmd = [CURL, "-s", "--noproxy", "*", "--max-time", "300", "-o", "/dev/null", "-w", fmt, url]
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.work,
                env=clean_env(),
                start_new_session=True,
            )
            for _ in range(clients)
        ]
        try:
            outs = [p.communicate(timeout=330)[0].decode().split() for p in procs]
        finally:
            for p in procs:
                _kill_group(p.pid)
                p.wait()
        wall = time.perf_counter() - start
        total = 0
        for p, out in zip(procs, outs, strict=True):
            if p.returncode != 0 or len(out) != 3 or out[0] != "200":
                raise RuntimeError(f"curl {url} failed: rc {p.returncode}, {out}")
            if int(out[1]) != self.big["size"]:
                raise RuntimeError(f"curl {url}: {out[1]} bytes, expected {self.big['size']}")
            total += int(out[1])
        return wall, total

    def blobs(self) -> dict[str, dict[str, Any]]:
        """Rounds of concurrent downloads; the servers alternate round by round."""
        a = self.args
        urls = {s: f"{self.urls[s]}/v2/{BIG_REPO}/blobs/{self.big['digest']}" for s in SERVERS}
        walls: dict[str, list[float]] = {s: [] for s in SERVERS}
        total = dict.fromkeys(SERVERS, 0)
        cpu = dict.fromkeys(SERVERS, 0.0)
        for server in SERVERS[::-1]:
            self._curl_round(urls[server], a.blob_clients)  # warm-up: page cache
        for i in range(a.blob_rounds):
            for server in SERVERS if i % 2 else SERVERS[::-1]:
                cpu0 = self.cpu[server].seconds()
                wall, got = self._curl_round(urls[server], a.blob_clients)
                cpu[server] += self.cpu[server].seconds() - cpu0
                walls[server].append(wall)
                total[server] += got
        results = {}
        for server in SERVERS:
            results[server] = {
                "gbps": total[server] / sum(walls[server]) / 1e9,
                "downloads": a.blob_rounds * a.blob_clients,
                "bytes": total[server],
                "seconds": sum(walls[server]),
                "round_gbps": [a.blob_clients * self.big["size"] / w / 1e9 for w in walls[server]],
                "server_cpu": cpu[server],
            }
            r = results[server]
            log(
                f"{server}: blob {r['gbps']:.2f} GB/s over {r['downloads']} downloads "
                f"({r['seconds']:.2f}s; rounds {min(r['round_gbps']):.2f}-"
                f"{max(r['round_gbps']):.2f} GB/s)"
            )
        return results

    def copyout(self, server: str) -> dict[str, Any]:
        host = self.urls[server].removeprefix("http://")
        target = self.work / f"copyout-{server}"
        os.sync()  # the previous phase's writes are not written back during this one
        cpu0 = self.cpu[server].seconds()
        wall = skopeo_cpu = 0.0
        checked = 0
        for name in self.repos:
            target.mkdir()
            r = run_measured(
                [
                    SKOPEO,
                    "sync",
                    "--src",
                    "docker",
                    "--dest",
                    "dir",
                    "--src-tls-verify=false",
                    f"{host}/{name}",
                    str(target),
                ],
                timeout=self.args.timeout,
                cwd=self.work,
                env=clean_env(),
            )
            wall += r["wall"]
            skopeo_cpu += r["cpu"]
            # Outside the timing: every image copied, at the digest pushed.
            for manifest in target.rglob("manifest.json"):
                tag = manifest.parent.name.rpartition(":")[2]
                digest = "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()
                if self.truth.get((name, tag)) != digest:
                    raise RuntimeError(f"{server}: copied {name}:{tag} as {digest}")
                checked += 1
            shutil.rmtree(target)
        if checked != len(self.truth):
            raise RuntimeError(f"{server}: copied {checked} images, expected {len(self.truth)}")
        result = {
            "seconds": wall,
            "invocations": len(self.repos),
            "images": checked,
            "skopeo_cpu": skopeo_cpu,
            "server_cpu": self.cpu[server].seconds() - cpu0,
        }
        log(f"{server}: copy-out of {checked} images in {wall:.1f}s")
        return result

    def run(self, figures: dict[str, Any], stack: contextlib.ExitStack) -> None:
        figures["corpus"] = self.fill_registry()
        home = self.work / "ocimirror-home"
        home.mkdir()
        figures["ocimirror_sync"] = self.fill_ocimirror(home)
        url, pid = stack.enter_context(
            serve_ocimirror(
                home,
                auth=False,
                workers=self.args.workers,
                log_path=self.work / "ocimirror-serve.log",
            )
        )
        self.urls["ocimirror"], self.cpu["ocimirror"] = url, SessionCPU(pid)
        log(f"ocimirror serve at {url} ({self.args.workers} workers)")
        figures["same_content"] = self.check_same_content()
        figures["manifests"] = {s: self.manifests(s) for s in SERVERS}
        figures["blobs"] = self.blobs()
        figures["copyout"] = {s: self.copyout(s) for s in SERVERS}


def summarize(figures: dict[str, Any]) -> dict[str, Any]:
    m, b, c = figures["manifests"], figures["blobs"], figures["copyout"]
    values = {
        "manifest_rps": (m["registry"]["rps"], m["ocimirror"]["rps"]),
        "blob_gbps": (b["registry"]["gbps"], b["ocimirror"]["gbps"]),
        "copyout_seconds": (c["registry"]["seconds"], c["ocimirror"]["seconds"]),
    }
    summary: dict[str, Any] = {}
    for key, (reg, om) in values.items():
        _, op, target = TARGETS[key]
        ratio = om / reg
        summary[key] = {
            "registry": reg,
            "ocimirror": om,
            "ratio": ratio,
            "target": f"{op} {target}",
            "met": ratio >= target if op == ">=" else ratio <= target,
        }
    summary["valid"] = all(m[s]["non_2xx"] == 0 and m[s]["socket_errors"] == 0 for s in SERVERS)
    return summary


def report(figures: dict[str, Any]) -> None:
    c, s = figures["corpus"], figures["summary"]
    m, b, co = figures["manifests"], figures["blobs"], figures["copyout"]
    print()
    print(
        f"corpus: {c['images']} images over {c['repos']} repositories ({c['tags_per_repo']} tags "
        f"each), {c['distinct_blobs']} distinct blobs, {c['distinct_blob_bytes'] / MiB:.1f} MiB; "
        f"plus {BIG_REPO} with one {c['big_layer_bytes'] / MiB:.0f} MiB layer"
    )
    print(
        f"machine: {figures['cpus']} CPUs, shared by both servers and the load generators; "
        f"{figures['versions']['registry']}; {figures['versions']['skopeo']}; "
        f"{figures['versions']['wrk']}; ocimirror serve --workers {figures['workers']}"
    )

    def fmt(key: str, v: float) -> str:
        return {"manifest_rps": f"{v:,.0f}", "blob_gbps": f"{v:.2f}"}.get(key, f"{v:.1f}")

    rows: list[tuple[str, ...]] = []
    for key, (label, op, target) in TARGETS.items():
        row = s[key]
        rows.append(
            (
                label,
                fmt(key, row["registry"]),
                fmt(key, row["ocimirror"]),
                f"{row['ratio']:.2f}x",
                f"{op} {target:.1f}x",
                "ok" if row["met"] else "MISSED",
            )
        )
        if key == "manifest_rps":
            rows.append(
                (
                    "  p99 latency, ms",
                    f"{m['registry']['p99_ms']:.2f}",
                    f"{m['ocimirror']['p99_ms']:.2f}",
                    f"{m['ocimirror']['p99_ms'] / m['registry']['p99_ms']:.2f}x",
                    "",
                    "",
                )
            )
            rows.append(
                (
                    "  non-2xx / socket errors",
                    f"{m['registry']['non_2xx']} / {m['registry']['socket_errors']}",
                    f"{m['ocimirror']['non_2xx']} / {m['ocimirror']['socket_errors']}",
                    "",
                    "0 / 0",
                    "ok" if s["valid"] else "INVALID",
                )
            )
            rows.append(
                (
                    "  server CPU s during the run",
                    f"{m['registry']['server_cpu']:.1f}",
                    f"{m['ocimirror']['server_cpu']:.1f}",
                    "",
                    "",
                    "",
                )
            )
        elif key == "blob_gbps":
            rows.append(
                (
                    "  server CPU s per GB",
                    f"{b['registry']['server_cpu'] / (b['registry']['bytes'] / 1e9):.2f}",
                    f"{b['ocimirror']['server_cpu'] / (b['ocimirror']['bytes'] / 1e9):.2f}",
                    "",
                    "",
                    "",
                )
            )
        else:
            rows.append(
                (
                    "  server CPU s / skopeo CPU s",
                    f"{co['registry']['server_cpu']:.1f} / {co['registry']['skopeo_cpu']:.1f}",
                    f"{co['ocimirror']['server_cpu']:.1f} / {co['ocimirror']['skopeo_cpu']:.1f}",
                    "",
                    "",
                    "",
                )
            )
    print_table(("measurement", "docker-registry", "ocimirror", "ratio", "target", ""), rows)
    print()
    path = "/v2/" + m["ocimirror"]["url"].split("/v2/", 1)[1]
    wrk = m["ocimirror"]["command"].replace(m["ocimirror"]["url"], f"http://<server>{path}")
    print(f"manifests: {wrk}, after a {figures['warmup']} s warm-up run")
    print(
        f"blobs: {b['ocimirror']['downloads']} downloads per server, "
        f"{figures['blob_clients']} curl clients at a time, after one warm-up round; the "
        "servers alternate round by round"
    )
    print(
        f"copy-out: one `skopeo sync --src docker --dest dir` per repository, in sequence "
        f"({co['ocimirror']['invocations']} invocations, {co['ocimirror']['images']} images, "
        "each manifest checked); the sum of their wall times"
    )
    synced = figures["ocimirror_sync"]["sync_seconds"]
    print(f"ocimirror got its content from docker-registry by sync_all in {synced:.1f}s")
    print()
    print(f"command: {figures['command']}")


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the corpus")
    parser.add_argument("--repos", type=int, default=40, help="repositories they spread over")
    parser.add_argument(
        "--quick", action="store_true", help="120 images over 8 repositories, 3 s wrk runs"
    )
    parser.add_argument("--big-mib", type=int, default=64, help="size of the big layer (MiB)")
    parser.add_argument("--workers", type=int, default=2, help="ocimirror serve --workers")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--duration", type=int, default=10, help="wrk -d (seconds)")
    parser.add_argument("--warmup", type=int, default=2, help="wrk warm-up run (seconds)")
    parser.add_argument("--blob-clients", type=int, default=4, help="curl clients at a time")
    parser.add_argument("--blob-rounds", type=int, default=16, help="rounds per server")
    parser.add_argument("--push-workers", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="where the temporary directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="stop everything after this many seconds"
    )
    args = parser.parse_args()
    compile_package()
    if args.quick:
        args.images, args.repos = 120, 8
        args.duration = 3
        args.blob_rounds = 2
    if args.images < args.repos or args.repos < 1:
        parser.error("--images must be >= --repos >= 1")
    for tool in (SKOPEO, WRK, CURL):
        if not Path(tool).exists():
            parser.error(f"{tool} is not installed")

    start_deadline(args.timeout)

    command = command_line(__file__)
    figures: dict[str, Any] = {
        "command": command,
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "warmup": args.warmup,
        "blob_clients": args.blob_clients,
        "versions": {
            "skopeo": _version([SKOPEO, "--version"]),
            "wrk": _version([WRK, "--version"]).split(" Copyright")[0],
            "registry": "docker-registry "
            + _version(["/usr/bin/docker-registry", "--version"]).split()[-1],
        },
    }
    work = Path(tempfile.mkdtemp(prefix="ocimirror-serve-bench-", dir=args.workdir))
    log(f"work directory {work}")
    try:
        with contextlib.ExitStack() as stack:
            registry = stack.enter_context(run_registry(work / "registry", config=REGISTRY_CONFIG))
            log(f"docker-registry at {registry.url}")
            Bench(args, work, registry).run(figures, stack)
    except BaseException:
        signal.alarm(0)
        traceback.print_exc()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # The blocking facade's loop thread may still be busy: do not wait for it.
        os._exit(1)
    signal.alarm(0)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    figures["summary"] = summarize(figures)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0 if figures["summary"]["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
