"""Import an OCI layout, untag, copy tags to a second repository, export it back.

Runs on the embedded default (SQLite + files in a temporary home). To run the same steps on
PostgreSQL and S3, change only the two URLs::

    OCIMIRROR_DATABASE_URL=postgresql://user@host/db \\
    OCIMIRROR_STORAGE_URL=s3://bucket/prefix python examples/layout_roundtrip.py

(S3 credentials and endpoint come from the usual AWS variables, or pass storage_options.)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import ocimirror
from ocimirror.layout import LayoutReader
from ocimirror.testing import random_image, random_index, write_layout


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="ocimirror-example-"))
    source = work / "input-layout"
    base = random_image(seed="base", layers=1).layers
    write_layout(
        source,
        {
            "app": random_image(seed="app", base=base, layers=2),
            "tools": random_image(seed="tools", base=base, layers=1),
            "multi": random_index(seed="multi"),
        },
    )
    home = os.environ.get("OCIMIRROR_HOME") or str(work / "home")
    with ocimirror.open(home=home) as registry:
        print(f"registry: {registry!r}")
        repo = registry.create_repository(f"example-{work.name[-8:]}")

        v1 = repo.import_layout(source)
        print(v1)
        v2 = repo.untag("tools")
        print(v2)

        copy = registry.create_repository(f"{repo.name}-copy")
        copied = copy.copy_tags(v1)
        print(copied)

        out = work / "output-layout.tar"
        copy.export_layout(out, tar=True)

    with LayoutReader.open(source) as before, LayoutReader.open(out) as after:
        want = {r.name: str(r.digest) for r in before.refs()}
        got = {r.name: str(r.digest) for r in after.refs()}
    print(json.dumps({"input": want, "exported": got}, indent=2))
    if want != got:
        print("digests differ", file=sys.stderr)
        return 1
    print(f"exported {out}: every digest matches the input layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
