"""What does token authentication cost ``ocimirror serve`` per manifest GET, in one run?

Everything runs on 127.0.0.1. One ocimirror home (SQLite + files) is filled through the Python
API with one image (``random_image``, 2 layers, written as an OCI layout with ``write_layout``
and imported) in the repository ``bench/app``, served by a **private** distribution of the same
base path, and a user ``reader`` with a ``pull`` grant on ``bench/app``. Two servers serve that
home at once, ``python -m ocimirror --home H serve --port P --workers W --log-level warning``:

* ``no-auth``: with ``--no-auth`` (anyone may pull);
* ``token``: token authentication (the default). The benchmark reads the ``WWW-Authenticate``
  challenge of ``GET /v2/`` for the realm and service, asks ``GET <realm>?service=<service>&
  scope=repository:bench/app:pull`` with the reader's Basic credentials, and sends the token it
  gets as ``Authorization: Bearer <token>`` on every request (a fresh token before each run;
  tokens live five minutes). Without it the manifest is refused (checked: ``401``).

Each server is loaded in turn (the other one idles) with ``wrk -t2 -c32 -d10s --latency`` on
``/v2/bench/app/manifests/latest`` with ``Accept`` set to the manifest's type, after one 2 s
warm-up run each. That is one pair; ``--pairs N`` (default 5) measures N pairs, alternating
which server goes first, and reports the medians of requests/s and latency, and the median of
the per-pair ratios token / no-auth (target >= 0.8). Every run must have no non-2xx answers
and no socket errors. Processes (each in its own session) and temporary directories are
cleaned up, and a global deadline stops it::

    .venv/bin/python benchmarks/auth_overhead.py                  # 5 pairs of 10 s runs
    .venv/bin/python benchmarks/auth_overhead.py --quick          # 5 pairs of 3 s runs
    .venv/bin/python benchmarks/auth_overhead.py --json result.json

Needs ``wrk`` (Debian's package; installed with ``apt-get install -y wrk`` when missing and
running as root). wrk runs on the same machine and shares its cores with the server it loads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]  # the other benchmarks' helpers, the fixtures

import httpx  # noqa: E402
from serve_vs_registry import SessionCPU, parse_wrk, run_group, serve_ocimirror  # noqa: E402
from sync_vs_skopeo import command_line, compile_package, log, print_table, start_deadline  # noqa: E402

import ocimirror  # noqa: E402
from ocimirror.testing import random_image, write_layout  # noqa: E402

NAME = "bench/app"
TAG = "latest"
USERNAME = "reader"
SERVERS = ("no-auth", "token")
LABELS = {"no-auth": "--no-auth", "token": "token auth"}
#: requests/s with token auth / without, not to fall below.
TARGET = 0.8


def ensure_wrk() -> str:
    """The path of ``wrk``; installs Debian's package when it is missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    command = ["apt-get", "install", "-y", "wrk"]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"wrk is not installed: install it with `sudo {shlex.join(command)}`")
    log(f"wrk is not installed: installing Debian's package ({shlex.join(command)}) ...")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = shutil.which("wrk")
    if done.returncode != 0 or not found:
        sys.exit(f"`{shlex.join(command)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return found


def fill(home: Path, work: Path, password: str) -> dict[str, Any]:
    """One image in ``bench/app`` behind a private distribution; a reader who may pull it."""
    image = random_image(seed="auth-bench/app", layers=2, layer_size=64 * 1024)
    layout = work / "layout"
    write_layout(layout, {TAG: image})
    with ocimirror.open(home=home) as reg:
        repo = reg.create_repository(NAME)
        repo.import_layout(layout)
        reg.create_distribution("bench-app", base_path=NAME, repository=NAME, private=True)
        reg.create_user(USERNAME, password=password)
        reg.grant(USERNAME, NAME, "pull")
        tags = repo.tags()
    shutil.rmtree(layout)
    if tags != {TAG: str(image.digest)}:
        raise RuntimeError(f"the import gave {tags}, expected {TAG} at {image.digest}")
    return {"digest": str(image.digest), "media_type": image.media_type, "size": image.size}


def _challenge(header: str) -> dict[str, str]:
    """``Bearer realm="...",service="..."`` as a dict of its parameters."""
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "bearer":
        raise RuntimeError(f"expected a Bearer challenge, got {header!r}")
    return {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', params)}


def get_token(url: str, password: str) -> tuple[str, dict[str, str]]:
    """A pull token for ``bench/app``, from the realm and service ``GET /v2/`` challenges with."""
    with httpx.Client(trust_env=False, timeout=30.0) as http:
        ping = http.get(f"{url}/v2/")
        if ping.status_code != 401:
            raise RuntimeError(f"GET /v2/ answered {ping.status_code}, expected 401 (token auth)")
        challenge = _challenge(ping.headers["www-authenticate"])
        response = http.get(
            challenge["realm"],
            params={"service": challenge["service"], "scope": f"repository:{NAME}:pull"},
            auth=(USERNAME, password),
        )
        if response.status_code != 200:
            raise RuntimeError(f"the token endpoint answered {response.status_code}")
        body = response.json()
    return body.get("token") or body["access_token"], challenge


class Bench:
    """The two servers and the wrk runs against them."""

    def __init__(self, args: argparse.Namespace, work: Path, wrk: str) -> None:
        self.args = args
        self.work = work
        self.wrk = wrk
        self.password = secrets.token_urlsafe(12)
        self.image: dict[str, Any] = {}
        self.urls: dict[str, str] = {}
        self.cpu: dict[str, SessionCPU] = {}

    def check(self, server: str, token: str | None) -> None:
        """The manifest is served at its digest (and refused without a token, with auth)."""
        url = f"{self.urls[server]}/v2/{NAME}/manifests/{TAG}"
        accept = {"Accept": self.image["media_type"]}
        with httpx.Client(trust_env=False, timeout=10.0) as http:
            headers = {**accept, "Authorization": f"Bearer {token}"} if token else accept
            r = http.get(url, headers=headers)
            if (
                r.status_code != 200
                or r.headers.get("docker-content-digest") != self.image["digest"]
            ):
                raise RuntimeError(f"{server}: {url} answered {r.status_code}")
            if token is not None and http.get(url, headers=accept).status_code != 401:
                raise RuntimeError(f"{server}: the manifest is served without a token")

    def wrk_run(self, server: str, seconds: int) -> dict[str, Any]:
        a = self.args
        token = None
        if server == "token":
            token, _ = get_token(self.urls[server], self.password)
        headers = ["-H", f"Accept: {self.image['media_type']}"]
        if token:
            headers += ["-H", f"Authorization: Bearer {token}"]
        url = f"{self.urls[server]}/v2/{NAME}/manifests/{TAG}"
        command = [
            self.wrk, f"-t{a.wrk_threads}", f"-c{a.connections}", f"-d{seconds}s",
            "--latency", *headers, url,
        ]  # fmt: skip
        cpu0 = self.cpu[server].seconds()
        result = parse_wrk(run_group(command, seconds + 30, self.work))
        result["server_cpu"] = self.cpu[server].seconds() - cpu0
        result["cpu_us_per_request"] = 1e6 * result["server_cpu"] / max(1, result["requests"])
        shown = [("Authorization: Bearer <token>" if a.startswith("Authorization") else a)
                 for a in command]  # fmt: skip
        result["command"] = shlex.join([Path(shown[0]).name, *shown[1:]])
        return result

    def run(self, figures: dict[str, Any], stack: contextlib.ExitStack) -> None:
        a = self.args
        home = self.work / "home"
        home.mkdir()
        self.image = fill(home, self.work, self.password)
        log(f"filled {home}: {NAME}:{TAG} at {self.image['digest']} (private distribution)")
        for server in SERVERS:
            url, pid = stack.enter_context(
                serve_ocimirror(
                    home,
                    auth=server == "token",
                    workers=a.workers,
                    log_path=self.work / f"serve-{server}.log",
                )
            )
            self.urls[server], self.cpu[server] = url, SessionCPU(pid)
            log(f"ocimirror serve ({LABELS[server]}) at {url}, {a.workers} workers")
        token, challenge = get_token(self.urls["token"], self.password)
        figures["challenge"] = challenge
        self.check("no-auth", None)
        self.check("token", token)
        log(f"challenge of GET /v2/: realm {challenge['realm']}, service {challenge['service']}")
        for server in SERVERS:
            self.wrk_run(server, a.warmup)
        pairs = []
        for i in range(a.pairs):
            order = SERVERS if i % 2 == 0 else SERVERS[::-1]
            pair: dict[str, Any] = {"order": list(order)}
            for server in order:
                pair[server] = self.wrk_run(server, a.duration)
            pair["ratio"] = pair["token"]["rps"] / pair["no-auth"]["rps"]
            log(
                f"pair {i}: no-auth {pair['no-auth']['rps']:,.0f} req/s, token "
                f"{pair['token']['rps']:,.0f} req/s, ratio {pair['ratio']:.3f}"
            )
            pairs.append(pair)
        figures["pairs"] = pairs
        figures["image"] = self.image


def summarize(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for server in SERVERS:
        keys = ("rps", "p50_ms", "p99_ms", "server_cpu", "cpu_us_per_request")
        summary[server] = {k: statistics.median(p[server][k] for p in pairs) for k in keys}
        summary[server]["all_rps"] = [p[server]["rps"] for p in pairs]
    ratios = [p["ratio"] for p in pairs]
    summary["ratios"] = ratios
    summary["ratio"] = statistics.median(ratios)
    summary["met"] = summary["ratio"] >= TARGET
    summary["valid"] = all(
        p[s]["non_2xx"] == 0 and p[s]["socket_errors"] == 0 for p in pairs for s in SERVERS
    )
    return summary


def report(figures: dict[str, Any]) -> None:
    s = figures["summary"]
    n = len(figures["pairs"])
    print()
    print(
        f"one image ({figures['image']['media_type']}) behind a private distribution; "
        f"ocimirror serve --workers {figures['workers']}, two servers on one home"
    )
    print(
        f"machine: {figures['cpus']} CPUs, shared by the servers and wrk; {figures['wrk']}; "
        f"median of {n} interleaved pairs"
    )
    rows: list[tuple[str, ...]] = [
        (
            "manifest GET, requests/s",
            f"{s['no-auth']['rps']:,.0f}",
            f"{s['token']['rps']:,.0f}",
            f"{s['ratio']:.3f}x",
            f">= {TARGET:.1f}x",
            "ok" if s["met"] else "MISSED",
        ),
        (
            "  p50 / p99 latency, ms",
            f"{s['no-auth']['p50_ms']:.2f} / {s['no-auth']['p99_ms']:.2f}",
            f"{s['token']['p50_ms']:.2f} / {s['token']['p99_ms']:.2f}",
            "",
            "",
            "",
        ),
        (
            "  server CPU per request, us",
            f"{s['no-auth']['cpu_us_per_request']:.0f}",
            f"{s['token']['cpu_us_per_request']:.0f}",
            "",
            "",
            "",
        ),
        (
            "  non-2xx / socket errors",
            "",
            "",
            "",
            "0 / 0",
            "ok" if s["valid"] else "INVALID",
        ),
    ]
    print_table(("measurement", "--no-auth", "token auth", "ratio", "target", ""), rows)
    print()
    for server in SERVERS:
        print(
            f"{LABELS[server]} per pair, requests/s: "
            + ", ".join(f"{v:,.0f}" for v in s[server]["all_rps"])
        )
    print("ratios per pair: " + ", ".join(f"{r:.3f}" for r in s["ratios"]))
    command = figures["pairs"][-1]["token"]["command"]
    print(f"wrk (token): {re.sub(r'http://[^/]+', 'http://<server>', command)}")
    print()
    print(f"command: {figures['command']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s wrk runs")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved pairs of runs")
    parser.add_argument("--workers", type=int, default=2, help="ocimirror serve --workers")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--duration", type=int, default=10, help="wrk -d (seconds)")
    parser.add_argument("--warmup", type=int, default=2, help="wrk warm-up run (seconds)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="where the temporary directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="stop everything after this many seconds"
    )
    args = parser.parse_args()
    compile_package()
    if args.quick:
        args.duration = 3
    if args.pairs < 1 or args.duration < 1:
        parser.error("--pairs and --duration must be >= 1")
    wrk = ensure_wrk()

    start_deadline(args.timeout)

    version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    figures: dict[str, Any] = {
        "command": command_line(__file__),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "wrk": (version.stdout or version.stderr).split(" Copyright")[0].strip(),
    }
    work = Path(tempfile.mkdtemp(prefix="ocimirror-auth-bench-", dir=args.workdir))
    log(f"work directory {work}")
    try:
        with contextlib.ExitStack() as stack:
            Bench(args, work, wrk).run(figures, stack)
    except BaseException:
        signal.alarm(0)
        traceback.print_exc()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    signal.alarm(0)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    figures["summary"] = summarize(figures["pairs"])
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0 if figures["summary"]["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
