"""OCI image layouts in and out of repositories, over every blob backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ocimirror
from ocimirror.errors import DigestMismatch, InvalidLayout
from ocimirror.layout import LayoutReader
from ocimirror.testing import artifact, random_image, random_index, write_layout

ROOT = Path(__file__).resolve().parent.parent


def sample(path: Path, *, tar: bool = False) -> dict[str, str]:
    """Write a layout with shared base layers, a multi-arch index, an artifact and an
    untagged image; return its ref names -> digests."""
    base = random_image(seed="base", layers=1).layers
    app = random_image(seed="app", base=base, layers=2)
    entries: list[tuple[str | None, Any]] = [
        ("app", app),
        ("tools", random_image(seed="tools", base=base, docker=True)),
        ("multi", random_index(seed="multi")),
        ("app-sbom", artifact(app)),
        (None, random_image(seed="loose")),
    ]
    write_layout(path, entries, tar=tar)
    with LayoutReader.open(path) as reader:
        return {r.name or str(r.digest): str(r.digest) for r in reader.refs()}


def refs(path: Path) -> dict[str, str]:
    with LayoutReader.open(path) as reader:
        return {r.name or str(r.digest): str(r.digest) for r in reader.refs()}


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_a_layout_round_trips_with_identical_digests(
    storage: tuple[str, dict[str, Any]], tmp_path: Path, tar: bool
) -> None:
    url, options = storage
    source = tmp_path / ("in.tar" if tar else "in")
    want = sample(source, tar=tar)
    with ocimirror.open(
        database_url=f"sqlite:///{tmp_path / 'm.db'}", storage_url=url, storage_options=options
    ) as reg:
        repo = reg.create_repository("foo")
        v1 = repo.import_layout(source)
        assert v1.content_summary.present["container.tag"] == 4
        assert reg.repair().ok
        out = tmp_path / ("out.tar" if tar else "out")
        report = repo.export_layout(out, tar=tar)
        assert report.tags.keys() == {"app", "tools", "multi", "app-sbom"}
    assert refs(out) == want


def test_the_example_runs_on_postgres_and_s3_by_changing_only_the_urls(
    postgres_url: str, s3_storage: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, options = s3_storage
    env = dict(os.environ)
    env.update(
        OCIMIRROR_DATABASE_URL=postgres_url,
        OCIMIRROR_STORAGE_URL=url,
        FSSPEC_S3_ENDPOINT_URL=options["client_kwargs"]["endpoint_url"],
        FSSPEC_S3_KEY=options["key"],
        FSSPEC_S3_SECRET=options["secret"],
        OCIMIRROR_HOME=str(tmp_path / "home"),
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "layout_roundtrip.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "every digest matches" in done.stdout
    assert postgres_url.rsplit("/", 1)[-1] in done.stdout  # it really used PostgreSQL
    assert not (tmp_path / "home" / "metadata.db").exists()


def test_the_example_runs_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCIMIRROR_")}
    env["OCIMIRROR_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "layout_roundtrip.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "every digest matches" in done.stdout
    assert (tmp_path / "home" / "metadata.db").exists()


def test_importing_some_tags_only(registry: ocimirror.Registry, tmp_path: Path) -> None:
    want = sample(tmp_path / "in")
    repo = registry.create_repository("foo")
    repo.import_layout(tmp_path / "in", tags=["multi"])
    assert repo.tags() == {"multi": want["multi"]}
    with pytest.raises(InvalidLayout):
        repo.import_layout(tmp_path / "in", tags=["nope"])


def test_a_corrupt_layer_in_a_layout_is_never_stored(
    registry: ocimirror.Registry, tmp_path: Path
) -> None:
    image = random_image(seed="victim", layers=2, layer_size=4096)
    write_layout(tmp_path / "in", {"victim": image})
    layer = image.layers[1]
    blob = tmp_path / "in" / "blobs" / "sha256" / layer.digest.hex
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    repo = registry.create_repository("foo")
    with pytest.raises(DigestMismatch):
        repo.import_layout(tmp_path / "in")
    assert repo.latest_version().number == 0
    assert not registry._portal.call(registry.aio.has_blob(layer.digest))
    assert not registry._portal.call(registry.aio.blobs.exists(layer.digest))


def test_exporting_a_missing_tag_is_an_error(registry: ocimirror.Registry, tmp_path: Path) -> None:
    sample(tmp_path / "in")
    repo = registry.create_repository("foo")
    repo.import_layout(tmp_path / "in")
    with pytest.raises(InvalidLayout):
        repo.export_layout(tmp_path / "out", tags=["nope"])
    repo.export_layout(tmp_path / "out", tags=["app"], version=1)
    assert list(refs(tmp_path / "out")) == ["app"]
