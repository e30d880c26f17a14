"""The Docker signature API extension, in-process: ``/extensions/v2/<name>/signatures/<digest>``.

GET and HEAD list a manifest's atomic signatures in the version a distribution serves; PUT adds
some (one object, or the whole ``{"signatures": [...]}`` document), refused on mirrors and on
pinned distributions; ``/v2/`` announces the extension. Each test gets fresh registries over
each metadata backend (``make_harness``), first with open access, then with token auth.

What the registry holds (see :func:`fill`):

* ``app`` (push repository): ``IMAGE`` tagged ``v1`` and ``OTHER`` tagged ``other``, served at
  ``team/app`` (public), ``private/app`` (private) and ``team/pinned`` (pinned to version 1);
* ``copy`` (push repository): ``IMAGE`` again, at ``team/copy``;
* ``mirror``: mirrors remote ``hub``, holds ``IMAGE``, at ``mirror/app``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from argon2 import PasswordHasher, profiles
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from server_harness import Harness, oci_error

import ocimirror.users
from ocimirror import AsyncRegistry, Remote
from ocimirror.backends.metadata import Coalesce
from ocimirror.core.digest import Digest
from ocimirror.core.mediatype import MediaType
from ocimirror.server.auth import TokenAuth
from ocimirror.testing import random_image, write_layout

HarnessFactory = Callable[..., Harness]

IMAGE = random_image(seed="signature-extension/image", layers=1, layer_size=512)
OTHER = random_image(seed="signature-extension/other", layers=1, layer_size=512)
UNKNOWN = Digest.of(b"no manifest has these bytes")

SIG_A = b"\xa3\x01atomic signature A\x00\xff" * 3
SIG_B = b"\xa3\x01atomic signature B\x00\xfe" * 3

ALICE = ("alice", "alice's password")
READER = ("reader", "reader's password")
KEY = ec.generate_private_key(ec.SECP256R1())


def url(name: str, digest: Digest | str) -> str:
    return f"/extensions/v2/{name}/signatures/{digest}"


def entry(data: bytes, digest: Digest | str = IMAGE.digest, **changes: Any) -> dict[str, Any]:
    """One signature object as containers-image PUTs it (its name is the client's choice)."""
    value: dict[str, Any] = {
        "schemaVersion": 2,
        "type": "atomic",
        "name": f"{digest}@{'ab' * 16}",
        "content": base64.b64encode(data).decode(),
    }
    value.update(changes)
    return value


def listed(digest: Digest | str, data: bytes) -> dict[str, Any]:
    """The entry GET lists for ``data``: named by the first 32 hex of its sha256."""
    return {
        "schemaVersion": 2,
        "type": "atomic",
        "name": f"{digest}@{hashlib.sha256(data).hexdigest()[:32]}",
        "content": base64.b64encode(data).decode(),
    }


async def fill(registry: AsyncRegistry, tmp: Path) -> None:
    """The content described in the module docstring."""
    write_layout(tmp / "app-layout", {"v1": IMAGE, "other": OTHER})
    write_layout(tmp / "copy-layout", {"v1": IMAGE})
    app = await registry.create_repository("app")
    first = await app.import_layout(tmp / "app-layout")
    await registry.create_distribution("app", base_path="team/app", repository="app")
    await registry.create_distribution(
        "app-private", base_path="private/app", repository="app", private=True
    )
    await registry.create_distribution(
        "app-pinned", base_path="team/pinned", repository="app", repository_version=first.number
    )
    copy = await registry.create_repository("copy")
    await copy.import_layout(tmp / "copy-layout")
    await registry.create_distribution("copy", base_path="team/copy", repository="copy")
    await registry.create_remote(
        Remote(name="hub", url="https://registry.example", upstream_name="library/app")
    )
    mirror = await registry.create_repository("mirror", remote="hub")
    await mirror.import_layout(tmp / "copy-layout")
    await registry.create_distribution("mirror", base_path="mirror/app", repository="mirror")


@pytest.fixture
def h(make_harness: HarnessFactory, tmp_path: Path) -> Harness:
    """The content, served with open access."""
    return make_harness(fill=lambda registry: fill(registry, tmp_path))


def put(
    h: Harness, name: str, digest: Digest | str, body: bytes | dict[str, Any], **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return h.run(h.client.put(url(name, digest), content=content, headers=headers or None))


def signatures(h: Harness, name: str, digest: Digest | str) -> list[dict[str, Any]]:
    """The signatures GET lists (after checking the answer's status and type)."""
    response = h.get(url(name, digest))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["signatures"]
    result: list[dict[str, Any]] = body["signatures"]
    return result


def present(h: Harness, repository: str = "app") -> dict[str, int]:
    """What the latest version of ``repository`` holds, by content type."""

    async def read() -> dict[str, int]:
        version = await (await h.registry.repository(repository)).latest_version()
        return dict(version.content_summary.present)

    return h.run(read())


def latest(h: Harness, repository: str = "app") -> int:
    async def read() -> int:
        return (await (await h.registry.repository(repository)).latest_version()).number

    return h.run(read())


# -- reading -----------------------------------------------------------------------------------


def test_a_manifest_without_signatures_lists_none(h: Harness) -> None:
    """GET on a manifest the version holds: 200, ``{"signatures": []}``."""
    response = h.get(url("team/app", IMAGE.digest))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.content) == {"signatures": []}
    assert response.headers["content-length"] == str(len(response.content))


def test_head_answers_like_get_without_a_body(h: Harness) -> None:
    """HEAD: the same status and length as GET, no body."""
    assert put(h, "team/app", IMAGE.digest, entry(SIG_A)).status_code == 201
    got = h.get(url("team/app", IMAGE.digest))
    head = h.head(url("team/app", IMAGE.digest))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == "application/json"


def test_an_unknown_manifest_is_manifest_unknown(h: Harness) -> None:
    """A digest the served version does not hold: 404 MANIFEST_UNKNOWN, OCI error body."""
    response = h.get(url("team/app", UNKNOWN))
    assert response.status_code == 404
    error = oci_error(response)
    assert error["code"] == "MANIFEST_UNKNOWN"
    assert str(UNKNOWN) in json.dumps(error)


def test_head_of_an_unknown_manifest_is_404_without_a_body(h: Harness) -> None:
    response = h.head(url("team/app", UNKNOWN))
    assert response.status_code == 404
    assert response.content == b""


def test_an_unknown_name_is_name_unknown(h: Harness) -> None:
    response = h.get(url("nobody/here", IMAGE.digest))
    assert response.status_code == 404
    assert oci_error(response)["code"] == "NAME_UNKNOWN"


@pytest.mark.parametrize(
    "reference",
    ["latest", "sha256:abc", "sha256:" + "Z" * 64, "md5:" + "0" * 32, "v1"],
)
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_malformed_digest_is_digest_invalid(h: Harness, method: str, reference: str) -> None:
    """Only a digest names a manifest here: 400 DIGEST_INVALID for GET and PUT alike."""
    content = json.dumps(entry(SIG_A)).encode() if method == "PUT" else None
    response = h.run(h.client.request(method, url("team/app", reference), content=content))
    assert response.status_code == 400, response.text
    assert oci_error(response)["code"] == "DIGEST_INVALID"
    assert "container.signature" not in present(h)


def test_an_unknown_extension_path_is_404_in_oci_format(h: Harness) -> None:
    response = h.get(f"/extensions/v2/team/app/notsignatures/{IMAGE.digest}")
    assert response.status_code == 404
    assert oci_error(response)["code"] in {"UNSUPPORTED", "NAME_UNKNOWN"}


@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_with_allow(h: Harness, method: str) -> None:
    """Only GET, HEAD and PUT: anything else is 405 UNSUPPORTED naming them in Allow."""
    response = h.request(method, url("team/app", IMAGE.digest))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, PUT"
    assert oci_error(response)["code"] == "UNSUPPORTED"
    assert signatures(h, "team/app", IMAGE.digest) == []


def test_v2_announces_the_signature_extension(h: Harness) -> None:
    """``/v2/`` (GET and HEAD) says ``X-Registry-Supports-Signatures: 1``."""
    for method in ("GET", "HEAD"):
        response = h.request(method, "/v2/")
        assert response.status_code == 200
        assert response.headers["x-registry-supports-signatures"] == "1"
        assert response.headers["docker-distribution-api-version"] == "registry/2.0"


# -- writing -----------------------------------------------------------------------------------


def test_one_signature_object_is_stored_and_listed(h: Harness) -> None:
    """PUT one object (as containers-image sends it): 201, empty body; GET lists it under a
    name made from its bytes, its content byte for byte."""
    before = latest(h)
    response = put(h, "team/app", IMAGE.digest, entry(SIG_A))
    assert response.status_code == 201, response.text
    assert response.content == b""

    [stored] = signatures(h, "team/app", IMAGE.digest)
    assert stored == listed(IMAGE.digest, SIG_A)
    assert re.fullmatch(rf"{re.escape(str(IMAGE.digest))}@[0-9a-f]{{32}}", stored["name"])
    assert base64.b64decode(stored["content"]) == SIG_A
    assert latest(h) > before
    assert signatures(h, "team/app", OTHER.digest) == []


def test_no_signatures_is_remembered_per_version_and_a_put_shows_at_once(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients of the extension ask for every image they pull; that a manifest has none is
    read once per version. A PUT makes a new version, listed at once."""
    metadata = h.registry.metadata
    reads: list[tuple[Any, ...]] = []
    real = metadata.signatures

    async def counted(*args: Any) -> Any:
        reads.append(args)
        return await real(*args)

    monkeypatch.setattr(metadata, "signatures", counted)
    assert signatures(h, "team/app", IMAGE.digest) == []
    assert signatures(h, "team/app", IMAGE.digest) == []
    assert len(reads) == 1
    assert put(h, "team/app", IMAGE.digest, entry(SIG_A)).status_code == 201
    assert signatures(h, "team/app", IMAGE.digest) == [listed(IMAGE.digest, SIG_A)]
    assert signatures(h, "team/app", IMAGE.digest) == [listed(IMAGE.digest, SIG_A)]
    assert len(reads) == 3  # signatures themselves are read each time


def test_the_whole_document_form_is_stored_and_listed(h: Harness) -> None:
    """PUT ``{"signatures": [a, b]}``: 201, both listed (by name)."""
    body = {"signatures": [entry(SIG_A), entry(SIG_B)]}
    assert put(h, "team/app", IMAGE.digest, body).status_code == 201
    found = signatures(h, "team/app", IMAGE.digest)
    expected = sorted(
        [listed(IMAGE.digest, SIG_A), listed(IMAGE.digest, SIG_B)], key=lambda s: s["name"]
    )
    assert found == expected
    assert {base64.b64decode(s["content"]) for s in found} == {SIG_A, SIG_B}


def test_the_same_bytes_twice_are_listed_once(h: Harness) -> None:
    """A signature PUT again (alone, then within a document) is one signature."""
    assert put(h, "team/app", IMAGE.digest, entry(SIG_A)).status_code == 201
    assert put(h, "team/app", IMAGE.digest, entry(SIG_A, name="another@name")).status_code == 201
    both = {"signatures": [entry(SIG_A), entry(SIG_A), entry(SIG_B)]}
    assert put(h, "team/app", IMAGE.digest, both).status_code == 201
    names = [s["name"] for s in signatures(h, "team/app", IMAGE.digest)]
    assert sorted(names) == sorted(
        [listed(IMAGE.digest, SIG_A)["name"], listed(IMAGE.digest, SIG_B)["name"]]
    )
    assert present(h)["container.signature"] == 2


def test_entries_of_other_types_are_skipped(h: Harness) -> None:
    """A document mixing an unknown type with an atomic entry stores the atomic one only."""
    body = {"signatures": [entry(SIG_B, type="future-format"), entry(SIG_A)]}
    assert put(h, "team/app", IMAGE.digest, body).status_code == 201
    assert signatures(h, "team/app", IMAGE.digest) == [listed(IMAGE.digest, SIG_A)]


def test_a_put_for_a_manifest_the_repository_lacks_is_manifest_unknown(h: Harness) -> None:
    """404 MANIFEST_UNKNOWN, and the version does not change."""
    before = latest(h)
    response = put(h, "team/app", UNKNOWN, entry(SIG_A, digest=UNKNOWN))
    assert response.status_code == 404
    assert oci_error(response)["code"] == "MANIFEST_UNKNOWN"
    assert latest(h) == before
    assert "container.signature" not in present(h)


def test_a_put_to_a_mirror_is_denied_and_adds_nothing(h: Harness) -> None:
    """A repository that mirrors a remote is read-only: 403 DENIED, no new version."""
    before = latest(h, "mirror")
    assert signatures(h, "mirror/app", IMAGE.digest) == []
    for body in (entry(SIG_A), {"signatures": [entry(SIG_A)]}):
        response = put(h, "mirror/app", IMAGE.digest, body)
        assert response.status_code == 403, response.text
        error = oci_error(response)
        assert error["code"] == "DENIED"
        assert "read-only" in error["message"]
    assert signatures(h, "mirror/app", IMAGE.digest) == []
    assert latest(h, "mirror") == before
    assert "container.signature" not in present(h, "mirror")


def test_a_put_to_a_pinned_distribution_is_denied(h: Harness) -> None:
    """A distribution pinned to a version is immutable: 403 DENIED."""
    response = put(h, "team/pinned", IMAGE.digest, entry(SIG_A))
    assert response.status_code == 403
    assert oci_error(response)["code"] == "DENIED"
    assert "container.signature" not in present(h)


def test_signatures_show_only_in_the_versions_and_repositories_that_hold_them(
    h: Harness,
) -> None:
    """A signature PUT through team/app shows at private/app (same repository, latest) but
    not at team/pinned (an older version) nor at team/copy (another repository holding the
    same manifest)."""
    assert put(h, "team/app", IMAGE.digest, entry(SIG_A)).status_code == 201
    assert signatures(h, "private/app", IMAGE.digest) == [listed(IMAGE.digest, SIG_A)]
    assert signatures(h, "team/pinned", IMAGE.digest) == []
    assert signatures(h, "team/copy", IMAGE.digest) == []
    assert "container.signature" not in present(h, "copy")


def test_the_same_bytes_put_for_another_manifest_are_listed_for_it(h: Harness) -> None:
    """Bytes already stored as a signature of one manifest, PUT for another: the 201 means
    GET on the other manifest lists them too."""
    assert put(h, "team/app", IMAGE.digest, entry(SIG_A)).status_code == 201
    response = put(h, "team/app", OTHER.digest, entry(SIG_A, digest=OTHER.digest))
    assert response.status_code == 201
    assert signatures(h, "team/app", IMAGE.digest) == [listed(IMAGE.digest, SIG_A)]
    assert signatures(h, "team/app", OTHER.digest) == [listed(OTHER.digest, SIG_A)]


BAD_BODIES = [
    pytest.param(b"{not json", id="malformed JSON"),
    pytest.param(b"", id="an empty body"),
    pytest.param(b"\xff\xfe\x00{", id="not UTF-8"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="a JSON array"),
    pytest.param(b'"text"', id="a JSON string"),
    pytest.param(b"{}", id="an empty object"),
    pytest.param(b'{"signatures": []}', id="no signatures"),
    pytest.param(b'{"signatures": null}', id="null signatures"),
    pytest.param(b'{"signatures": "x"}', id="signatures not an array"),
    pytest.param(b'{"signatures": [42]}', id="an entry that is not an object"),
    pytest.param(
        json.dumps(entry(SIG_A, content="!!!not base64!!!")).encode(), id="bad base64 (object)"
    ),
    pytest.param(
        json.dumps({"signatures": [entry(SIG_A, content="QUJ")]}).encode(),
        id="bad base64 (document)",
    ),
    pytest.param(json.dumps(entry(SIG_A, content="")).encode(), id="empty content"),
    pytest.param(json.dumps(entry(SIG_A, name="")).encode(), id="empty name"),
    pytest.param(json.dumps(entry(SIG_A, content=123)).encode(), id="content not a string"),
    pytest.param(json.dumps(entry(SIG_A, schemaVersion=True)).encode(), id="boolean version"),
    pytest.param(json.dumps(entry(SIG_A, type="other")).encode(), id="no atomic entry (object)"),
    pytest.param(
        json.dumps({"signatures": [entry(SIG_A, schemaVersion=3)]}).encode(),
        id="no atomic entry (document)",
    ),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested too deeply"),
    pytest.param(b'{"signatures": ' * 50_000 + b"null" + b"}" * 50_000, id="deep objects"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_bad_body_is_a_400_oci_error_and_adds_nothing(h: Harness, body: bytes) -> None:
    """Whatever is wrong with the body: 400 with an OCI error, never 500; nothing stored."""
    before = latest(h)
    response = put(h, "team/app", IMAGE.digest, body)
    assert response.status_code == 400, (response.status_code, response.text[:300])
    error = oci_error(response)
    assert error["code"] == "MANIFEST_INVALID"
    assert latest(h) == before
    assert signatures(h, "team/app", IMAGE.digest) == []


def test_a_body_over_the_limit_is_refused(h: Harness) -> None:
    """More than 4 MiB: 413, unread past the limit, nothing stored."""
    body = json.dumps(entry(b"x" * (4 << 20))).encode()
    response = put(h, "team/app", IMAGE.digest, body)
    assert response.status_code == 413
    assert oci_error(response)["code"] == "MANIFEST_INVALID"
    assert signatures(h, "team/app", IMAGE.digest) == []


# -- versions ----------------------------------------------------------------------------------


def test_a_put_is_counted_in_the_versions_content_summary(h: Harness) -> None:
    """The version after a PUT holds ``container.signature`` (one per distinct signature)."""
    assert "container.signature" not in present(h)
    assert put(h, "team/app", IMAGE.digest, entry(SIG_A)).status_code == 201
    assert present(h)["container.signature"] == 1
    assert put(h, "team/app", OTHER.digest, entry(SIG_B, digest=OTHER.digest)).status_code == 201
    summary = present(h)
    assert summary["container.signature"] == 2
    assert summary["container.manifest"] == 2


def test_deleting_a_manifest_removes_its_signatures_from_the_next_version(h: Harness) -> None:
    """DELETE /v2/<name>/manifests/<digest> takes the manifest's signatures with it; the
    other manifest keeps its own. Pushed again, the manifest comes back unsigned."""
    h.registry.push.coalesce = Coalesce(quiet=0.0)  # every push its own version
    assert put(h, "team/app", IMAGE.digest, {"signatures": [entry(SIG_A), entry(SIG_B)]}).is_success
    assert put(h, "team/app", OTHER.digest, entry(SIG_A + b"!", digest=OTHER.digest)).is_success
    signed = latest(h)
    assert present(h)["container.signature"] == 3

    response = h.request("DELETE", f"/v2/team/app/manifests/{IMAGE.digest}")
    assert response.status_code == 202, response.text

    assert latest(h) > signed
    assert present(h)["container.signature"] == 1

    async def removed() -> dict[str, int]:
        version = await (await h.registry.repository("app")).latest_version()
        return dict(version.content_summary.removed)

    assert h.run(removed()).get("container.signature") == 2
    response = h.get(url("team/app", IMAGE.digest))
    assert response.status_code == 404
    assert oci_error(response)["code"] == "MANIFEST_UNKNOWN"
    assert signatures(h, "team/app", OTHER.digest) == [listed(OTHER.digest, SIG_A + b"!")]

    # The same manifest pushed again (its blobs are still there) has no signatures.
    response = h.run(
        h.client.put(
            f"/v2/team/app/manifests/{IMAGE.digest}",
            content=IMAGE.manifest,
            headers={"content-type": MediaType.OCI_MANIFEST},
        )
    )
    assert response.status_code == 201, response.text
    assert signatures(h, "team/app", IMAGE.digest) == []


# -- with token auth ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def cheap_hashing() -> Iterator[None]:
    """The cheapest argon2id parameters, so logging in is fast."""
    cheap = PasswordHasher.from_parameters(profiles.CHEAPEST)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ocimirror.users, "default_hasher", lambda: cheap)
        yield


@pytest.fixture
def secured(make_harness: HarnessFactory, tmp_path: Path) -> Harness:
    """The content served with token auth: alice may push to private/*, reader only pull."""

    async def setup(registry: AsyncRegistry) -> None:
        await fill(registry, tmp_path)
        for username, password in (ALICE, READER):
            await registry.create_user(username, password=password)
        await registry.grant("alice", "private/*", "push")
        await registry.grant("reader", "private/*", "pull")

    key = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return make_harness(fill=setup, auth=TokenAuth(key=key))


def token(h: Harness, scope: str, user: tuple[str, str] | None = None) -> dict[str, str]:
    """An Authorization header with a token for ``scope``."""
    headers = {}
    if user is not None:
        pair = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        headers["authorization"] = f"Basic {pair}"
    response = h.get(f"/token?{urlencode({'service': 'ocimirror', 'scope': scope})}", headers)
    assert response.status_code == 200, response.text
    return {"authorization": f"Bearer {response.json()['token']}"}


def challenge(response: httpx.Response) -> dict[str, str]:
    """The parameters of a 401's Bearer challenge."""
    assert response.status_code == 401, response.text
    scheme, _, rest = response.headers["www-authenticate"].partition(" ")
    assert scheme == "Bearer"
    params = {}
    for part in rest.split('",'):
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip().strip('"')
    return params


def test_anonymous_get_of_a_private_distribution_is_challenged(secured: Harness) -> None:
    """401 UNAUTHORIZED with a Bearer challenge for pull on the name; public names answer."""
    response = secured.get(url("private/app", IMAGE.digest))
    asked = challenge(response)
    assert asked["scope"] == "repository:private/app:pull"
    assert asked["realm"].endswith("/token")
    assert oci_error(response)["code"] == "UNAUTHORIZED"
    assert signatures(secured, "team/app", IMAGE.digest) == []


def test_a_pull_token_reads_the_private_signatures(secured: Harness) -> None:
    headers = token(secured, "repository:private/app:pull", READER)
    response = secured.get(url("private/app", IMAGE.digest), headers)
    assert response.status_code == 200
    assert response.json() == {"signatures": []}


def test_a_put_without_push_rights_is_refused(secured: Harness) -> None:
    """Anonymous, and a reader with a pull token (though they asked for push): refused, and
    nothing is stored; alice, who may push, gets 201."""
    body = json.dumps(entry(SIG_A)).encode()
    target = url("private/app", IMAGE.digest)
    anonymous = secured.run(secured.client.put(target, content=body))
    assert anonymous.status_code == 401
    assert challenge(anonymous)["scope"] == "repository:private/app:pull,push"

    readers = token(secured, "repository:private/app:pull,push", READER)
    response = secured.run(secured.client.put(target, content=body, headers=readers))
    assert response.status_code in (401, 403)
    assert oci_error(response)["code"] in {"UNAUTHORIZED", "DENIED"}
    assert "container.signature" not in present(secured)

    public = secured.run(secured.client.put(url("team/app", IMAGE.digest), content=body))
    assert public.status_code in (401, 403)
    assert "container.signature" not in present(secured)

    alices = token(secured, "repository:private/app:pull,push", ALICE)
    response = secured.run(secured.client.put(target, content=body, headers=alices))
    assert response.status_code == 201, response.text
    readers = token(secured, "repository:private/app:pull", READER)
    response = secured.get(target, readers)
    assert response.status_code == 200
    assert response.json() == {"signatures": [listed(IMAGE.digest, SIG_A)]}
    assert present(secured)["container.signature"] == 1


def test_the_v2_challenge_announces_the_extension_too(secured: Harness) -> None:
    """containers-image (skopeo, podman) pings ``/v2/`` without credentials and reads
    ``X-Registry-Supports-Signatures`` from that answer, a 401 when auth is on: the 401 must
    carry it, or those clients never use the extension."""
    response = secured.get("/v2/")
    assert response.status_code == 401
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert response.headers.get("x-registry-supports-signatures") == "1"
