"""How much does a sync into S3 cost next to one into local files, on a corpus of small blobs?

Everything runs on 127.0.0.1: an upstream Debian ``docker-registry`` holds a corpus of
deterministic random images (default 300 images as tags of one repository; each image has its
own config and its own small layer on one shared base layer: 601 distinct small blobs), and a
moto server plays S3. Each round syncs the whole corpus, ``registry.sync_all(concurrency=32)``
through the blocking facade, into fresh destinations:

* SQLite + local files, SQLite + S3, PostgreSQL + local files, PostgreSQL + S3;
* with ``--before``, also SQLite + S3 and PostgreSQL + S3 through the threaded path that came
  before :class:`~ocimirror.backends.blobs.S3BlobStore` (``storage_options={"threaded": True}``:
  :class:`~ocimirror.backends.blobs.FsspecBlobStore` on s3fs's blocking API in worker threads).

And what the sync asks of the blob store, alone: a ``put`` of each of the 601 blobs, 32 at a
time, into fresh files and a fresh bucket (and the threaded path with ``--before``), with the
``stat`` before it that a sync makes on local files and not on S3 (where a stat is a HEAD, a
sync looks only for blobs the database records): the floor under a sync into that storage on
this machine.

Every destination is new: a new home, a new SQLite file or PostgreSQL database (``CREATE
DATABASE`` on the server named by ``OCIMIRROR_TEST_POSTGRES_URL``, dropped afterwards), a new
directory or S3 bucket. Only the ``sync_all`` call is timed; every tag is then checked against
the upstream's digest. The order of the destinations rotates from round to round.

It prints the median of the rounds for each destination, the ratios S3/files and
PostgreSQL + S3 against SQLite + files with their targets, and the command line::

    .venv/bin/python benchmarks/sync_into_s3.py                 # 3 rounds
    .venv/bin/python benchmarks/sync_into_s3.py --before        # and the threaded S3 path
    .venv/bin/python benchmarks/sync_into_s3.py --repeat 5 --json result.json
    .venv/bin/python benchmarks/sync_into_s3.py --moto granian  # moto with keep-alive

By default moto runs as ``python -m moto.server`` (werkzeug's development server, which closes
the connection after every response); ``--moto granian`` serves the same moto application with
granian, which keeps connections alive as S3 does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.postgres import POSTGRES_URL, _admin  # noqa: E402
from fixtures.registry import Registry, run_registry  # noqa: E402
from fixtures.s3 import MOTO_SERVERS, S3Server, _empty_bucket, moto_server  # noqa: E402
from sync_vs_skopeo import command_line, compile_package, log, print_table, start_deadline  # noqa: E402

import ocimirror  # noqa: E402
from ocimirror.backends.blobs import open_blob_store  # noqa: E402
from ocimirror.core.digest import Digest  # noqa: E402
from ocimirror.sync import SyncResult  # noqa: E402
from ocimirror.testing import random_image, random_layer  # noqa: E402

KiB = 1 << 10

#: (database, storage) in the order of the table, "store" for the blob store alone;
#: "s3-threaded" only with --before.
DESTINATIONS = [
    ("sqlite", "files"),
    ("sqlite", "s3"),
    ("postgres", "files"),
    ("postgres", "s3"),
    ("store", "files"),
    ("store", "s3"),
]
BEFORE = [("sqlite", "s3-threaded"), ("postgres", "s3-threaded"), ("store", "s3-threaded")]
LABELS = {
    "sqlite": "SQLite",
    "postgres": "PostgreSQL",
    "store": "blob store alone (its puts)",
    "files": "files",
    "s3": "S3",
    "s3-threaded": "S3, threaded (before)",
}
#: (numerator, denominator, target): what the issue asks of the S3 path.
RATIOS = [
    (("sqlite", "s3"), ("sqlite", "files"), 1.5),
    (("postgres", "s3"), ("postgres", "files"), 1.5),
    (("postgres", "s3"), ("sqlite", "files"), 1.6),
]


def label(destination: tuple[str, str]) -> str:
    database, storage = destination
    if database == "store":
        return f"{LABELS[database]}: {LABELS[storage]}"
    return f"{LABELS[database]} + {LABELS[storage]}"


# -- the servers -----------------------------------------------------------------------------


# -- the corpus ------------------------------------------------------------------------------


def push_corpus(
    upstream: Registry, images: int, repos: int, layer_size: int, base_size: int, workers: int
) -> tuple[dict[tuple[str, str], str], dict[Digest, bytes]]:
    """Push the corpus; ``(repository, tag) -> manifest digest``, and every blob.

    The base layer goes first, once per repository: docker-registry loses a blob pushed to one
    repository by several clients at once.
    """
    base = random_layer(base_size, seed="sync-into-s3/base")
    specs = [(f"bench/s3-{i % repos:02d}", f"1.{i // repos}.0", i) for i in range(images)]
    with Registry(upstream.url) as client:
        for name in {name for name, _, _ in specs}:
            client.push_blob(name, base)

    blobs = {base.digest: base.data}

    def push(spec: tuple[str, str, int]) -> tuple[tuple[str, str], str]:
        name, tag, i = spec
        image = random_image(seed=f"sync-into-s3/{i}", layers=1, layer_size=layer_size, base=[base])
        with Registry(upstream.url) as client:
            for blob in image.blobs():
                blobs[blob.digest] = blob.data
                if blob.digest != base.digest:
                    client.push_blob(name, blob)
            client.push_manifest(name, tag, image.manifest, image.media_type)
        return (name, tag), str(image.digest)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        truth = dict(pool.map(push, specs))
    return truth, blobs


# -- one destination -------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, home: Path) -> Iterator[str]:
    """A new SQLite file, or a new PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{home}/metadata.db"
        return
    name = f"bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_URL.rpartition('/')[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def fresh_storage(kind: str, home: Path, s3: S3Server) -> Iterator[tuple[str, dict[str, Any]]]:
    """A new directory, or a prefix in a new bucket emptied and removed afterwards."""
    if kind == "files":
        yield (home / "storage").as_uri(), {}
        return
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    options = {**s3.storage_options(), "threaded": kind == "s3-threaded"}
    try:
        yield f"s3://{bucket}/registry", options
    finally:
        _empty_bucket(client, bucket)


def sync_into(
    destination: tuple[str, str],
    work: Path,
    s3: S3Server,
    upstream: Registry,
    truth: dict[tuple[str, str], str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Sync the corpus into a fresh ``destination``; its wall time, checked."""
    database, storage = destination
    home = work / f"home-{uuid.uuid4().hex[:8]}"
    repos = sorted({name for name, _ in truth})
    extra = {} if args.workers is None else {"workers": args.workers}
    with (
        fresh_database(database, home) as database_url,
        fresh_storage(storage, home, s3) as (storage_url, options),
    ):
        reg = ocimirror.open(
            home=home,
            database_url=database_url,
            storage_url=storage_url,
            storage_options=options,
        )
        try:
            for i, name in enumerate(repos):
                reg.create_remote(name=f"up-{i:02d}", url=upstream.url, upstream_name=name)
                reg.create_repository(name, remote=f"up-{i:02d}")
            start = time.perf_counter()
            results = reg.sync_all(concurrency=args.concurrency, **extra)
            wall = time.perf_counter() - start
            bad = {n: r for n, r in results.items() if not isinstance(r, SyncResult) or not r.ok}
            if bad:
                raise RuntimeError(f"{label(destination)}: sync failed: {list(bad.items())[:2]}")
            blobs = sum(r.blobs_downloaded for r in results.values() if isinstance(r, SyncResult))
            for name in repos:
                want = {t: d for (n, t), d in truth.items() if n == name}
                if reg.repository(name).tags() != want:
                    raise RuntimeError(f"{label(destination)}: {name} differs from the upstream")
        finally:
            reg.close()
    shutil.rmtree(home, ignore_errors=True)
    return {"wall": wall, "blobs_downloaded": blobs}


def store_alone(
    storage: str, work: Path, s3: S3Server, blobs: dict[Digest, bytes], concurrency: int
) -> dict[str, Any]:
    """What a sync asks of the blob store, alone: a put of every blob, after a stat on local
    files (not on S3: see ``ocimirror.sync._Job._unrecorded``), with the sync's concurrency,
    into fresh ``storage``; its wall time."""
    home = work / f"store-{uuid.uuid4().hex[:8]}"
    look = storage == "files"

    async def put_all(store: Any) -> float:
        limit = asyncio.Semaphore(concurrency)

        async def one(digest: Digest, data: bytes) -> None:
            async with limit:
                if not look or await store.stat(digest) is None:
                    await store.put(data, expected=digest, size=len(data))

        start = time.perf_counter()
        await asyncio.gather(*(one(digest, data) for digest, data in blobs.items()))
        return time.perf_counter() - start

    async def run(url: str, options: dict[str, Any]) -> float:
        async with open_blob_store(url, **options) as store:
            return await put_all(store)

    with fresh_storage(storage, home, s3) as (url, options):
        wall = asyncio.run(run(url, options))
    shutil.rmtree(home, ignore_errors=True)
    return {"wall": wall, "blobs_downloaded": len(blobs)}


# -- the run ---------------------------------------------------------------------------------


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    walls = {key: [r[key]["wall"] for r in rounds] for key in rounds[0]}
    medians = {key: statistics.median(values) for key, values in walls.items()}
    ratios = []
    for top, bottom, target in RATIOS:
        ratio = medians["/".join(top)] / medians["/".join(bottom)]
        ratios.append(
            {
                "of": label(top),
                "to": label(bottom),
                "ratio": ratio,
                "target": target,
                "met": ratio <= target,
            }
        )
    return {"walls": walls, "medians": medians, "ratios": ratios}


def report(figures: dict[str, Any]) -> None:
    c, s = figures["corpus"], figures["summary"]
    print()
    print(
        f"corpus: {c['images']} images in {c['repos']} repositories, {c['distinct_blobs']} "
        f"distinct blobs (a config and a {c['layer_size'] // KiB} KiB layer each, one "
        f"{c['base_size'] // KiB} KiB base layer); pushed in {c['push_seconds']:.1f}s"
    )
    workers = "" if figures["workers"] is None else f", workers={figures['workers']}"
    print(
        f"machine: {figures['cpus']} CPUs; sync_all(concurrency={figures['concurrency']}"
        f"{workers}); median of {len(figures['rounds'])} rounds, fresh destinations each; "
        f"moto served by {figures['moto']}"
    )
    base = s["medians"]["sqlite/files"]
    rows = []
    for key, median in s["medians"].items():
        database, storage = key.split("/")
        rows.append(
            (
                label((database, storage)),
                f"{median:.2f} s",
                "" if database == "store" else f"{median / base:.2f}x",
                ", ".join(f"{w:.2f}" for w in s["walls"][key]),
            )
        )
    print_table(("destination", "wall", "vs SQLite + files", "rounds (s)"), rows)
    rows = [
        (
            f"{r['of']} / {r['to']}",
            f"{r['ratio']:.2f}x",
            f"<= {r['target']:.1f}x",
            "ok" if r["met"] else "MISSED",
        )
        for r in s["ratios"]
    ]
    print_table(("ratio", "measured", "target", ""), rows)
    print()
    print(f"command: {figures['command']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images in the corpus")
    parser.add_argument("--repos", type=int, default=1, help="repositories they spread over")
    parser.add_argument("--layer-size", type=int, default=4 * KiB, help="each image's own layer")
    parser.add_argument("--base-size", type=int, default=64 * KiB, help="the shared base layer")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the table has medians")
    parser.add_argument("--concurrency", type=int, default=32, help="sync_all's concurrency")
    parser.add_argument(
        "--workers", type=int, help="sync_all's worker loops (default: the library's)"
    )
    parser.add_argument(
        "--moto",
        choices=MOTO_SERVERS,
        default="werkzeug",
        help="how moto is served: moto's own server (a new connection per request) or its "
        "WSGI app under granian (keep-alive, as S3)",
    )
    parser.add_argument(
        "--before", action="store_true", help="also measure the threaded S3 path (the before)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="where the temporary directory goes")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="stop everything after this many seconds"
    )
    args = parser.parse_args()
    compile_package()
    if args.images < args.repos or args.repos < 1 or args.repeat < 1:
        parser.error("--images must be >= --repos >= 1, and --repeat >= 1")

    start_deadline(args.timeout)

    destinations = DESTINATIONS + (BEFORE if args.before else [])
    figures: dict[str, Any] = {
        "command": command_line(__file__),
        "cpus": os.cpu_count(),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "moto": args.moto,
    }
    work = Path(tempfile.mkdtemp(prefix="ocimirror-s3-bench-", dir=args.workdir))
    log(f"work directory {work}")
    try:
        with run_registry(work / "upstream") as upstream, moto_server(args.moto) as s3:
            log(
                f"upstream docker-registry at {upstream.url}, "
                f"moto ({args.moto}) at {s3.endpoint_url}"
            )
            start = time.perf_counter()
            truth, blobs = push_corpus(
                upstream, args.images, args.repos, args.layer_size, args.base_size, workers=8
            )
            figures["corpus"] = {
                "images": args.images,
                "repos": args.repos,
                "layer_size": args.layer_size,
                "base_size": args.base_size,
                "distinct_blobs": len(blobs),
                "push_seconds": time.perf_counter() - start,
            }
            log(f"pushed {len(truth)} images in {figures['corpus']['push_seconds']:.1f}s")
            rounds = []
            for r in range(args.repeat):
                shift = r % len(destinations)
                measured: dict[str, dict[str, Any]] = {}
                for destination in destinations[shift:] + destinations[:shift]:
                    if destination[0] == "store":
                        got = store_alone(destination[1], work, s3, blobs, args.concurrency)
                    else:
                        got = sync_into(destination, work, s3, upstream, truth, args)
                    if got["blobs_downloaded"] != figures["corpus"]["distinct_blobs"]:
                        raise RuntimeError(f"{label(destination)} downloaded {got}")
                    measured["/".join(destination)] = got
                    log(f"round {r}: {label(destination)}: {got['wall']:.2f}s")
                rounds.append({"/".join(d): measured["/".join(d)] for d in destinations})
            figures["rounds"] = rounds
    except BaseException:
        signal.alarm(0)
        traceback.print_exc()
        shutil.rmtree(work, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # an interrupted sync may still hold the loop thread: do not wait for it
    signal.alarm(0)
    shutil.rmtree(work, ignore_errors=True)

    figures["summary"] = summarize(figures["rounds"])
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
