"""A writer killed with SIGKILL while creating a version leaves the last complete version intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ocimirror

WRITER = textwrap.dedent(
    """
    import sys
    import ocimirror
    from ocimirror.testing import random_image

    db, storage, marker = sys.argv[1:4]
    with ocimirror.open(database_url=db, storage_url=storage) as reg:
        image = random_image(seed="crash")
        for blob in image.blobs():
            reg.put_blob(blob.data, expected=blob.digest)
        reg.put_manifest(image.manifest, image.media_type, expected=image.digest)
        repo = reg.create_repository("victim")
        open(marker, "w").close()
        n = 0
        while True:  # each version adds a large batch of tags: killed somewhere inside one
            n += 1
            repo.add(tags={f"v{n}-{i}": str(image.digest) for i in range(1500)})
    """
)


def test_sigkill_while_creating_a_version_leaves_complete_versions_only(
    database_url: str, tmp_path: Path
) -> None:
    storage = (tmp_path / "blobs").as_uri()
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, database_url, storage, str(marker)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.05)
        # Let it publish at least one version and get well into the next.
        with ocimirror.open(database_url=database_url, storage_url=storage) as reg:
            while reg.repository("victim").latest_version().number < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    with ocimirror.open(database_url=database_url, storage_url=storage) as reg:
        repo = reg.repository("victim")
        versions = repo.versions()
        latest = versions[0]
        assert latest.number >= 1
        # Every listed version is whole: its tags are exactly what its summary says.
        for version in versions:
            assert len(repo.tags(version)) == version.content_summary.present.get(
                "container.tag", 0
            )
            assert len(repo.tags(version)) == 1500 * version.number
        # And the repository takes the next version as if nothing happened.
        image_digest = next(iter(repo.tags(latest).values()))
        nxt = repo.tag("after-crash", image_digest)
        assert nxt.number == latest.number + 1
