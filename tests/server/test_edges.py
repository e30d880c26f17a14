"""HTTP edge cases of the registry API, one table per concern; each row's id is a sentence.

Every error answer must be a valid OCI error body; the tables check that as they go.
"""

from __future__ import annotations

from typing import Any

import pytest
from server_harness import IMAGES, LATER, Harness, oci_error

from ocimirror.core.mediatype import MediaType
from ocimirror.server.accept import acceptable, parse_accept
from ocimirror.server.blobs import UNSATISFIABLE, parse_range

APP = "/v2/library/app"
V1 = IMAGES["v1"]
BLOB = V1.layers[0].data
BLOB_URL = f"{APP}/blobs/{V1.layers[0].digest}"
N = len(BLOB)
EMPTY_URL = f"{APP}/blobs/{IMAGES['empty'].layers[0].digest}"
ETAG = f'"{V1.layers[0].digest}"'
TAGS = ["dlist", "docker", "empty", "later", "multi", "v1"]
DIGEST = "sha256:" + "0" * 64

OCI_M = MediaType.OCI_MANIFEST
OCI_I = MediaType.OCI_INDEX
DOCKER_M = MediaType.DOCKER_MANIFEST
DOCKER_L = MediaType.DOCKER_MANIFEST_LIST
DOCKER_ONLY = f"{DOCKER_M}, {DOCKER_L}"


# -- ranges ------------------------------------------------------------------------------------

RANGES = [
    pytest.param(BLOB_URL, "bytes=0-0", 206, f"bytes 0-0/{N}", BLOB[:1], id="the first byte"),
    pytest.param(
        BLOB_URL,
        f"bytes={N - 1}-{N - 1}",
        206,
        f"bytes {N - 1}-{N - 1}/{N}",
        BLOB[-1:],
        id="the last byte",
    ),
    pytest.param(
        BLOB_URL,
        "bytes=-10",
        206,
        f"bytes {N - 10}-{N - 1}/{N}",
        BLOB[-10:],
        id="a suffix range gives the last bytes",
    ),
    pytest.param(
        BLOB_URL,
        f"bytes=-{N + 5}",
        206,
        f"bytes 0-{N - 1}/{N}",
        BLOB,
        id="a suffix longer than the blob gives all of it",
    ),
    pytest.param(
        BLOB_URL,
        "bytes=5-",
        206,
        f"bytes 5-{N - 1}/{N}",
        BLOB[5:],
        id="an open-ended range runs to the end",
    ),
    pytest.param(
        BLOB_URL,
        f"bytes=10-{N + 100}",
        206,
        f"bytes 10-{N - 1}/{N}",
        BLOB[10:],
        id="a range ending beyond the end is cut at the end",
    ),
    pytest.param(
        BLOB_URL, "BYTES=0-1", 206, f"bytes 0-1/{N}", BLOB[:2], id="the unit's case does not matter"
    ),
    pytest.param(
        BLOB_URL,
        f"bytes={N}-",
        416,
        f"bytes */{N}",
        None,
        id="a range starting at the end is unsatisfiable",
    ),
    pytest.param(
        BLOB_URL,
        f"bytes={N + 10}-{N + 20}",
        416,
        f"bytes */{N}",
        None,
        id="a range beyond the end is unsatisfiable",
    ),
    pytest.param(
        BLOB_URL,
        "bytes=-0",
        416,
        f"bytes */{N}",
        None,
        id="a zero-length suffix range is unsatisfiable",
    ),
    pytest.param(
        BLOB_URL, "bytes=5-4", 416, f"bytes */{N}", None, id="a backwards range is unsatisfiable"
    ),
    pytest.param(BLOB_URL, "bytes=0-1,4-5", 200, None, BLOB, id="several ranges are ignored"),
    pytest.param(BLOB_URL, "items=0-1", 200, None, BLOB, id="another range unit is ignored"),
    pytest.param(BLOB_URL, "bytes=a-b", 200, None, BLOB, id="a malformed range is ignored"),
    pytest.param(BLOB_URL, "bytes=-", 200, None, BLOB, id="a range without numbers is ignored"),
    pytest.param(
        BLOB_URL,
        "bytes=" + "9" * 5000 + "-",
        200,
        None,
        BLOB,
        id="a range with absurdly many digits is ignored",
    ),
    pytest.param(EMPTY_URL, None, 200, None, b"", id="an empty blob is served whole"),
    pytest.param(
        EMPTY_URL, "bytes=0-", 416, "bytes */0", None, id="an empty blob has no satisfiable range"
    ),
    pytest.param(
        EMPTY_URL,
        "bytes=-1",
        416,
        "bytes */0",
        None,
        id="an empty blob has no satisfiable suffix range",
    ),
]


@pytest.mark.parametrize(("url", "range_", "status", "content_range", "body"), RANGES)
def test_range(
    world: Harness,
    url: str,
    range_: str | None,
    status: int,
    content_range: str | None,
    body: bytes | None,
) -> None:
    response = world.get(url, {"Range": range_} if range_ else {})
    assert response.status_code == status
    assert response.headers.get("content-range") == content_range
    if body is not None:
        assert response.content == body
        assert response.headers["content-length"] == str(len(body))
        assert response.headers["accept-ranges"] == "bytes"
    else:
        assert oci_error(response)["code"] == "UNSUPPORTED"


IF_RANGE = [
    pytest.param(ETAG, 206, id="an If-Range naming the ETag keeps the range"),
    pytest.param('"sha256:other"', 200, id="an If-Range naming another ETag sends everything"),
    pytest.param("Sat, 01 Jan 2000 00:00:00 GMT", 200, id="an If-Range date sends everything"),
]


@pytest.mark.parametrize(("if_range", "status"), IF_RANGE)
def test_if_range(world: Harness, if_range: str, status: int) -> None:
    response = world.get(BLOB_URL, {"Range": "bytes=0-9", "If-Range": if_range})
    assert response.status_code == status
    assert response.content == (BLOB[:10] if status == 206 else BLOB)


PARSE_RANGE: list[Any] = [
    pytest.param(" bytes=1-2 ", 10, (1, 3), id="outer spaces are allowed"),
    pytest.param("bytes=0-", 0, UNSATISFIABLE, id="nothing of nothing is unsatisfiable"),
    pytest.param("bytes=-5", 3, (0, 3), id="a suffix beyond the start gives everything"),
    pytest.param("bytes=1-2;x", 10, None, id="trailing garbage is ignored"),
    pytest.param("bytes=\uff11-2", 10, None, id="non-ASCII digits are ignored"),
]


@pytest.mark.parametrize(("value", "size", "expected"), PARSE_RANGE)
def test_parse_range(value: str, size: int, expected: Any) -> None:
    assert parse_range(value, size) == expected


# -- HEAD and GET ------------------------------------------------------------------------------

HEAD_GET = [
    pytest.param("/v2/", id="the version check"),
    pytest.param("/v2/_catalog", id="the catalog"),
    pytest.param(f"{APP}/tags/list", id="a tag list"),
    pytest.param(f"{APP}/manifests/v1", id="a manifest by tag"),
    pytest.param(f"{APP}/manifests/{V1.digest}", id="a manifest by digest"),
    pytest.param(f"{APP}/manifests/multi", id="an index"),
    pytest.param(BLOB_URL, id="a blob"),
    pytest.param(EMPTY_URL, id="an empty blob"),
    pytest.param("/v2/no/such/manifests/v1", id="an unknown name"),
    pytest.param(f"{APP}/manifests/nope", id="an unknown tag"),
    pytest.param(f"{APP}/blobs/{DIGEST}", id="an unknown blob"),
    pytest.param(f"{APP}/blobs/sha256:zz", id="a malformed digest"),
    pytest.param(f"{APP}/tags/list?n=x", id="an invalid n"),
]


@pytest.mark.parametrize("url", HEAD_GET)
def test_head_answers_like_get_without_a_body(world: Harness, url: str) -> None:
    get = world.get(url)
    head = world.head(url)
    assert head.status_code == get.status_code
    assert head.content == b""
    assert dict(head.headers) == dict(get.headers)
    assert head.headers.get("content-length", "0") == str(len(get.content))


def test_a_range_on_head_is_ignored(world: Harness) -> None:
    head = world.head(BLOB_URL, {"Range": "bytes=0-0"})
    assert head.status_code == 200
    assert head.headers["content-length"] == str(N)
    assert "content-range" not in head.headers


# -- Accept ------------------------------------------------------------------------------------

ACCEPT = [
    pytest.param("v1", [], 200, id="no Accept header accepts anything"),
    pytest.param("v1", [""], 200, id="an empty Accept header accepts anything"),
    pytest.param("v1", [OCI_M], 200, id="the exact type is accepted"),
    pytest.param("v1", [f"{DOCKER_M}, {OCI_M}"], 200, id="the exact type in a list is accepted"),
    pytest.param("v1", [DOCKER_M, OCI_M], 200, id="the exact type in a second header is accepted"),
    pytest.param("v1", ["*/*"], 200, id="any type is accepted by */*"),
    pytest.param("v1", ["application/*"], 200, id="a type wildcard accepts its subtypes"),
    pytest.param("v1", ["*"], 200, id="a lone * counts as */*"),
    pytest.param(
        "v1",
        ["Application/VND.OCI.Image.Manifest.v1+JSON; charset=utf-8"],
        200,
        id="case and parameters other than q are ignored",
    ),
    pytest.param("v1", [f"{OCI_M};q=abc"], 200, id="a malformed q counts as 1"),
    pytest.param("v1", [f"{OCI_M};q=0.001"], 200, id="a tiny q still accepts"),
    pytest.param("v1", [f"{OCI_M};q=0"], 404, id="q=0 for the stored type refuses it"),
    pytest.param("v1", [f"*/*, {OCI_M};q=0"], 404, id="q=0 for the stored type beats a wildcard"),
    pytest.param(
        "v1", [f"application/*;q=0, {OCI_M}"], 200, id="the exact type beats a refused wildcard"
    ),
    pytest.param("v1", [DOCKER_ONLY], 404, id="a docker-only client gets 404 for an OCI manifest"),
    pytest.param(
        "v1",
        [f"{MediaType.DOCKER_SCHEMA1_SIGNED}, {MediaType.DOCKER_SCHEMA1}"],
        404,
        id="a schema1-only client gets 404 for an OCI manifest",
    ),
    pytest.param("v1", ["application/json"], 404, id="plain JSON is not a manifest type"),
    pytest.param("v1", ["text/*"], 404, id="another type's wildcard refuses"),
    pytest.param("docker", [DOCKER_ONLY], 200, id="a docker-only client gets a docker manifest"),
    pytest.param("docker", [OCI_M], 404, id="an OCI-only client gets 404 for a docker manifest"),
    pytest.param("multi", [OCI_I], 200, id="an index is served to who accepts indexes"),
    pytest.param("multi", [OCI_M], 404, id="an index is never replaced by one of its images"),
    pytest.param("dlist", [DOCKER_L], 200, id="a docker manifest list is served as one"),
    pytest.param("dlist", [DOCKER_M], 404, id="a docker list is refused to image-only clients"),
    pytest.param("dlist", [OCI_I], 404, id="a docker list is never converted to an OCI index"),
]


@pytest.mark.parametrize(("tag", "accept", "status"), ACCEPT)
def test_accept(world: Harness, tag: str, accept: list[str], status: int) -> None:
    image = IMAGES[tag]
    response = world.get(f"{APP}/manifests/{tag}", [("Accept", a) for a in accept])
    assert response.status_code == status
    if status == 200:
        assert response.content == image.manifest
        assert response.headers["content-type"] == image.media_type
    else:
        error = oci_error(response)
        assert error["code"] == "MANIFEST_UNKNOWN"
        assert image.media_type in error["message"]


def test_accept_answers_are_consistent_with_the_parsed_ranges() -> None:
    assert parse_accept([]) is None
    assert parse_accept([" , ;q=1"]) is None
    assert parse_accept([f"{OCI_M};q=2", "a/b;q=-1"]) == (
        ("application", "vnd.oci.image.manifest.v1+json", 1.0),
        ("a", "b", 0.0),
    )
    assert acceptable(["a/b;q=nan"], "a/b")


# -- pagination --------------------------------------------------------------------------------

PAGES = [
    pytest.param(f"{APP}/tags/list", TAGS, None, id="without n every tag is listed"),
    pytest.param(f"{APP}/tags/list?n=0", [], None, id="n=0 gives an empty list and no Link"),
    pytest.param(
        f"{APP}/tags/list?n=1",
        ["dlist"],
        f'<{APP}/tags/list?last=dlist&n=1>; rel="next"',
        id="n=1 gives the first tag and a Link to the next",
    ),
    pytest.param(f"{APP}/tags/list?n=6", TAGS, None, id="n equal to the count gives no Link"),
    pytest.param(f"{APP}/tags/list?n=100", TAGS, None, id="n above the count gives everything"),
    pytest.param(
        f"{APP}/tags/list?n=99999999999999999999", TAGS, None, id="a huge n gives everything"
    ),
    pytest.param(f"{APP}/tags/list?last=docker", TAGS[2:], None, id="last lists the tags after it"),
    pytest.param(
        f"{APP}/tags/list?last=docker&n=2",
        ["empty", "later"],
        f'<{APP}/tags/list?last=later&n=2>; rel="next"',
        id="last and n give a middle page",
    ),
    pytest.param(f"{APP}/tags/list?n=2&last=multi", ["v1"], None, id="the last page has no Link"),
    pytest.param(f"{APP}/tags/list?last=zzz", [], None, id="last beyond the end gives nothing"),
    pytest.param(f"{APP}/tags/list?last=e", TAGS[2:], None, id="last need not be a tag"),
    pytest.param(f"{APP}/tags/list?last=", TAGS, None, id="an empty last starts at the start"),
    pytest.param(
        "/v2/pinned/app/tags/list",
        [t for t in TAGS if t != "later"],
        None,
        id="a pinned distribution lists its version's tags",
    ),
    pytest.param(
        "/v2/_catalog",
        ["library/app", "odd/manifests/blobs", "pinned/app"],
        None,
        id="the catalog lists public names that serve a repository, sorted",
    ),
    pytest.param(
        "/v2/_catalog?n=1",
        ["library/app"],
        '</v2/_catalog?last=library/app&n=1>; rel="next"',
        id="the catalog pages with a Link",
    ),
    pytest.param("/v2/_catalog?n=0", [], None, id="the catalog with n=0 is empty"),
    pytest.param(
        "/v2/_catalog?last=library/app&n=5",
        ["odd/manifests/blobs", "pinned/app"],
        None,
        id="the catalog lists the names after last",
    ),
]


@pytest.mark.parametrize(("url", "listed", "link"), PAGES)
def test_pagination(world: Harness, url: str, listed: list[str], link: str | None) -> None:
    response = world.get(url)
    assert response.status_code == 200
    body = response.json()
    if "_catalog" in url:
        assert body == {"repositories": listed}
    else:
        assert body == {"name": url.split("/v2/")[1].split("/tags/")[0], "tags": listed}
    assert response.headers.get("link") == link


@pytest.mark.parametrize(
    "n",
    [
        pytest.param("-1", id="a negative n is refused"),
        pytest.param("abc", id="a word for n is refused"),
        pytest.param("", id="an empty n is refused"),
        pytest.param("1.5", id="a fractional n is refused"),
        pytest.param("+1", id="a signed n is refused"),
    ],
)
@pytest.mark.parametrize("url", [f"{APP}/tags/list", "/v2/_catalog"], ids=["tags", "catalog"])
def test_invalid_n(world: Harness, url: str, n: str) -> None:
    response = world.get(f"{url}?n={n}")
    assert response.status_code == 400
    assert oci_error(response)["code"] == "UNSUPPORTED"


# -- names, references, digests, methods -------------------------------------------------------

MISSES = [
    pytest.param("GET", "/v2/no/such/manifests/v1", 404, "NAME_UNKNOWN", id="an unknown name"),
    pytest.param(
        "GET", f"/v2/no/such/blobs/{DIGEST}", 404, "NAME_UNKNOWN", id="an unknown name's blob"
    ),
    pytest.param("GET", "/v2/no/such/tags/list", 404, "NAME_UNKNOWN", id="an unknown name's tags"),
    pytest.param(
        "GET",
        "/v2/nothing/here/tags/list",
        404,
        "NAME_UNKNOWN",
        id="a distribution serving no repository",
    ),
    pytest.param("GET", f"{APP}/manifests/nope", 404, "MANIFEST_UNKNOWN", id="an unknown tag"),
    pytest.param(
        "GET", f"{APP}/manifests/{DIGEST}", 404, "MANIFEST_UNKNOWN", id="an unknown manifest digest"
    ),
    pytest.param("GET", f"{APP}/blobs/{DIGEST}", 404, "BLOB_UNKNOWN", id="an unknown blob digest"),
    pytest.param(
        "GET", f"{APP}/blobs/{V1.digest}", 404, "BLOB_UNKNOWN", id="a manifest is not a blob"
    ),
    pytest.param(
        "GET",
        f"{APP}/manifests/{V1.config.digest}",
        404,
        "MANIFEST_UNKNOWN",
        id="a blob is not a manifest",
    ),
    pytest.param(
        "GET",
        f"/v2/pinned/app/manifests/{LATER.digest}",
        404,
        "MANIFEST_UNKNOWN",
        id="a manifest of a later version is not in the pinned one",
    ),
    pytest.param(
        "GET",
        f"/v2/pinned/app/blobs/{LATER.layers[0].digest}",
        404,
        "BLOB_UNKNOWN",
        id="a blob of a later version is not in the pinned one",
    ),
    pytest.param(
        "GET",
        "/v2/pinned/app/manifests/later",
        404,
        "MANIFEST_UNKNOWN",
        id="a later tag is not in the pinned version",
    ),
    pytest.param("GET", f"{APP}/blobs/sha256:zz", 404, "BLOB_UNKNOWN", id="a short blob digest"),
    pytest.param(
        "GET", f"{APP}/blobs/sha256:{'A' * 64}", 404, "BLOB_UNKNOWN", id="an uppercase blob digest"
    ),
    pytest.param(
        "GET", f"{APP}/blobs/md5:{'0' * 32}", 404, "BLOB_UNKNOWN", id="an unknown algorithm"
    ),
    pytest.param("GET", f"{APP}/blobs/sha256:", 404, "BLOB_UNKNOWN", id="a digest without hex"),
    pytest.param(
        "GET", f"{APP}/blobs/latest", 404, "BLOB_UNKNOWN", id="a tag where a digest belongs"
    ),
    pytest.param(
        "GET", f"{APP}/manifests/sha256:zz", 404, "MANIFEST_UNKNOWN", id="a short manifest digest"
    ),
    pytest.param(
        "GET", f"{APP}/manifests/-bad", 404, "MANIFEST_UNKNOWN", id="a tag starting with a dash"
    ),
    pytest.param(
        "GET", f"{APP}/manifests/{'t' * 129}", 404, "MANIFEST_UNKNOWN", id="a tag too long"
    ),
    pytest.param("GET", f"{APP}/manifests/a%20b", 404, "MANIFEST_UNKNOWN", id="a tag with a space"),
    pytest.param("GET", "/v2/Library/App/tags/list", 404, "NAME_UNKNOWN", id="an uppercase name"),
    pytest.param(
        "GET", "/v2/library//app/tags/list", 404, "NAME_UNKNOWN", id="an empty name component"
    ),
    pytest.param(
        "GET", "/v2/library/app//manifests/v1", 404, "NAME_UNKNOWN", id="a trailing slash in a name"
    ),
    pytest.param("GET", f"/v2/{'a' * 300}/tags/list", 404, "NAME_UNKNOWN", id="a name too long"),
    pytest.param(
        "GET", "/v2/-app/tags/list", 404, "NAME_UNKNOWN", id="a name starting with a dash"
    ),
    pytest.param("GET", f"{APP}/labels/list", 404, "UNSUPPORTED", id="an endpoint not served"),
    pytest.param("GET", "/v2/library", 404, "UNSUPPORTED", id="a bare name"),
    pytest.param("GET", "/other", 404, "UNSUPPORTED", id="a path outside the API"),
    pytest.param(
        "PUT", f"{APP}/manifests/v1", 400, "MANIFEST_INVALID", id="a manifest push of no manifest"
    ),
    pytest.param(
        "DELETE", f"{APP}/manifests/{DIGEST}", 404, "MANIFEST_UNKNOWN", id="an unknown manifest"
    ),
    pytest.param("DELETE", f"{APP}/blobs/{DIGEST}", 404, "BLOB_UNKNOWN", id="an unknown blob"),
    pytest.param(
        "PATCH", f"{APP}/blobs/uploads/abc", 404, "BLOB_UPLOAD_UNKNOWN", id="an unknown upload"
    ),
    pytest.param(
        "PATCH", f"{APP}/blobs/uploads/a.b", 404, "BLOB_UPLOAD_UNKNOWN", id="a malformed upload ID"
    ),
    pytest.param("POST", f"{APP}/manifests/v1", 405, "UNSUPPORTED", id="a manifest POST"),
    pytest.param("PUT", f"{APP}/blobs/uploads/", 405, "UNSUPPORTED", id="an upload start PUT"),
    pytest.param("POST", f"{APP}/tags/list", 405, "UNSUPPORTED", id="a tag list POST"),
    pytest.param("POST", "/v2/_catalog", 405, "UNSUPPORTED", id="a catalog POST"),
    pytest.param("POST", "/v2/", 405, "UNSUPPORTED", id="a version check POST"),
]


@pytest.mark.parametrize(("method", "url", "status", "code"), MISSES)
def test_misses_are_oci_errors(
    world: Harness, method: str, url: str, status: int, code: str
) -> None:
    response = world.request(method, url)
    assert response.status_code == status
    assert oci_error(response)["code"] == code
    if status == 405:
        assert method not in response.headers["allow"]


def test_the_path_tail_decides_where_a_name_ends(world: Harness) -> None:
    odd = "/v2/odd/manifests/blobs"
    assert world.get(f"{odd}/manifests/v1").content == V1.manifest
    assert world.get(f"{odd}/blobs/{V1.config.digest}").content == V1.config.data
    assert world.get(f"{odd}/tags/list?n=1").json() == {"name": odd[4:], "tags": ["dlist"]}
