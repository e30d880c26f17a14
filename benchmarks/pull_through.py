"""Pulling a corpus through a pull-through cache, cold and warm, against pulling it directly.

One run, on this machine:

* an upstream docker-registry holding the corpus of ``sync_vs_skopeo.py`` (1,000 images over
  40 repositories by default, sharing base layers);
* **direct**: every image pulled from the upstream (manifest, config, layers);
* **ocimirror**: a pull-through remote and distribution (``cache``), nothing else created;
  every image pulled as ``cache/<repository>:<tag>`` from ``ocimirror serve``: cold (each
  repository made, each tag synced, each layer fetched upstream while it is stored), then warm;
* **docker-registry proxy**: Debian's docker-registry in proxy mode in front of the same
  upstream, pulled cold, then warm: the peer.

The puller is the same for every target: an asyncio httpx client that pulls images
concurrently (``--concurrency``) the way a registry client does (GET manifest, then config and
layers, each read to the end and checked against its digest). Ratios are against direct, in
the same round; the median of ``--repeat`` rounds is reported.

    .venv/bin/python benchmarks/pull_through.py --repeat 3
    .venv/bin/python benchmarks/pull_through.py --images 200 --repos 10   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
from fixtures.registry import run_registry  # noqa: E402
from serve_vs_registry import serve_ocimirror  # noqa: E402
from sync_vs_skopeo import command_line, compile_package, corpus_plan, log, print_table, push_corpus  # noqa: E402

import ocimirror  # noqa: E402

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


async def _pull_one(
    client: httpx.AsyncClient, base: str, name: str, tag: str, limit: asyncio.Semaphore
) -> int:
    """Pull one image as a client does; the bytes read."""
    async with limit:
        response = await client.get(f"{base}/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT})
        response.raise_for_status()
        manifest = response.json()
        total = len(response.content)
        for blob in [manifest["config"], *manifest["layers"]]:
            digest = blob["digest"]
            h = hashlib.sha256()
            async with client.stream("GET", f"{base}/v2/{name}/blobs/{digest}") as got:
                if got.status_code != 200:
                    await got.aread()
                    raise RuntimeError(f"{name}:{tag}: blob {digest}: {got.status_code} {got.text}")
                async for chunk in got.aiter_bytes():
                    h.update(chunk)
                    total += len(chunk)
            if f"sha256:{h.hexdigest()}" != digest:
                raise RuntimeError(f"{name}:{tag}: blob {digest} came back wrong")
        return total


async def _pull_all(base: str, images: list[tuple[str, str]], concurrency: int) -> int:
    limit = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(120.0), limits=limits, follow_redirects=True, trust_env=False
    ) as client:
        sizes = await asyncio.gather(*(_pull_one(client, base, n, t, limit) for n, t in images))
    return sum(sizes)


#: ``--client``: the asyncio puller (``http``) or one ``skopeo copy`` per image (``skopeo``).
CLIENT = "http"


def _skopeo_one(base: str, name: str, tag: str, out: Path) -> int:
    host = base.split("://", 1)[1]
    target = out / f"{name.replace('/', '_')}-{tag}"
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(out / "auth.json")}
    done = subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false",
         f"docker://{host}/{name}:{tag}", f"dir:{target}"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"skopeo copy {name}:{tag} failed: {done.stderr.strip()}")
    size = sum(p.stat().st_size for p in target.iterdir() if p.name != "version")
    shutil.rmtree(target)
    return size


def pull(base: str, images: list[tuple[str, str]], concurrency: int) -> tuple[float, int]:
    """Seconds to pull every image, and the bytes read (``dir:`` bytes for skopeo).

    Each pass starts after ``os.sync()``, so that none pays for the write-back of what the
    pass before it stored (a cold pass through a cache writes the corpus, 1.2 GB), as in
    ``sync_vs_skopeo.py``.
    """
    os.sync()
    started = time.perf_counter()
    if CLIENT == "skopeo":
        with (
            tempfile.TemporaryDirectory(prefix="pt-skopeo-") as out,
            ThreadPoolExecutor(concurrency) as pool,
        ):
            sizes = pool.map(lambda it: _skopeo_one(base, it[0], it[1], Path(out)), images)
            size = sum(sizes)
    else:
        size = asyncio.run(_pull_all(base, images, concurrency))
    return time.perf_counter() - started, size


def one_round(
    work: Path, upstream_url: str, images: list[tuple[str, str]], args: argparse.Namespace
) -> dict[str, float]:
    figures: dict[str, float] = {}
    figures["direct"], expected = pull(upstream_url, images, args.concurrency)
    log(f"direct: {figures['direct']:.2f} s ({expected / 1e6:.1f} MB)")

    home = work / f"ocimirror-{time.monotonic_ns()}"
    with ocimirror.open(home=home) as reg:
        reg.create_pull_through_remote(name="up", url=upstream_url)
        reg.create_pull_through_distribution("cache", base_path="cache", remote="up")
    cached = [(f"cache/{n}", t) for n, t in images]
    with serve_ocimirror(home, auth=False, workers=args.workers, log_path=home / "serve.log") as (
        url,
        _,
    ):
        figures["ocimirror_cold"], got = pull(url, cached, args.concurrency)
        assert got == expected, (got, expected)
        figures["ocimirror_warm"], _ = pull(url, cached, args.concurrency)
    log(
        f"ocimirror: cold {figures['ocimirror_cold']:.2f} s, warm {figures['ocimirror_warm']:.2f} s"
    )

    proxy_dir = work / f"proxy-{time.monotonic_ns()}"
    with run_registry(proxy_dir, config={"proxy": {"remoteurl": upstream_url}}) as proxy:
        figures["proxy_cold"], got = pull(proxy.url, images, args.concurrency)
        assert got == expected, (got, expected)
        figures["proxy_warm"], _ = pull(proxy.url, images, args.concurrency)
    log(f"registry proxy: cold {figures['proxy_cold']:.2f} s, warm {figures['proxy_warm']:.2f} s")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repos", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16, help="images pulled at once")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="serve workers")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--client",
        choices=("http", "skopeo"),
        default="http",
        help="the asyncio puller, or one skopeo copy to dir: per image",
    )
    args = parser.parse_args()
    compile_package()
    global CLIENT
    CLIENT = args.client

    with tempfile.TemporaryDirectory(prefix="ocimirror-pt-bench-") as tmp:
        work = Path(tmp)
        bases, specs = corpus_plan(args.images, args.repos)
        with run_registry(work / "upstream") as upstream:
            log(f"pushing {len(specs)} images over {args.repos} repositories")
            push_corpus(upstream, bases, specs, workers=8)
            images = [(s["repo"], s["tag"]) for s in specs]
            rounds = []
            for n in range(args.repeat):
                log(f"round {n + 1} of {args.repeat}")
                rounds.append(one_round(work, upstream.url, images, args))
    keys = list(rounds[0])
    median = {k: statistics.median(r[k] for r in rounds) for k in keys}
    rows = []
    for key in keys:
        ratio = median[key] / median["direct"]
        rows.append((key, f"{median[key]:.2f}", f"{ratio:.2f}x"))
    print()
    print(f"{len(images)} images over {args.repos} repositories, client {args.client}, "
          f"concurrency {args.concurrency}, {args.workers} serve workers, "
          f"median of {args.repeat}")  # fmt: skip
    print_table(("target", "seconds", "vs direct"), rows)
    print(f"\ncommand: {command_line('benchmarks/pull_through.py')}")
    if args.json:
        with contextlib.suppress(OSError):
            args.json.write_text(json.dumps({"rounds": rounds, "median": median}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
