"""What does one upstream request cost ocimirror, per HTTP transport under ``RegistryClient``?

Everything runs on 127.0.0.1. A Debian ``docker-registry`` is filled with small images
(``random_image``; default 60 images over 6 repositories, 2 layers of 1-16 KiB each plus a
config). Then, for each transport, a fresh :class:`~ocimirror.upstream.RegistryClient` does what
a sync does for those images, with 32 concurrent tasks taking the next request from one shared
list (default 3,000 requests a run, after a warm-up that opens the connections): per image
``resolve`` (``HEAD`` the manifest by tag), ``get_manifest`` by digest, and ``download_blob`` of
the config and each layer into a sink that hashes and checks them (``--sink store`` uses a
``memory://`` blob store instead; it costs more CPU per blob, the same for every transport).

Then each variant downloads one large blob (``--big-mib``, default 64 MiB) ``--big-count`` times
at once (default 4), for CPU seconds per GiB and MiB/s.

Measured per run: CPU seconds of this process (every thread: ``time.process_time``) per request,
the figure that matters when the sync is CPU-bound on its event loop, and requests/s of wall
time (which also depends on the registry process, sharing the machine's 2 cores). Each round
runs every variant once; the order alternates between rounds (odd rounds reversed), and the
medians over ``--rounds`` (default 3) are reported, with the range. Variants:

* ``httpx``: ``RegistryClient(http_backend="httpx")``: httpx's ``AsyncHTTPTransport`` on
  httpcore, a pool of 32 kept-alive connections (the default before issue 9);
* ``httpx-pool8``, ``httpx-pool16``: the same with ``max_connections`` 8 and 16 (httpcore walks
  the whole pool, polling each idle socket, on every request: a smaller pool walks less);
* ``httpx-keepalive8``: 32 connections but only 8 kept alive between requests (fewer idle
  connections to walk, but a connection opened per burst: on TLS that is a handshake each);
* ``aiohttp``: ``RegistryClient(http_backend="aiohttp")``, the default: the ``httpx-aiohttp``
  transport (aiohttp's connector and parser under the same httpx API), 32 connections;
* ``pyreqwest``: ``RegistryClient(transport=...)`` with pyreqwest's httpx transport (Rust's
  reqwest; redirects and decompression off), 32 connections; only if ``pyreqwest`` is
  installed (it is no dependency of the project: it takes no ``ssl.SSLContext``);
* ``bare-httpx``, ``bare-aiohttp``: the same requests with a bare ``httpx.AsyncClient`` on each
  transport, bodies read and hashed but nothing else (no auth flow, redirects, retries,
  digest checks): what ``RegistryClient`` itself adds is the difference.

``--profile VARIANT`` runs one variant under cProfile (CPU time) instead and prints the top
functions. Processes and temporary directories are cleaned up; a global deadline stops it::

    .venv/bin/python benchmarks/http_transport.py                    # 3 rounds of 3,000
    .venv/bin/python benchmarks/http_transport.py --quick            # 3 rounds of 1,000
    .venv/bin/python benchmarks/http_transport.py --variants httpx,aiohttp --rounds 5
    .venv/bin/python benchmarks/http_transport.py --profile httpx
    .venv/bin/python benchmarks/http_transport.py --json result.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import hashlib
import importlib.util
import io
import json
import pstats
import random
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]  # the other benchmarks' helpers, the fixtures

import httpx  # noqa: E402
from fixtures.registry import MANIFEST_TYPES, Registry, run_registry  # noqa: E402
from sync_vs_skopeo import Deadline, log, print_table, start_deadline  # noqa: E402

from ocimirror.backends.blobs import open_blob_store  # noqa: E402
from ocimirror.core.digest import Digest  # noqa: E402
from ocimirror.testing import random_image  # noqa: E402
from ocimirror.upstream import RegistryClient  # noqa: E402

KiB = 1 << 10
CONCURRENCY = 32


# -- the corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    repo: str
    tag: str
    manifest: Digest
    blobs: tuple[tuple[Digest, int], ...]


def push_corpus(registry: Registry, images: int, repos: int) -> list[Pushed]:
    rng = random.Random("ocimirror.bench.http_transport")
    pushed = []
    for i in range(images):
        repo = f"bench/transport-{i % repos:02d}"
        tag = f"1.{i // repos}.0"
        image = random_image(
            seed=f"http-transport/{i}", layers=2, layer_size=rng.randint(KiB, 16 * KiB)
        )
        registry.push(repo, image, tag)
        blobs = tuple((b.digest, b.size) for b in image.blobs())
        pushed.append(Pushed(repo, tag, image.digest, blobs))
    return pushed


#: One request of the workload: (kind, repository, reference, size).
Op = tuple[str, str, str, int]


def workload(pushed: list[Pushed], total: int) -> list[Op]:
    """What a sync asks for each image (HEAD by tag, GET by digest, each blob), cycled."""
    one: list[Op] = []
    for p in pushed:
        one.append(("head", p.repo, p.tag, 0))
        one.append(("manifest", p.repo, str(p.manifest), 0))
        one.extend(("blob", p.repo, str(d), size) for d, size in p.blobs)
    return [one[i % len(one)] for i in range(total)]


# -- sinks -------------------------------------------------------------------------------------


class _HashWriter:
    def __init__(self, expected: Digest | None, size: int | None) -> None:
        self._hash = hashlib.sha256()
        self._expected = expected
        self._size = size
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    async def commit(self) -> Digest:
        got = Digest("sha256", self._hash.hexdigest())
        if self._expected is not None and got != self._expected:
            raise AssertionError(f"got {got}, expected {self._expected}")
        if self._size is not None and self.size != self._size:
            raise AssertionError(f"got {self.size} bytes, expected {self._size}")
        return got

    async def abort(self) -> None:
        pass


class HashSink:
    """A blob sink that only hashes and checks (keeps the transport the thing measured)."""

    def writer(self, *, expected: Digest | None = None, size: int | None = None) -> _HashWriter:
        return _HashWriter(expected, size)


# -- the variants ------------------------------------------------------------------------------


#: name -> RegistryClient keyword arguments (None: bare httpx, see BARE)
def _pyreqwest_transport() -> httpx.AsyncBaseTransport:
    from pyreqwest.client import ClientBuilder
    from pyreqwest.compatibility.httpx import HttpxTransport

    builder = ClientBuilder().max_connections(CONCURRENCY).follow_redirects(False)
    for off in ("gzip", "brotli", "zstd", "deflate"):
        builder = getattr(builder, off)(False)
    return HttpxTransport(builder.build())


CLIENT_VARIANTS: dict[str, dict[str, Any]] = {
    "httpx": {"http_backend": "httpx"},
    "httpx-pool8": {"http_backend": "httpx", "max_connections": 8},
    "httpx-pool16": {"http_backend": "httpx", "max_connections": 16},
    "httpx-keepalive8": {
        "transport": lambda: httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8)
        )
    },
    "aiohttp": {"http_backend": "aiohttp"},
    "pyreqwest": {"transport": _pyreqwest_transport},
}


def _aiohttp_transport() -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(limits=httpx.Limits(max_connections=CONCURRENCY))


BARE: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
    "bare-httpx": lambda: httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    ),
    "bare-aiohttp": _aiohttp_transport,
}

DEFAULT_VARIANTS = [*CLIENT_VARIANTS, *BARE]

#: The package a variant needs beyond the project's own dependencies.
_NEEDS = {"pyreqwest": "pyreqwest"}


def available(variant: str) -> bool:
    """Whether the package ``variant`` needs is installed."""
    need = _NEEDS.get(variant)
    return need is None or importlib.util.find_spec(need) is not None


def make_client(name: str, url: str) -> RegistryClient:
    options = dict(CLIENT_VARIANTS[name])
    if callable(options.get("transport")):
        options["transport"] = options["transport"]()
    return RegistryClient(url, max_retries=0, **options)


async def _run_ops(ops: list[Op], do: Callable[[Op], Awaitable[None]]) -> None:
    """``do`` every op, CONCURRENCY at a time, each task taking the next one."""
    it = iter(ops)

    async def worker() -> None:
        for op in it:
            await do(op)

    async with asyncio.TaskGroup() as tg:
        for _ in range(CONCURRENCY):
            tg.create_task(worker())


def _client_op(client: RegistryClient, sink: Any) -> Callable[[Op], Awaitable[None]]:
    async def do(op: Op) -> None:
        kind, repo, ref, size = op
        if kind == "head":
            await client.resolve(repo, ref)
        elif kind == "manifest":
            await client.get_manifest(repo, ref)
        else:
            await client.download_blob(repo, ref, sink, size=size)

    return do


def _bare_op(http: httpx.AsyncClient, url: str) -> Callable[[Op], Awaitable[None]]:
    accept = {"Accept": ",".join(MANIFEST_TYPES)}

    async def do(op: Op) -> None:
        kind, repo, ref, _ = op
        if kind == "head":
            response = await http.head(f"{url}/v2/{repo}/manifests/{ref}", headers=accept)
            assert response.status_code == 200, response
            return
        path = "manifests" if kind == "manifest" else "blobs"
        request = http.build_request("GET", f"{url}/v2/{repo}/{path}/{ref}", headers=accept)
        response = await http.send(request, stream=True)
        try:
            assert response.status_code == 200, response
            h = hashlib.sha256()
            async for chunk in response.aiter_bytes():
                h.update(chunk)
        finally:
            await response.aclose()

    return do


async def measure(
    name: str, url: str, ops: list[Op], warmup: list[Op], sink: str, big: Sequence[Op] = ()
) -> dict[str, float]:
    """One run of one variant: CPU s and wall s of ``ops`` after ``warmup``, then of ``big``
    (large blobs, all at once)."""
    blob_sink: Any = (
        HashSink() if sink == "hash" else open_blob_store(f"memory://bench-{uuid.uuid4().hex}")
    )
    async with contextlib.AsyncExitStack() as stack:
        if name in BARE:
            http = httpx.AsyncClient(transport=BARE[name](), timeout=60.0)
            stack.push_async_callback(http.aclose)
            do = _bare_op(http, url)
        else:
            client = make_client(name, url)
            stack.push_async_callback(client.aclose)
            do = _client_op(client, blob_sink)
        await _run_ops(warmup, do)
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await _run_ops(ops, do)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        result = {
            "requests": len(ops),
            "cpu_s": cpu,
            "wall_s": wall,
            "cpu_ms_per_request": 1000.0 * cpu / len(ops),
            "requests_per_s": len(ops) / wall,
        }
        if big:
            gib = sum(op[3] for op in big) / (1 << 30)
            gc.collect()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await _run_ops(list(big), do)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            result.update(big_cpu_s_per_gib=cpu / gib, big_mib_per_s=1024 * gib / wall)
    return result


def profile(name: str, url: str, ops: list[Op], warmup: list[Op], sink: str, top: int) -> None:
    async def run() -> None:
        await measure(name, url, warmup, warmup, sink)  # imports and first connections

    asyncio.run(run())
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    asyncio.run(measure(name, url, ops, warmup, sink))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(out.getvalue())


# -- main --------------------------------------------------------------------------------------


def push_big(registry: Registry, mib: int) -> Op:
    """One blob of ``mib`` MiB of random bytes, in its own repository."""
    data = random.Random("ocimirror.bench.http_transport/big").randbytes(mib << 20)
    digest = registry.push_blob("bench/big", data)
    return ("blob", "bench/big", str(digest), len(data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repos", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="1,000 requests per run")
    parser.add_argument(
        "--variants",
        default=",".join(v for v in DEFAULT_VARIANTS if available(v)),
        help=f"comma-separated, of {', '.join(DEFAULT_VARIANTS)} (default: all installed)",
    )
    parser.add_argument("--sink", choices=("hash", "store"), default="hash")
    parser.add_argument("--big-mib", type=int, default=64, help="large blob size (0: none)")
    parser.add_argument("--big-count", type=int, default=4, help="large blob downloads a run")
    parser.add_argument("--profile", metavar="VARIANT", help="cProfile one run of VARIANT")
    parser.add_argument("--top", type=int, default=40, help="functions shown by --profile")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--timeout", type=float, default=1800.0, help="global deadline (s)")
    args = parser.parse_args()
    if args.quick:
        args.requests = 1000
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in [*variants, args.profile or "httpx"] if v not in DEFAULT_VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    missing = [v for v in variants if not available(v)]
    if missing:
        parser.error(f"not installed: {', '.join(missing)}")

    start_deadline(args.timeout)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="ocimirror-bench-transport-") as tmp,
            run_registry(Path(tmp) / "upstream") as registry,
        ):
            log(f"pushing {args.images} images over {args.repos} repositories to {registry.url}")
            pushed = push_corpus(registry, args.images, args.repos)
            ops = workload(pushed, args.requests)
            warmup = workload(pushed, 4 * CONCURRENCY)
            big = [push_big(registry, args.big_mib)] * args.big_count if args.big_mib else []
            if args.profile:
                profile(args.profile, registry.url, ops, warmup, args.sink, args.top)
                return 0
            results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
            for round_ in range(args.rounds):
                order = variants if round_ % 2 == 0 else variants[::-1]
                for name in order:
                    r = asyncio.run(measure(name, registry.url, ops, warmup, args.sink, big))
                    results[name].append(r)
                    line = (
                        f"round {round_ + 1}/{args.rounds} {name}: "
                        f"{r['cpu_ms_per_request']:.3f} CPU ms/request, "
                        f"{r['requests_per_s']:.0f} requests/s"
                    )
                    if big:
                        line += (
                            f"; large blobs {r['big_cpu_s_per_gib']:.2f} CPU s/GiB, "
                            f"{r['big_mib_per_s']:.0f} MiB/s"
                        )
                    log(line)
    except Deadline as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        signal.alarm(0)

    def med(name: str, key: str) -> tuple[float, float, float]:
        values = [r[key] for r in results[name]]
        return statistics.median(values), min(values), max(values)

    base = med(variants[0], "cpu_ms_per_request")[0]
    rows = []
    summary: dict[str, Any] = {}
    for name in variants:
        cpu, rps = med(name, "cpu_ms_per_request"), med(name, "requests_per_s")
        summary[name] = {"cpu_ms_per_request": cpu[0], "requests_per_s": rps[0]}
        row = [
            name,
            f"{cpu[0]:.3f}",
            f"{cpu[1]:.3f}-{cpu[2]:.3f}",
            f"{cpu[0] / base:.2f}",
            f"{rps[0]:.0f}",
            f"{rps[1]:.0f}-{rps[2]:.0f}",
        ]
        if big:
            gib, mibs = med(name, "big_cpu_s_per_gib"), med(name, "big_mib_per_s")
            summary[name].update(big_cpu_s_per_gib=gib[0], big_mib_per_s=mibs[0])
            row += [f"{gib[0]:.2f}", f"{mibs[0]:.0f}"]
        summary[name]["runs"] = results[name]
        rows.append(tuple(row))
    header = ["variant", "CPU ms/req", "range", f"vs {variants[0]}", "req/s", "range"]
    if big:
        header += ["large CPU s/GiB", "large MiB/s"]
    print_table(tuple(header), rows)
    print(
        f"\n{args.requests} requests a run ({CONCURRENCY} tasks), medians of {args.rounds} "
        f"rounds, sink {args.sink}"
        + (f", {args.big_count} concurrent downloads of a {args.big_mib} MiB blob" if big else "")
        + f"; command: {' '.join(['python', *sys.argv])}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
