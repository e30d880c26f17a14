"""Signatures, cosign companions and referrers: synced, served, verified (issue 10).

The upstream is Debian's docker-registry; atomic signatures are made by ``skopeo
standalone-sign`` with throwaway GPG keys and live in a lookaside sigstore served over HTTP on
loopback; cosign signatures are made with ``cryptography`` as cosign makes them. skopeo then
pulls from ocimirror under a ``signedBy`` policy, reading the signatures through the Docker
signature API extension that ocimirror serves.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.clients import Tool
from fixtures.registry import Registry
from fixtures.signing import CosignKey, GPGKey

import ocimirror
from ocimirror.remote import SyncPolicy
from ocimirror.signatures.cosign import companion_tag
from ocimirror.testing import Image, artifact, random_image, random_index, serving


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sigstore(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A lookaside sigstore: a directory, and the URL that serves it on loopback."""
    root = tmp_path / "sigstore"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/sigs"
    finally:
        server.shutdown()
        server.server_close()


def host_of(registry: Registry) -> str:
    return registry.url.split("://", 1)[1]


def standalone_sign(
    skopeo: Tool, key: GPGKey, manifest: bytes, reference: str, tmp_path: Path
) -> bytes:
    """An atomic signature made by ``skopeo standalone-sign`` with ``key``."""
    manifest_file = tmp_path / "manifest.json"
    manifest_file.write_bytes(manifest)
    out = tmp_path / "signature"
    out.unlink(missing_ok=True)
    tool = Tool(skopeo.argv, env={**skopeo.env, "GNUPGHOME": str(key.home)})
    tool("standalone-sign", str(manifest_file), reference, key.fingerprint, "--output", str(out))
    return out.read_bytes()


def put_lookaside(root: Path, name: str, image: Image, index: int, signature: bytes) -> None:
    """Store a signature where the lookaside layout wants it (under ``/sigs``)."""
    folder = root / "sigs" / f"{name}@sha256={image.digest.hex}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"signature-{index}").write_bytes(signature)


@pytest.fixture
def signed_upstream(
    docker_registry: Registry,
    registry_name: str,
    skopeo: Tool,
    gpg_key: GPGKey,
    other_gpg_key: GPGKey,
    sigstore: tuple[Path, str],
    tmp_path: Path,
) -> dict[str, Any]:
    """v1 and v2 signed by ``gpg_key``, v3 by ``other_gpg_key``, v4 unsigned."""
    root, url = sigstore
    images = {t: random_image(seed=f"{registry_name}-{t}") for t in ("v1", "v2", "v3", "v4")}
    for tag, image in images.items():
        docker_registry.push(registry_name, image, tag)
    host = host_of(docker_registry)
    for tag, key in (("v1", gpg_key), ("v2", gpg_key), ("v3", other_gpg_key)):
        image = images[tag]
        reference = f"{host}/{registry_name}:{tag}"
        put_lookaside(
            root,
            registry_name,
            image,
            1,
            standalone_sign(skopeo, key, image.manifest, reference, tmp_path),
        )
    return {"registry": docker_registry, "name": registry_name, "images": images, "sigstore": url}


def mirror(reg: ocimirror.Registry, upstream: dict[str, Any], **remote: Any) -> Any:
    registry: Registry = upstream["registry"]
    reg.create_remote(name="up", url=registry.url, upstream_name=upstream["name"], **remote)
    return reg.create_repository("mirror/app", remote="up")


def policy_file(tmp_path: Path, key: GPGKey, served: str, upstream: dict[str, Any]) -> Path:
    """A containers-policy.json that wants ``key``'s signature on ``served/mirror/app``,
    signed for the upstream's name (``remapIdentity``, as a mirror's users set it up)."""
    host = host_of(upstream["registry"])
    path = tmp_path / "policy.json"
    path.write_text(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        f"{served}/mirror/app": [
                            {
                                "type": "signedBy",
                                "keyType": "GPGKeys",
                                "keyPath": str(key.public_key_file(tmp_path / "trusted.asc")),
                                "signedIdentity": {
                                    "type": "remapIdentity",
                                    "prefix": f"{served}/mirror/app",
                                    "signedPrefix": f"{host}/{upstream['name']}",
                                },
                            }
                        ]
                    },
                    "dir": {"": [{"type": "insecureAcceptAnything"}]},
                },
            }
        )
    )
    return path


# -- atomic signatures ---------------------------------------------------------------------------


def test_lookaside_signatures_are_mirrored_and_counted(
    tmp_path: Path, signed_upstream: dict[str, Any]
) -> None:
    with ocimirror.open(home=tmp_path / "home") as reg:
        repo = mirror(
            reg, signed_upstream, sigstore=signed_upstream["sigstore"], include_tags=["v1", "v2"]
        )
        result = repo.sync()
        assert result.status == "complete"
        assert result.version.content_summary.present["container.signature"] == 2
        # A re-sync asks only for signature-2 of each manifest (404): nothing new.
        again = repo.sync()
        assert not again.created
        assert again.requests["signature"] == 2
        # A new signature upstream arrives with the next sync.
        root = tmp_path / "sigstore"
        image = signed_upstream["images"]["v1"]
        first = root / "sigs" / f"{signed_upstream['name']}@sha256={image.digest.hex}"
        (first / "signature-2").write_bytes((first / "signature-1").read_bytes() + b"")
        third = repo.sync()
        # The same bytes under another index are the same signature: nothing new.
        assert not third.created
        assert third.version.content_summary.present["container.signature"] == 2


def test_a_mirror_sync_removes_signatures_with_their_manifest(
    tmp_path: Path, signed_upstream: dict[str, Any]
) -> None:
    up = signed_upstream
    with ocimirror.open(home=tmp_path / "home") as reg:
        repo = mirror(reg, up, sigstore=up["sigstore"], include_tags=["v1", "v2"])
        repo.sync()
        up["registry"].delete_manifest(up["name"], up["images"]["v2"].digest)
        result = repo.sync(mirror=True)
        assert set(repo.tags()) == {"v1"}
        summary = result.version.content_summary
        assert summary.present["container.signature"] == 1
        assert summary.removed["container.signature"] == 1


def test_a_sigstore_on_local_disk_is_read_too(
    tmp_path: Path, signed_upstream: dict[str, Any]
) -> None:
    up = signed_upstream
    local = (tmp_path / "sigstore" / "sigs").as_uri()
    with ocimirror.open(home=tmp_path / "home") as reg:
        repo = mirror(reg, up, sigstore=local, include_tags=["v1", "v3", "v4"])
        result = repo.sync()
        assert result.version.content_summary.present["container.signature"] == 2
        assert result.requests["signature"] == 0  # files, not requests


def test_skopeo_accepts_signed_images_from_the_mirror_and_refuses_the_others(
    tmp_path: Path, signed_upstream: dict[str, Any], skopeo: Tool, gpg_key: GPGKey
) -> None:
    home = tmp_path / "home"
    with ocimirror.open(home=home) as reg:
        repo = mirror(reg, signed_upstream, sigstore=signed_upstream["sigstore"])
        result = repo.sync()
        assert result.version.content_summary.present["container.signature"] == 3
        reg.create_distribution("app", base_path="mirror/app", repository="mirror/app")
    with serving(home, auth=False) as served:
        assert httpx.get(f"http://{served}/v2/").headers["x-registry-supports-signatures"] == "1"
        policy = policy_file(tmp_path, gpg_key, served, signed_upstream)
        registries_d = tmp_path / "registries.d"  # no lookaside: the API extension is used
        registries_d.mkdir()

        def pull(tag: str) -> Any:
            return skopeo.run(
                "--policy",
                str(policy),
                "--registries.d",
                str(registries_d),
                "copy",
                "--src-tls-verify=false",
                f"docker://{served}/mirror/app:{tag}",
                f"dir:{tmp_path / ('pulled-' + tag)}",
            )

        for tag in ("v1", "v2"):
            done = pull(tag)
            assert done.returncode == 0, done.stderr
        for tag in ("v3", "v4"):  # another key's signature; no signature at all
            done = pull(tag)
            assert done.returncode != 0
            assert "signature" in done.stderr.lower(), done.stderr


def test_trusted_gpg_keys_keep_only_images_signed_by_them(
    tmp_path: Path, signed_upstream: dict[str, Any], gpg_key: GPGKey
) -> None:
    with ocimirror.open(home=tmp_path / "home") as reg:
        repo = mirror(reg, signed_upstream, sigstore=signed_upstream["sigstore"])
        result = repo.sync(policy=SyncPolicy(trusted_gpg_keys=[gpg_key.public_key_armored()]))
        assert set(repo.tags()) == {"v1", "v2"}
        dropped = {d["tag"]: d["reason"] for d in result.dropped}
        assert set(dropped) == {"v3", "v4"}
        assert "not trusted" in dropped["v3"] and gpg_key.fingerprint not in dropped["v3"]
        assert "no signature" in dropped["v4"]
        assert result.status == "partial"


def test_a_signature_for_another_repository_does_not_vouch_for_this_one(
    tmp_path: Path,
    docker_registry: Registry,
    registry_name: str,
    skopeo: Tool,
    gpg_key: GPGKey,
    sigstore: tuple[Path, str],
) -> None:
    root, url = sigstore
    image = random_image(seed=f"{registry_name}-elsewhere")
    docker_registry.push(registry_name, image, "v1")
    elsewhere = f"{host_of(docker_registry)}/some/other:v1"
    put_lookaside(
        root,
        registry_name,
        image,
        1,
        standalone_sign(skopeo, gpg_key, image.manifest, elsewhere, tmp_path),
    )
    upstream = {"registry": docker_registry, "name": registry_name}
    with ocimirror.open(home=tmp_path / "home") as reg:
        repo = mirror(reg, upstream, sigstore=url, trusted_gpg_keys=[gpg_key.public_key_armored()])
        result = repo.sync()
        assert repo.tags() == {}
        (reason,) = [d["reason"] for d in result.dropped]
        assert "some/other" in reason


def test_signed_only_skips_unsigned_images(tmp_path: Path, signed_upstream: dict[str, Any]) -> None:
    with ocimirror.open(home=tmp_path / "home") as reg:
        repo = mirror(reg, signed_upstream, sigstore=signed_upstream["sigstore"])
        result = repo.sync(policy=SyncPolicy(signed_only=True))
        assert set(repo.tags()) == {"v1", "v2", "v3"}
        assert [s["tag"] for s in result.skipped] == ["v4"]


def test_the_signature_api_extension_of_an_upstream_is_synced(
    tmp_path: Path, signed_upstream: dict[str, Any]
) -> None:
    """A second ocimirror mirrors the first, which serves the extension (no sigstore)."""
    first = tmp_path / "first"
    with ocimirror.open(home=first) as reg:
        mirror(reg, signed_upstream, sigstore=signed_upstream["sigstore"]).sync()
        reg.create_distribution("app", base_path="mirror/app", repository="mirror/app")
    with serving(first, auth=False) as served, ocimirror.open(home=tmp_path / "second") as reg:
        upstream = {"registry": Registry(f"http://{served}"), "name": "mirror/app"}
        repo = mirror(reg, upstream)
        result = repo.sync()
        assert result.version.content_summary.present["container.signature"] == 3
        assert result.requests["signature"] == 4  # one GET per manifest
        again = repo.sync()
        assert not again.created


def test_a_push_may_add_signatures_and_a_mirror_refuses_them(
    tmp_path: Path, signed_upstream: dict[str, Any], skopeo: Tool, gpg_key: GPGKey
) -> None:
    home = tmp_path / "home"
    with ocimirror.open(home=home) as reg:
        mirror(reg, signed_upstream).sync()
        reg.create_distribution("app", base_path="mirror/app", repository="mirror/app")
    with serving(home, auth=False) as served:
        registries_d = tmp_path / "registries.d"
        registries_d.mkdir()
        signer = Tool(skopeo.argv, env={**skopeo.env, "GNUPGHOME": str(gpg_key.home)})
        source = f"docker://{host_of(signed_upstream['registry'])}/{signed_upstream['name']}:v1"
        # skopeo signs while pushing and PUTs the signature through the API extension.
        signer(
            "--registries.d",
            str(registries_d),
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--sign-by",
            gpg_key.fingerprint,
            source,
            f"docker://{served}/pushed/app:v1",
        )
        digest = str(signed_upstream["images"]["v1"].digest)
        body = httpx.get(f"http://{served}/extensions/v2/pushed/app/signatures/{digest}").json()
        (entry,) = body["signatures"]
        assert entry["type"] == "atomic" and entry["name"].startswith(f"{digest}@")
        assert base64.b64decode(entry["content"])
        # The mirror is read-only: the same PUT is refused, and nothing is added.
        refused = httpx.put(
            f"http://{served}/extensions/v2/mirror/app/signatures/{digest}", json=entry
        )
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["code"] == "DENIED"
        listed = httpx.get(f"http://{served}/extensions/v2/mirror/app/signatures/{digest}")
        assert listed.json() == {"signatures": []}
        # Malformed bodies are refused in the spec's format.
        bad = httpx.put(
            f"http://{served}/extensions/v2/pushed/app/signatures/{digest}", content=b"{nope"
        )
        assert bad.status_code == 400 and bad.json()["errors"]


# -- cosign and referrers --------------------------------------------------------------------------


def push_cosign(registry: Registry, name: str, image: Image, key: CosignKey, reference: str) -> str:
    manifest, blobs = key.signature_manifest(image.digest, reference)
    for data in blobs.values():
        registry.push_blob(name, data)
    tag = companion_tag(image.digest, ".sig")
    registry.push_manifest(name, tag, manifest, "application/vnd.oci.image.manifest.v1+json")
    return tag


@pytest.fixture
def cosigned_upstream(
    docker_registry: Registry,
    registry_name: str,
    cosign_key: CosignKey,
    other_cosign_key: CosignKey,
) -> dict[str, Any]:
    """1.0 cosigned by ``cosign_key`` with an SBOM (referrers tag schema); 2.0 cosigned by
    ``other_cosign_key``."""
    reg = docker_registry
    repository = f"{host_of(reg)}/{registry_name}"
    one = random_image(seed=f"{registry_name}-one")
    two = random_index(seed=f"{registry_name}-two")
    reg.push(registry_name, one, "1.0")
    reg.push(registry_name, two, "2.0")
    sig_one = push_cosign(reg, registry_name, one, cosign_key, repository)
    sig_two = push_cosign(reg, registry_name, two, other_cosign_key, repository)
    sbom = artifact(one, artifact_type="application/spdx+json", payload=b'{"spdxVersion":"2.3"}')
    reg.push(registry_name, sbom)
    schema = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [sbom.descriptor(artifactType="application/spdx+json")],
    }
    reg.push_manifest(
        registry_name,
        companion_tag(one.digest),
        json.dumps(schema).encode(),
        "application/vnd.oci.image.index.v1+json",
    )
    return {
        "registry": reg,
        "name": registry_name,
        "one": one,
        "two": two,
        "sbom": sbom,
        "sig_one": sig_one,
        "sig_two": sig_two,
    }


def test_a_filtered_sync_brings_its_tags_cosign_companion_and_referrers(
    tmp_path: Path, cosigned_upstream: dict[str, Any]
) -> None:
    up = cosigned_upstream
    home = tmp_path / "home"
    with ocimirror.open(home=home) as reg:
        repo = mirror(reg, up, include_tags=["1.0"])
        result = repo.sync()
        assert result.status == "complete"
        assert set(repo.tags()) == {"1.0", up["sig_one"], companion_tag(up["one"].digest)}
        reg.create_distribution("app", base_path="mirror/app", repository="mirror/app")
    with serving(home, auth=False) as served:
        index = httpx.get(f"http://{served}/v2/mirror/app/referrers/{up['one'].digest}").json()
        assert [m["digest"] for m in index["manifests"]] == [str(up["sbom"].digest)]
        assert index["manifests"][0]["artifactType"] == "application/spdx+json"


def test_companions_without_their_image_are_not_synced(
    tmp_path: Path, cosigned_upstream: dict[str, Any]
) -> None:
    up = cosigned_upstream
    with ocimirror.open(home=tmp_path / "home") as reg:
        repo = mirror(reg, up, include_tags=["2.0", "sha256-*"])
        repo.sync()
        assert set(repo.tags()) == {"2.0", up["sig_two"]}


def test_a_trusted_cosign_key_drops_an_image_signed_by_another_key(
    tmp_path: Path, cosigned_upstream: dict[str, Any], cosign_key: CosignKey
) -> None:
    up = cosigned_upstream
    with ocimirror.open(home=tmp_path / "home") as reg:
        repo = mirror(reg, up, trusted_cosign_keys=[cosign_key.public_pem()])
        result = repo.sync()
        assert set(repo.tags()) == {"1.0", up["sig_one"], companion_tag(up["one"].digest)}
        (dropped,) = result.dropped
        assert dropped["tag"] == "2.0"
        assert "cosign" in dropped["reason"] and up["sig_two"] in dropped["reason"]
        assert result.to_json()["sync"]["dropped"] == [dropped]


def test_referrers_come_through_an_upstream_referrers_api(
    tmp_path: Path, cosigned_upstream: dict[str, Any]
) -> None:
    """ocimirror as the upstream has the referrers API: the second sync uses it."""
    up = cosigned_upstream
    first = tmp_path / "first"
    with ocimirror.open(home=first) as reg:
        mirror(reg, up, include_tags=["1.0"]).sync()
        reg.create_distribution("app", base_path="mirror/app", repository="mirror/app")
    with serving(first, auth=False) as served, ocimirror.open(home=tmp_path / "second") as reg:
        upstream = {"registry": Registry(f"http://{served}"), "name": "mirror/app"}
        repo = mirror(reg, upstream, include_tags=["1.0"])
        result = repo.sync()
        # One GET for the referrers of the one image synced (the probe is that GET).
        assert result.requests["referrers"] == 1
        assert repo.has_manifest(up["sbom"].digest)
        assert set(repo.tags()) == {"1.0", up["sig_one"], companion_tag(up["one"].digest)}
