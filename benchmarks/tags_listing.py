"""How fast is listing tags with 100,000 of them, in any version?

Creates a repository whose version 1 holds 100,000 tags and version 2 moves 1,000 of them,
then times: creating each version, listing every tag of version 1 and of version 2, and
paging through the latest with n=100. Run over SQLite (default) or PostgreSQL::

    .venv/bin/python benchmarks/tags_listing.py [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ocimirror
from ocimirror.testing import random_image


def timed(label: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    print(f"{label:48} {time.perf_counter() - start:8.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--tags", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ocimirror-bench-"))
    with ocimirror.open(
        home=work, database_url=args.database_url, storage_url=(work / "blobs").as_uri()
    ) as reg:
        a, b = random_image(seed="bench-a"), random_image(seed="bench-b")
        for image in (a, b):
            for blob in image.blobs():
                reg.put_blob(blob.data, expected=blob.digest)
            reg.put_manifest(image.manifest, image.media_type, expected=image.digest)
        repo = reg.create_repository(f"bench-{work.name[-6:]}")
        names = [f"tag-{i:06d}" for i in range(args.tags)]
        timed(f"version 1: add {args.tags} tags", repo.add, tags=dict.fromkeys(names, a.digest))
        moved = dict.fromkeys(names[::100], b.digest)
        timed(f"version 2: move {len(moved)} tags", repo.add, tags=moved)
        tags1 = timed("list all tags of version 1", repo.tags, 1)
        tags2 = timed("list all tags of version 2", repo.tags, 2)
        assert len(tags1) == len(tags2) == args.tags

        def page_through() -> int:
            last, pages = None, 0
            while page := repo.tags(2, last=last, n=100):
                last, pages = next(reversed(page)), pages + 1
            return pages

        pages = timed("page through version 2, n=100", page_through)
        timed("one page (n=100) deep in version 2", repo.tags, 2, last=names[-500], n=100)
        print(f"pages: {pages}")


if __name__ == "__main__":
    main()
