"""Deterministic random images for tests and benchmarks, like go-containerregistry's ``random``.

Everything here is a pure function of its seed (seeds are used through ``str()``, so ``0`` and
``"0"`` are the same seed): the same call gives byte-identical manifests, configs and layers,
on every machine. Layers are real gzip'ed tar files, configs are real image configs whose
``rootfs.diff_ids`` match the layers, and manifests are the exact bytes a registry receives::

    base = random_image(seed="base", layers=1).layers
    app = random_image(seed="app", base=base, platform="linux/arm64/v8")
    multi = random_index(seed="multi", platforms=("linux/amd64", "linux/s390x"))
    write_layout(tmp_path / "layout", {"app": app, "multi": multi}, tar=False)
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import attrs

from ocimirror.core.digest import Digest
from ocimirror.errors import InvalidManifest, InvalidPlatform
from ocimirror.layout import LayoutWriter

__all__ = [
    "CREATED",
    "Blob",
    "Image",
    "Index",
    "artifact",
    "free_port",
    "random_image",
    "random_index",
    "random_layer",
    "serving",
    "write_image",
    "write_layout",
]

_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_OCI_EMPTY = "application/vnd.oci.empty.v1+json"
_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: The creation time written into every generated config and artifact (fixed, for determinism).
CREATED: Final = "2024-01-01T00:00:00Z"
_CREATED_EPOCH = 1704067200
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _bytes_repr(data: bytes) -> str:
    return f"<{len(data)} bytes>"


@attrs.frozen
class Blob:
    """A blob (layer, config or payload) with its media type; digest and size derive from it."""

    media_type: str
    data: bytes = attrs.field(repr=_bytes_repr)
    _digest: Digest = attrs.field(init=False, repr=False, eq=False)

    @_digest.default
    def _compute_digest(self) -> Digest:
        return Digest.of(self.data)

    @property
    def digest(self) -> Digest:
        """The sha256 digest of the data."""
        return self._digest

    @property
    def size(self) -> int:
        """The size of the data in bytes."""
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """An OCI descriptor (``mediaType``, ``digest``, ``size``) plus ``extra`` fields."""
        return {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
            **extra,
        }


@attrs.frozen
class Image:
    """A generated image: its manifest bytes, media type, config blob and layer blobs."""

    manifest: bytes = attrs.field(repr=False)
    media_type: str
    config: Blob
    layers: tuple[Blob, ...]
    #: The platform put in descriptors of this image (``None``: no platform field).
    platform: dict[str, str] | None = attrs.field(default=None, hash=False)
    _digest: Digest = attrs.field(init=False, repr=False, eq=False)

    @_digest.default
    def _compute_digest(self) -> Digest:
        return Digest.of(self.manifest)

    @property
    def digest(self) -> Digest:
        """The digest of the manifest bytes."""
        return self._digest

    @property
    def size(self) -> int:
        """The size of the manifest in bytes."""
        return len(self.manifest)

    def blobs(self) -> list[Blob]:
        """The config, then the layers."""
        return [self.config, *self.layers]

    def images(self) -> list[Image]:
        """Just this image (so that images and indexes can be walked alike)."""
        return [self]

    def manifests(self) -> list[Image | Index]:
        """Just this image (so that images and indexes can be walked alike)."""
        return [self]

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """The manifest's descriptor, with ``platform`` if the image has one, plus ``extra``."""
        desc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.platform is not None:
            desc["platform"] = dict(self.platform)
        desc.update(extra)
        return desc


@attrs.frozen
class Index:
    """A generated image index (or Docker manifest list) and the manifests it lists."""

    manifest: bytes = attrs.field(repr=False)
    media_type: str
    children: tuple[Image | Index, ...]
    _digest: Digest = attrs.field(init=False, repr=False, eq=False)

    @_digest.default
    def _compute_digest(self) -> Digest:
        return Digest.of(self.manifest)

    @property
    def digest(self) -> Digest:
        """The digest of the index bytes."""
        return self._digest

    @property
    def size(self) -> int:
        """The size of the index in bytes."""
        return len(self.manifest)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """The index's descriptor (``mediaType``, ``digest``, ``size``) plus ``extra``."""
        return {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
            **extra,
        }

    def images(self) -> list[Image]:
        """Every image underneath, depth first, each once."""
        seen: dict[Digest, Image] = {}
        for child in self.children:
            for image in child.images():
                seen.setdefault(image.digest, image)
        return list(seen.values())

    def blobs(self) -> list[Blob]:
        """Every config and layer underneath, each once."""
        seen: dict[Digest, Blob] = {}
        for image in self.images():
            for blob in image.blobs():
                seen.setdefault(blob.digest, blob)
        return list(seen.values())

    def manifests(self) -> list[Image | Index]:
        """Every manifest underneath, children before their parent, this index last."""
        seen: dict[Digest, Image | Index] = {}
        for child in self.children:
            for manifest in child.manifests():
                seen.setdefault(manifest.digest, manifest)
        seen.setdefault(self.digest, self)
        return list(seen.values())


def _gzip_stored(data: bytes) -> bytes:
    """A gzip member of ``data`` in stored (uncompressed) deflate blocks.

    zlib's compressed output differs between zlib builds (zlib, zlib-ng); stored blocks do
    not, and random data would not compress anyway.
    """
    out = bytearray(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # no name, mtime 0, OS unknown
    view = memoryview(data)
    pos = 0
    while True:
        block = view[pos : pos + 0xFFFF]
        pos += len(block)
        final = pos >= len(data)
        out.append(1 if final else 0)  # BFINAL, BTYPE=00 (stored)
        out += struct.pack("<HH", len(block), len(block) ^ 0xFFFF)
        out += block
        if final:
            break
    out += struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return bytes(out)


def _is_gzip(media_type: str) -> bool:
    return media_type.endswith(("+gzip", ".gzip"))


def _diff_id(layer: Blob) -> Digest:
    """The digest of a layer's uncompressed tar, as a config's ``rootfs.diff_ids`` lists it."""
    if _is_gzip(layer.media_type):
        return Digest.of(gzip.decompress(layer.data))
    if layer.media_type.endswith(("+zstd", ".zstd")):
        raise ValueError(f"cannot compute the diff_id of a {layer.media_type} layer")
    return Digest.of(layer.data)


def random_layer(size: int, *, seed: int | str, media_type: str = _OCI_LAYER_GZIP) -> Blob:
    """A tar with one file of ``size`` random bytes, gzip'ed if ``media_type`` says so."""
    if size < 0:
        raise ValueError(f"a layer size must not be negative, got {size}")
    rng = random.Random(f"ocimirror.testing/layer/{seed}")
    info = tarfile.TarInfo(f"random/{rng.getrandbits(64):016x}.bin")
    info.size = size
    info.mode = 0o644
    info.mtime = _CREATED_EPOCH
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        archive.addfile(info, io.BytesIO(rng.randbytes(size)))
    tar = buffer.getvalue()
    return Blob(media_type, _gzip_stored(tar) if _is_gzip(media_type) else tar)


def _parse_platform(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise InvalidPlatform(f"platform {platform!r} is not os/architecture[/variant]")
    result = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        result["variant"] = parts[2]
    return result


def random_image(
    *,
    seed: int | str = 0,
    layers: int = 2,
    layer_size: int = 1024,
    base: Sequence[Blob] = (),
    platform: str | None = None,
    docker: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """An image of the ``base`` layers then ``layers`` random ones of ``layer_size`` bytes.

    ``platform`` (``os/arch[/variant]``) goes in the config and in the image's descriptor;
    without it the config says linux/amd64 and the descriptor has no platform. ``docker``
    gives Docker schema 2 media types (which have no ``annotations``).
    """
    if layers < 0:
        raise ValueError(f"the number of layers must not be negative, got {layers}")
    platform_fields = _parse_platform(platform) if platform is not None else None
    layer_type = _DOCKER_LAYER_GZIP if docker else _OCI_LAYER_GZIP
    all_layers = (
        *base,
        *(
            random_layer(layer_size, seed=f"{seed}/layer/{i}", media_type=layer_type)
            for i in range(layers)
        ),
    )
    config_json: dict[str, Any] = {
        "created": CREATED,
        **(platform_fields or {"architecture": "amd64", "os": "linux"}),
        "config": {
            "Env": [_PATH],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.opencontainers.image.description": f"random image {seed}"},
        },
        "rootfs": {"type": "layers", "diff_ids": [str(_diff_id(layer)) for layer in all_layers]},
        "history": [
            {"created": CREATED, "created_by": f"ocimirror.testing layer {layer.digest.short}"}
            for layer in all_layers
        ],
    }
    config = Blob(_DOCKER_CONFIG if docker else _OCI_CONFIG, _dumps(config_json))
    media_type = _DOCKER_MANIFEST if docker else _OCI_MANIFEST
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in all_layers],
    }
    if annotations:
        if docker:
            raise InvalidManifest("Docker schema 2 manifests have no annotations: use docker=False")
        manifest["annotations"] = dict(annotations)
    return Image(_dumps(manifest), media_type, config, all_layers, platform_fields)


def random_index(
    *,
    seed: int | str = 0,
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64/v8"),
    docker: bool = False,
    layers: int = 1,
    layer_size: int = 1024,
    annotations: Mapping[str, str] | None = None,
) -> Index:
    """An index (a Docker manifest list with ``docker``) of one random image per platform."""
    children = tuple(
        random_image(
            seed=f"{seed}/{platform}",
            layers=layers,
            layer_size=layer_size,
            platform=platform,
            docker=docker,
        )
        for platform in platforms
    )
    media_type = _DOCKER_MANIFEST_LIST if docker else _OCI_INDEX
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [child.descriptor() for child in children],
    }
    if annotations:
        if docker:
            raise InvalidManifest("Docker manifest lists have no annotations: use docker=False")
        index["annotations"] = dict(annotations)
    return Index(_dumps(index), media_type, children)


def artifact(
    subject: Image | Index,
    *,
    artifact_type: str = "application/vnd.example.sbom",
    payload: bytes = b"{}",
    payload_media_type: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """An OCI 1.1 artifact manifest referring to ``subject`` (what the referrers API lists).

    Its config is the OCI empty blob, its one layer is ``payload`` (typed
    ``payload_media_type``, by default ``artifact_type``).
    """
    config = Blob(_OCI_EMPTY, b"{}")
    layer = Blob(payload_media_type or artifact_type, payload)
    manifest = {
        "schemaVersion": 2,
        "mediaType": _OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "subject": {
            "mediaType": subject.media_type,
            "digest": str(subject.digest),
            "size": subject.size,
        },
        "annotations": {"org.opencontainers.image.created": CREATED, **(annotations or {})},
    }
    return Image(_dumps(manifest), _OCI_MANIFEST, config, (layer,))


def write_image(writer: LayoutWriter, image: Image | Index) -> None:
    """Write every blob and manifest of ``image`` (an image or an index) into ``writer``."""
    blobs = image.blobs()
    manifests = image.manifests()
    for blob in [*blobs, *manifests]:
        data = blob.data if isinstance(blob, Blob) else blob.manifest
        writer.write_blob(blob.digest, data, size=len(data))


def write_layout(
    path: str | os.PathLike[str],
    tagged: Mapping[str, Image | Index] | Sequence[tuple[str | None, Image | Index]],
    *,
    tar: bool = False,
) -> None:
    """Write an OCI image layout holding ``tagged``, each entry named by its tag (or unnamed).

    ``tagged`` is a mapping of tag to image, or ``(tag or None, image)`` pairs in order.
    """
    entries = list(tagged.items()) if isinstance(tagged, Mapping) else list(tagged)
    with LayoutWriter(path, tar=tar) as writer:
        for name, image in entries:
            write_image(writer, image)
            writer.add_ref(image.descriptor(), name)


def free_port(preferred: int | None = None) -> int:
    """A free TCP port on 127.0.0.1: ``preferred`` when it can be bound, else any."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            s.bind(("127.0.0.1", preferred or 0))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(
    home: str | os.PathLike[str],
    *,
    port: int | None = None,
    timeout: float = 30.0,
    auth: bool = True,
    args: Sequence[str] = (),
) -> Iterator[str]:
    """Run ``ocimirror --home HOME serve`` in a subprocess; yield ``127.0.0.1:PORT`` once
    ``/v2/`` answers (200, or 401 with token auth on), and stop the server (its whole process
    group) on exit. ``auth=False`` serves with ``--no-auth``; ``args`` go to ``serve``."""
    import httpx

    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ocimirror",
            "--home",
            os.fspath(home),
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *([] if auth else ["--no-auth"]),
            *args,
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ocimirror serve exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ocimirror serve did not answer on port {port}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
