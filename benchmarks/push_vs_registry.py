"""How fast does ``ocimirror serve`` take pushes next to ``docker-registry``, same images, one run?

Everything runs on 127.0.0.1. A corpus of deterministic random images (default 1,000 images
over 40 repositories, 25 tags each, built as the sync benchmark builds its corpus: see
``sync_vs_skopeo.corpus_plan``; every image is one of 4 shared base-layer sets of 2 layers of
256 KiB-1 MiB, plus 1-2 own layers of 8-64 KiB and a config) is written once as a directory of
``dir:`` images named as their destinations (``CORPUS/bench/app-00:1.0.0/``; shared layers are
hard links). Then one ``skopeo sync --src dir --dest docker --scoped --dest-tls-verify=false
CORPUS 127.0.0.1:PORT`` pushes all of it, in one invocation, into each of:

* ``registry``: a fresh Debian ``docker-registry`` (Distribution 2.8, access log off, log level
  ``warn``, the in-memory blob descriptor cache, filesystem storage);
* ``no-auth``: a fresh ocimirror home served by ``python -m ocimirror --home H serve --port P
  --no-auth --workers W --log-level warning`` (SQLite + files);
* ``token``: the same, with token authentication (the default): a user ``bench`` with a push
  grant on ``*`` is created first with ``ocimirror user create --password-stdin`` and ``user
  grant``, and skopeo pushes with ``--dest-creds bench:<password>``.

Each is timed as one ``skopeo sync`` process (wall time, skopeo's CPU) with the server's CPU.
For ocimirror, the RSS of the granian worker processes (the serve process's children) is read
from ``/proc/<pid>/status``: ``VmRSS`` once the server answers (start), sampled every 0.2 s
during the push, and at the end; the peak is ``VmHWM``, reset to the current RSS just before
the push (``echo 5 > /proc/<pid>/clear_refs``) so it is the push's own peak. Afterwards every
repository's tags are checked against the digests of the corpus (docker-registry by HTTP,
ocimirror through the Python API on the stopped server's home).

With ``--repeat N`` the three run N times, interleaved (round ``i`` starts with the mode after
round ``i - 1``'s first), and the table shows medians; each ratio is the median of the
per-round ratios ocimirror / docker-registry. Processes (each in its own session) and
temporary directories are cleaned up, and a global deadline stops it::

    .venv/bin/python benchmarks/push_vs_registry.py                         # 1,000 images
    .venv/bin/python benchmarks/push_vs_registry.py --quick --repeat 5      # 100 images
    .venv/bin/python benchmarks/push_vs_registry.py --modes registry,no-auth --repeat 3
    .venv/bin/python benchmarks/push_vs_registry.py --json result.json

skopeo and both servers share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]  # the other benchmarks' helpers, the fixtures

from fixtures.registry import REGISTRY_BINARY, Registry, run_registry  # noqa: E402
from serve_vs_registry import (  # noqa: E402
    REGISTRY_CONFIG,
    SessionCPU,
    _children,
    serve_ocimirror,
)
from sync_vs_skopeo import (  # noqa: E402
    SKOPEO,
    MiB,
    ProcessCPU,
    clean_env,
    command_line,
    compile_package,
    corpus_plan,
    log,
    print_table,
    run_measured,
    start_deadline,
)

import ocimirror  # noqa: E402
from ocimirror.testing import random_image  # noqa: E402

MODES = ("registry", "no-auth", "token")
LABELS = {
    "registry": "docker-registry",
    "no-auth": "ocimirror --no-auth",
    "token": "ocimirror token",
}
#: Wall-time ratio ocimirror / docker-registry not to exceed.
TARGET = 1.5
USERNAME = "bench"
#: ``dir:`` transport's version file (containers/image ``directory`` transport 1.1).
DIR_VERSION = "Directory Transport Version: 1.1\n"
SAMPLE_SECONDS = 0.2


# -- the corpus ------------------------------------------------------------------------------


def write_corpus(root: Path, images: int, repos: int) -> dict[str, Any]:
    """Write the corpus as ``dir:`` images at ``root/<repository>:<tag>/``.

    Each image directory holds ``version``, ``manifest.json`` and one file per blob named by its
    hex digest; a blob shared by several images is written once and hard-linked. Returns the
    expected tags (repository -> tag -> digest) and the corpus's sizes.
    """
    bases, specs = corpus_plan(images, repos)
    pool = root.parent / f"{root.name}-blobs"
    pool.mkdir(parents=True)
    expected: dict[str, dict[str, str]] = {}
    sizes: dict[str, int] = {}
    for spec in specs:
        image = random_image(
            seed=spec["seed"],
            layers=spec["layers"],
            layer_size=spec["layer_size"],
            base=bases[spec["base"]],
        )
        directory = root / f"{spec['repo']}:{spec['tag']}"
        directory.mkdir(parents=True)
        (directory / "version").write_text(DIR_VERSION)
        (directory / "manifest.json").write_bytes(image.manifest)
        for blob in image.blobs():
            stored = pool / blob.digest.hex
            if str(blob.digest) not in sizes:
                stored.write_bytes(blob.data)
                sizes[str(blob.digest)] = blob.size
            os.link(stored, directory / blob.digest.hex)
        expected.setdefault(spec["repo"], {})[spec["tag"]] = str(image.digest)
    return {
        "expected": expected,
        "images": len(specs),
        "repos": len(expected),
        "tags_per_repo": len(specs) // len(expected),
        "distinct_blobs": len(sizes),
        "distinct_blob_bytes": sum(sizes.values()),
        "pushed_blob_bytes": sum(
            p.stat().st_size for p in root.rglob("*") if p.is_file() and len(p.name) == 64
        ),
    }


# -- an ocimirror server and its workers' memory ---------------------------------------------


def _status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class WorkerMemory:
    """The RSS of an ocimirror server's granian workers: now, sampled over time, and the peak."""

    def __init__(self, serve_pid: int) -> None:
        self.serve_pid = serve_pid
        self.workers = _children(serve_pid)
        if not self.workers:
            raise RuntimeError(f"ocimirror serve (pid {serve_pid}) has no worker processes")
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB of all workers)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def rss_mb(self) -> dict[int, float]:
        """``VmRSS`` of each worker, MB."""
        return {p: (_status_kib(p, "VmRSS") or 0) / 1024 for p in self.workers}

    def hwm_mb(self) -> dict[int, float]:
        """``VmHWM`` (peak RSS since start or the last reset) of each worker, MB."""
        return {p: (_status_kib(p, "VmHWM") or 0) / 1024 for p in self.workers}

    def reset_peak(self) -> bool:
        """Reset each worker's ``VmHWM`` to its current RSS (Linux >= 4.0); False if refused."""
        try:
            for pid in self.workers:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def __enter__(self) -> WorkerMemory:
        self._t0 = time.perf_counter()

        def sample() -> None:
            while not self._stop.wait(SAMPLE_SECONDS):
                self.samples.append((time.perf_counter() - self._t0, sum(self.rss_mb().values())))

        self._thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def ocimirror_cli(home: Path, *args: str, stdin: str | None = None) -> None:
    """Run ``python -m ocimirror --home H ARGS`` to its end (output shown only on failure)."""
    command = [sys.executable, "-m", "ocimirror", "--home", str(home), *args]
    done = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=home,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited with {done.returncode}:\n{done.stderr}")


# -- the runs --------------------------------------------------------------------------------


class Bench:
    """The corpus, and one push of it into each server per round."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.corpus = work / "corpus"
        self.expected: dict[str, dict[str, str]] = {}
        self.password = secrets.token_urlsafe(12)

    def setup(self) -> dict[str, Any]:
        start = time.perf_counter()
        info = write_corpus(self.corpus, self.args.images, self.args.repos)
        self.expected = info.pop("expected")
        info["write_seconds"] = time.perf_counter() - start
        log(
            f"corpus: {info['images']} images over {info['repos']} repositories "
            f"({info['distinct_blobs']} distinct blobs, "
            f"{info['distinct_blob_bytes'] / MiB:.1f} MiB; "
            f"{info['pushed_blob_bytes'] / MiB:.0f} MiB of blobs across the image directories) "
            f"written in {info['write_seconds']:.1f}s"
        )
        return info

    def skopeo(self, host: str, creds: str | None) -> dict[str, Any]:
        command = [
            SKOPEO, "sync", "--src", "dir", "--dest", "docker", "--scoped",
            "--dest-tls-verify=false", *(["--dest-creds", creds] if creds else []),
            str(self.corpus), host,
        ]  # fmt: skip
        result = run_measured(command, timeout=self.args.timeout, cwd=self.work, env=clean_env())
        shown = [("bench:<password>" if a == creds else a) for a in command]
        return {
            "wall": result["wall"],
            "skopeo_cpu": result["cpu"],
            "skopeo_rss_mb": result["rss_mb"],
            "command": shlex.join([Path(shown[0]).name, *shown[1:]]),
        }

    def check_registry(self, registry: Registry) -> None:
        def check(name: str) -> str | None:
            with Registry(registry.url) as client:
                tags = sorted(client.tags(name))
                if tags != sorted(self.expected[name]):
                    return f"{name}: tags {tags[:5]}"
                for tag, digest in self.expected[name].items():
                    if str(client.manifest_digest(name, tag)) != digest:
                        return f"{name}:{tag} is not {digest}"
            return None

        with ThreadPoolExecutor(max_workers=8) as pool:
            wrong = [w for w in pool.map(check, sorted(self.expected)) if w]
        if wrong:
            raise RuntimeError(f"docker-registry does not hold what was pushed: {wrong[:3]}")

    def check_ocimirror(self, home: Path) -> None:
        with ocimirror.open(home=home) as reg:
            wrong = [
                name for name, want in self.expected.items() if reg.repository(name).tags() != want
            ]
        if wrong:
            raise RuntimeError(f"ocimirror does not hold what was pushed: {wrong[:3]}")

    def run_registry(self, round_: int) -> dict[str, Any]:
        directory = self.work / f"registry-{round_}"
        with run_registry(directory, config=REGISTRY_CONFIG) as registry:
            cpu = ProcessCPU.of_registry(registry)
            cpu0 = cpu.seconds()
            result = self.skopeo(registry.host, None)
            result["server_cpu"] = cpu.seconds() - cpu0
            if cpu.pid is not None:
                result["server_hwm_mb"] = (_status_kib(cpu.pid, "VmHWM") or 0) / 1024
                result["server_rss_end_mb"] = (_status_kib(cpu.pid, "VmRSS") or 0) / 1024
            self.check_registry(registry)
        shutil.rmtree(directory, ignore_errors=True)
        return result

    def run_ocimirror(self, round_: int, *, auth: bool) -> dict[str, Any]:
        home = self.work / f"ocimirror-{'token' if auth else 'no-auth'}-{round_}"
        home.mkdir()
        if auth:
            ocimirror_cli(home, "user", "create", "--username", USERNAME, "--password-stdin",
                          stdin=self.password + "\n")  # fmt: skip
            ocimirror_cli(home, "user", "grant", "--username", USERNAME,
                          "--base-path", "*", "--role", "push")  # fmt: skip
        serve_log = home / "serve.log"
        server = serve_ocimirror(home, auth=auth, workers=self.args.workers, log_path=serve_log)
        with server as (url, pid):
            memory = WorkerMemory(pid)
            time.sleep(1.0)  # let the workers settle after start-up
            start_rss = memory.rss_mb()
            start_hwm = memory.hwm_mb()
            reset = memory.reset_peak()
            cpu = SessionCPU(pid)
            cpu0 = cpu.seconds()
            with memory:
                result = self.skopeo(
                    url.removeprefix("http://"), f"{USERNAME}:{self.password}" if auth else None
                )
            result["server_cpu"] = cpu.seconds() - cpu0
            end_rss = memory.rss_mb()
            peak = memory.hwm_mb()
            result["workers"] = len(memory.workers)
            result["rss_start_mb"] = sum(start_rss.values())
            result["rss_peak_mb"] = sum(peak.values())  # each worker's own peak, summed
            result["rss_end_mb"] = sum(end_rss.values())
            result["rss_sampled_max_mb"] = max((mb for _, mb in memory.samples), default=0.0)
            result["hwm_since_start_mb"] = sum(start_hwm.values())
            result["hwm_reset"] = reset
            result["per_worker"] = {
                str(p): {"start": start_rss[p], "peak": peak[p], "end": end_rss[p]}
                for p in memory.workers
            }
            result["rss_quarters_mb"] = _quarters(memory.samples, result["wall"])
        log_text = serve_log.read_text(errors="replace").strip()
        if log_text and "Traceback" in log_text:
            log(f"the server logged a traceback:\n{log_text[-2000:]}")
        self.check_ocimirror(home)
        shutil.rmtree(home, ignore_errors=True)
        return result

    def round(self, round_: int) -> dict[str, Any]:
        """One push into every server, starting with a different one each round."""
        modes = list(self.args.modes)
        shift = round_ % len(modes)
        order = modes[shift:] + modes[:shift]
        out: dict[str, Any] = {"order": order}
        for mode in order:
            log(f"round {round_}: {LABELS[mode]}: skopeo sync of {self.args.images} images ...")
            if mode == "registry":
                result = self.run_registry(round_)
            else:
                result = self.run_ocimirror(round_, auth=mode == "token")
            out[mode] = result
            rss = ""
            if "rss_peak_mb" in result:
                rss = (
                    f"; workers' RSS {result['rss_start_mb']:.0f} -> peak "
                    f"{result['rss_peak_mb']:.0f} -> {result['rss_end_mb']:.0f} MB"
                )
            log(
                f"round {round_}: {LABELS[mode]}: {result['wall']:.1f}s, server CPU "
                f"{result['server_cpu']:.1f}s, skopeo CPU {result['skopeo_cpu']:.1f}s{rss}"
            )
        return out


def _quarters(samples: list[tuple[float, float]], wall: float) -> list[float]:
    """The workers' summed RSS (MB) at about 25%, 50%, 75% and 100% of the push."""
    if not samples:
        return []
    out = []
    for q in (0.25, 0.5, 0.75, 1.0):
        at = [mb for t, mb in samples if t <= q * wall]
        out.append(at[-1] if at else samples[0][1])
    return out


# -- the report ------------------------------------------------------------------------------


def summarize(rounds: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Medians over the rounds; each ratio is the median of the per-round ratios."""
    summary: dict[str, Any] = {}
    for mode in modes:
        values: dict[str, list[float]] = {}
        for r in rounds:
            for key, value in r[mode].items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values.setdefault(key, []).append(value)
        summary[mode] = {key: statistics.median(v) for key, v in values.items()}
        summary[mode]["walls"] = [r[mode]["wall"] for r in rounds]
    if "registry" in modes:
        for mode in modes:
            if mode == "registry":
                continue
            ratios = [r[mode]["wall"] / r["registry"]["wall"] for r in rounds]
            summary[mode]["ratios"] = ratios
            summary[mode]["ratio"] = statistics.median(ratios)
            summary[mode]["met"] = summary[mode]["ratio"] <= TARGET
    return summary


def report(figures: dict[str, Any]) -> None:
    c, s, modes = figures["corpus"], figures["summary"], figures["modes"]
    rounds = len(figures["rounds"])
    print()
    print(
        f"corpus: {c['images']} images over {c['repos']} repositories ({c['tags_per_repo']} "
        f"tags each), {c['distinct_blobs']} distinct blobs, "
        f"{c['distinct_blob_bytes'] / MiB:.1f} MiB; one `skopeo sync --src dir` per server"
    )
    print(
        f"machine: {figures['cpus']} CPUs, shared by skopeo and the servers; {figures['skopeo']}; "
        f"{figures['registry']}; ocimirror serve --workers {figures['workers']}; "
        f"{'median of ' + str(rounds) + ' interleaved rounds' if rounds > 1 else 'one round'}"
    )
    header = ("measurement", *(LABELS[m] for m in modes))
    rows: list[tuple[str, ...]] = []

    def row(label: str, fmt: str, key: str) -> None:
        if not any(key in s[m] for m in modes):
            return
        rows.append((label, *(fmt.format(s[m][key]) if key in s[m] else "" for m in modes)))

    row(f"push {c['images']} images, wall s", "{:.1f}", "wall")
    if "registry" in modes:
        rows.append(
            (
                f"  ratio to docker-registry (target <= {TARGET:.1f}x)",
                *(
                    ""
                    if m == "registry"
                    else f"{s[m]['ratio']:.2f}x {'ok' if s[m]['met'] else 'MISSED'}"
                    for m in modes
                ),
            )
        )
    row("  images/s", "{:.1f}", "images_per_second")
    row("server CPU s", "{:.1f}", "server_cpu")
    row("skopeo CPU s", "{:.1f}", "skopeo_cpu")
    row("server RSS at start, MB", "{:.0f}", "rss_start_mb")
    row("server peak RSS (VmHWM) during the push, MB", "{:.0f}", "rss_peak_mb")
    row("server RSS at the end, MB", "{:.0f}", "rss_end_mb")
    row("docker-registry VmHWM (whole life), MB", "{:.0f}", "server_hwm_mb")
    print_table(header, rows)
    print()
    for m in modes:
        if m == "registry":
            continue
        last = figures["rounds"][-1][m]
        quarters = ", ".join(f"{v:.0f}" for v in last.get("rss_quarters_mb", []))
        print(
            f"{LABELS[m]} (last round): {last['workers']} workers; their RSS summed at 25/50/75/"
            f"100% of the push: {quarters} MB; the highest 0.2 s sample "
            f"{last['rss_sampled_max_mb']:.0f} MB; VmHWM before the reset (start-up) "
            f"{last['hwm_since_start_mb']:.0f} MB"
            + ("" if last["hwm_reset"] else " (VmHWM could not be reset: peak includes start-up)")
        )
    if rounds > 1:
        for m in modes:
            walls = ", ".join(f"{w:.1f}" for w in s[m]["walls"])
            ratios = ", ".join(f"{r:.2f}" for r in s[m].get("ratios", []))
            print(
                f"{LABELS[m]} per round: wall [{walls}] s"
                + (f", ratio [{ratios}]" if ratios else "")
            )
    print(f"skopeo: {figures['rounds'][-1][modes[-1]]['command']}")
    print()
    print(f"command: {figures['command']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the corpus")
    parser.add_argument("--repos", type=int, default=40, help="repositories they spread over")
    parser.add_argument("--quick", action="store_true", help="100 images over 10 repositories")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"which servers, comma-separated, of {', '.join(MODES)} (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; medians")
    parser.add_argument("--workers", type=int, default=2, help="ocimirror serve --workers")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="where the temporary directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--timeout", type=float, default=7200.0, help="stop everything after this many seconds"
    )
    args = parser.parse_args()
    compile_package()
    if args.quick:
        args.images, args.repos = 100, 10
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if (
        not args.modes
        or any(m not in MODES for m in args.modes)
        or len(set(args.modes)) < len(args.modes)
    ):
        parser.error(f"--modes takes distinct names of {', '.join(MODES)}")
    if args.images < args.repos or args.repos < 1 or args.repeat < 1:
        parser.error("--images must be >= --repos >= 1, and --repeat >= 1")
    needed = [SKOPEO, *([REGISTRY_BINARY] if "registry" in args.modes else [])]
    for tool in needed:
        if not Path(tool).exists():
            parser.error(f"{tool} is not installed (apt-get install -y {Path(tool).name})")

    start_deadline(args.timeout)

    command = command_line(__file__)
    registry_version = "docker-registry (not run)"
    if "registry" in args.modes:
        out = subprocess.run(
            [REGISTRY_BINARY, "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        registry_version = "docker-registry " + (out or ["?"])[-1]
    figures: dict[str, Any] = {
        "command": command,
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "modes": args.modes,
        "skopeo": subprocess.run(
            [SKOPEO, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "registry": registry_version,
    }
    work = Path(tempfile.mkdtemp(prefix="ocimirror-push-bench-", dir=args.workdir))
    log(f"work directory {work}")
    try:
        bench = Bench(args, work)
        figures["corpus"] = bench.setup()
        figures["rounds"] = [bench.round(i) for i in range(args.repeat)]
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

    for r in figures["rounds"]:
        for m in args.modes:
            r[m]["images_per_second"] = figures["corpus"]["images"] / r[m]["wall"]
    figures["summary"] = summarize(figures["rounds"], args.modes)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
