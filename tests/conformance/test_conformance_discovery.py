"""Conformance, Content Discovery workflow: the tag list (with ``n``, ``last`` and ``Link``
pagination) and the referrers API (with the ``artifactType`` filter)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fixtures.distribution import (
    EMPTY_JSON,
    INDEX,
    MANIFEST,
    blob_bytes,
    digest_of,
    image_manifest,
    new_name,
    push_blob,
    push_image,
    put_manifest,
)
from fixtures.served import oci_error

from ocimirror.testing import Blob, Image, artifact, random_image

# -- tags --------------------------------------------------------------------------------------

TAGS = ["1.0", "1.1", "10", "2", "Beta", "_under", "alpha", "latest", "v1", "v1.0-rc1", "v2", "z-z"]


@dataclass(frozen=True)
class Tagged:
    """A repository holding one image under every tag of :data:`TAGS`, and the order in which
    the registry lists them (ASCII or case-insensitive: the spec allows either)."""

    name: str
    order: list[str]


def _tags(response: httpx.Response, name: str) -> list[str]:
    assert response.status_code == 200, (response.status_code, response.content[:300])
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body = response.json()
    assert body["name"] == name
    tags: list[str] = body["tags"]
    return tags


@pytest.fixture(scope="module")
def tagged(client: httpx.Client) -> Tagged:
    """:data:`TAGS` pushed onto one image in a fresh repository."""
    name = new_name()
    image = random_image(seed="discovery/tagged", layers=1)
    push_image(client, name, image, TAGS[0])
    for tag in TAGS[1:]:
        assert put_manifest(client, name, tag, image.manifest).status_code == 201
    listed = _tags(client.get(f"/v2/{name}/tags/list"), name)
    return Tagged(name, listed)


def test_the_tag_list_has_every_tag_sorted(tagged: Tagged) -> None:
    assert sorted(tagged.order) == sorted(TAGS)
    assert tagged.order in (sorted(TAGS), sorted(TAGS, key=str.lower))


@pytest.mark.parametrize("n", [1, 5, len(TAGS) - 1])
def test_n_limits_the_list_to_the_first_n_tags_with_a_link_to_the_rest(
    client: httpx.Client, tagged: Tagged, n: int
) -> None:
    response = client.get(f"/v2/{tagged.name}/tags/list", params={"n": n})
    assert _tags(response, tagged.name) == tagged.order[:n]
    following = client.get(response.request.url.join(response.links["next"]["url"]))
    assert _tags(following, tagged.name)[0] == tagged.order[n]


@pytest.mark.parametrize("n", [len(TAGS), len(TAGS) + 1, 10_000])
def test_n_of_at_least_the_number_of_tags_lists_them_all_without_a_link(
    client: httpx.Client, tagged: Tagged, n: int
) -> None:
    response = client.get(f"/v2/{tagged.name}/tags/list", params={"n": n})
    assert _tags(response, tagged.name) == tagged.order
    assert "link" not in response.headers


def test_n_0_lists_no_tags_and_no_link(client: httpx.Client, tagged: Tagged) -> None:
    response = client.get(f"/v2/{tagged.name}/tags/list", params={"n": 0})
    assert _tags(response, tagged.name) == []
    assert "link" not in response.headers


@pytest.mark.parametrize("position", [0, 4, len(TAGS) - 2])
def test_last_with_n_lists_up_to_n_tags_after_last(
    client: httpx.Client, tagged: Tagged, position: int
) -> None:
    last = tagged.order[position]
    response = client.get(f"/v2/{tagged.name}/tags/list", params={"n": 3, "last": last})
    assert _tags(response, tagged.name) == tagged.order[position + 1 : position + 4]


def test_last_alone_lists_every_tag_after_it(client: httpx.Client, tagged: Tagged) -> None:
    last = tagged.order[3]
    response = client.get(f"/v2/{tagged.name}/tags/list", params={"last": last})
    assert _tags(response, tagged.name) == tagged.order[4:]


def test_last_after_the_final_tag_lists_nothing(client: httpx.Client, tagged: Tagged) -> None:
    response = client.get(f"/v2/{tagged.name}/tags/list", params={"last": tagged.order[-1]})
    assert _tags(response, tagged.name) == []


def test_following_the_links_pages_through_every_tag_once(
    client: httpx.Client, tagged: Tagged
) -> None:
    seen: list[str] = []
    url = client.build_request("GET", f"/v2/{tagged.name}/tags/list", params={"n": 5}).url
    for _ in range(len(TAGS)):
        response = client.get(url)
        page = _tags(response, tagged.name)
        assert len(page) <= 5
        seen += page
        if "next" not in response.links:
            break
        url = response.request.url.join(response.links["next"]["url"])
    assert seen == tagged.order


def test_a_repository_with_only_untagged_manifests_lists_no_tags(client: httpx.Client) -> None:
    name = new_name()
    push_image(client, name, random_image(seed="discovery/untagged", layers=1), None)
    assert _tags(client.get(f"/v2/{name}/tags/list"), name) == []


def test_the_tags_of_a_repository_that_is_not_there_are_404_name_unknown(
    client: httpx.Client,
) -> None:
    response = client.get("/v2/conformance/not-a-repository/tags/list")
    assert response.status_code == 404
    oci_error(response, "NAME_UNKNOWN")


@pytest.mark.parametrize("n", ["-1", "ten", "1.5"])
def test_an_n_that_is_not_a_count_is_400(client: httpx.Client, tagged: Tagged, n: str) -> None:
    response = client.get(f"/v2/{tagged.name}/tags/list", params={"n": n})
    assert response.status_code == 400
    oci_error(response)


# -- referrers ---------------------------------------------------------------------------------

SBOM = "application/vnd.example.sbom"
SIGNATURE_CONFIG = "application/vnd.example.signature.config"
SUBJECT = random_image(seed="discovery/subject", layers=1)
NEVER_PUSHED = random_image(seed="discovery/never-pushed", layers=1)


def _config_typed_referrer() -> Image:
    """A referrer without ``artifactType``: its config's media type stands for it."""
    config = Blob(SIGNATURE_CONFIG, b'{"signed":"discovery"}')
    layer = Blob("application/vnd.example.signature", blob_bytes("discovery/signature", 64))
    data = image_manifest(
        config,
        [layer],
        subject=SUBJECT.descriptor(),
        annotations={"org.example.which": "config-typed"},
    )
    return Image(data, MANIFEST, config, (layer,))


SBOM_1 = artifact(
    SUBJECT, artifact_type=SBOM, payload=b'{"n":1}', annotations={"org.example.which": "sbom-1"}
)
SBOM_2 = artifact(
    SUBJECT, artifact_type=SBOM, payload=b'{"n":2}', annotations={"org.example.which": "sbom-2"}
)
CONFIG_TYPED = _config_typed_referrer()
ORPHAN = artifact(NEVER_PUSHED, artifact_type=SBOM, payload=b'{"orphan":1}')


def _index_referrer() -> tuple[bytes, dict[str, Any]]:
    """An index with a subject and no ``artifactType`` (its descriptor then has none)."""
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [SBOM_1.descriptor()],
        "subject": SUBJECT.descriptor(),
        "annotations": {"org.example.which": "index"},
    }
    data = json.dumps(index, separators=(",", ":")).encode()
    return data, index


INDEX_REFERRER, INDEX_DOCUMENT = _index_referrer()


@dataclass(frozen=True)
class Referred:
    """A repository holding :data:`SUBJECT`, its referrers, and :data:`ORPHAN`; the
    ``OCI-Subject`` header each referrer's PUT was answered with, by digest."""

    name: str
    oci_subject: dict[str, str | None]


def _push_referrer(
    client: httpx.Client, name: str, data: bytes, blobs: list[Blob], media_type: str
) -> httpx.Response:
    for blob in blobs:
        push_blob(client, name, blob.data)
    response = put_manifest(client, name, digest_of(data), data, media_type)
    assert response.status_code == 201, (response.status_code, response.content[:300])
    return response


@pytest.fixture(scope="module")
def referred(client: httpx.Client) -> Referred:
    """One referrer pushed before its subject, the others after; one whose subject never is."""
    name = new_name()
    answers: dict[str, str | None] = {}

    def push(data: bytes, blobs: list[Blob], media_type: str = MANIFEST) -> None:
        response = _push_referrer(client, name, data, blobs, media_type)
        answers[digest_of(data)] = response.headers.get("oci-subject")

    push(SBOM_1.manifest, SBOM_1.blobs())
    push_image(client, name, SUBJECT, "subject")
    push(SBOM_2.manifest, SBOM_2.blobs())
    push(CONFIG_TYPED.manifest, CONFIG_TYPED.blobs())
    push(INDEX_REFERRER, [], INDEX)
    push(ORPHAN.manifest, ORPHAN.blobs())
    # The same kind of referrer in another repository is not this repository's.
    other = new_name()
    stranger = artifact(SUBJECT, artifact_type=SBOM, payload=b'{"elsewhere":1}')
    _push_referrer(client, other, stranger.manifest, stranger.blobs(), MANIFEST)
    return Referred(name, answers)


def _expected() -> dict[str, dict[str, Any]]:
    """The descriptor the referrers API gives each referrer of :data:`SUBJECT`."""
    expected: dict[str, dict[str, Any]] = {}
    for image in (SBOM_1, SBOM_2, CONFIG_TYPED):
        document = json.loads(image.manifest)
        expected[str(image.digest)] = {
            "mediaType": MANIFEST,
            "digest": str(image.digest),
            "size": image.size,
            "artifactType": document.get("artifactType") or document["config"]["mediaType"],
            "annotations": document["annotations"],
        }
    expected[digest_of(INDEX_REFERRER)] = {
        "mediaType": INDEX,
        "digest": digest_of(INDEX_REFERRER),
        "size": len(INDEX_REFERRER),
        "annotations": INDEX_DOCUMENT["annotations"],
    }
    return expected


EXPECTED = _expected()


def _referrers(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, (response.status_code, response.content[:300])
    assert response.headers["content-type"] == INDEX
    body = response.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == INDEX
    listed = {entry["digest"]: entry for entry in body["manifests"]}
    assert len(listed) == len(body["manifests"]), "a referrer is listed twice"
    return listed


def test_every_put_with_a_subject_is_answered_with_oci_subject(referred: Referred) -> None:
    assert referred.oci_subject == {
        **{digest: str(SUBJECT.digest) for digest in EXPECTED},
        str(ORPHAN.digest): str(NEVER_PUSHED.digest),
    }


def test_the_referrers_of_a_manifest_are_every_manifest_of_the_repository_whose_subject_it_is(
    client: httpx.Client, referred: Referred
) -> None:
    listed = _referrers(client.get(f"/v2/{referred.name}/referrers/{SUBJECT.digest}"))
    assert set(listed) == set(EXPECTED)


@pytest.mark.parametrize("digest", list(EXPECTED), ids=lambda d: d[7:19])
def test_a_referrer_descriptor_carries_its_type_size_artifact_type_and_annotations(
    client: httpx.Client, referred: Referred, digest: str
) -> None:
    listed = _referrers(client.get(f"/v2/{referred.name}/referrers/{SUBJECT.digest}"))
    entry = listed[digest]
    expected = EXPECTED[digest]
    assert {key: entry.get(key) for key in ("mediaType", "digest", "size")} == {
        key: expected[key] for key in ("mediaType", "digest", "size")
    }
    assert entry.get("artifactType") == expected.get("artifactType")
    assert entry.get("annotations") == expected["annotations"]


def test_the_artifact_type_filter_lists_only_that_type_and_says_it_was_applied(
    client: httpx.Client, referred: Referred
) -> None:
    response = client.get(
        f"/v2/{referred.name}/referrers/{SUBJECT.digest}", params={"artifactType": SBOM}
    )
    assert set(_referrers(response)) == {str(SBOM_1.digest), str(SBOM_2.digest)}
    assert response.headers["oci-filters-applied"] == "artifactType"


def test_the_artifact_type_filter_applies_the_config_type_of_a_manifest_without_one(
    client: httpx.Client, referred: Referred
) -> None:
    response = client.get(
        f"/v2/{referred.name}/referrers/{SUBJECT.digest}",
        params={"artifactType": SIGNATURE_CONFIG},
    )
    assert set(_referrers(response)) == {str(CONFIG_TYPED.digest)}
    assert response.headers["oci-filters-applied"] == "artifactType"


def test_an_artifact_type_nothing_has_lists_nothing(
    client: httpx.Client, referred: Referred
) -> None:
    response = client.get(
        f"/v2/{referred.name}/referrers/{SUBJECT.digest}",
        params={"artifactType": "application/vnd.example.nothing"},
    )
    assert _referrers(response) == {}
    assert response.headers["oci-filters-applied"] == "artifactType"


def test_the_referrers_of_a_subject_never_pushed_are_listed(
    client: httpx.Client, referred: Referred
) -> None:
    listed = _referrers(client.get(f"/v2/{referred.name}/referrers/{NEVER_PUSHED.digest}"))
    assert set(listed) == {str(ORPHAN.digest)}


@pytest.mark.parametrize(
    "digest",
    [digest_of(b"discovery: nothing refers to this"), str(EMPTY_JSON.digest)],
    ids=["unknown-digest", "a-blob-nothing-refers-to"],
)
def test_a_digest_nothing_refers_to_has_an_empty_index_200(
    client: httpx.Client, referred: Referred, digest: str
) -> None:
    assert _referrers(client.get(f"/v2/{referred.name}/referrers/{digest}")) == {}


def test_a_manifest_without_referrers_has_an_empty_index_200(
    client: httpx.Client, referred: Referred
) -> None:
    listed = _referrers(client.get(f"/v2/{referred.name}/referrers/{SBOM_2.digest}"))
    assert listed == {}


@pytest.mark.parametrize("digest", ["sha256:nothex", "sha256:" + "0" * 10, "nodigest"])
def test_referrers_of_a_malformed_digest_is_400(
    client: httpx.Client, referred: Referred, digest: str
) -> None:
    response = client.get(f"/v2/{referred.name}/referrers/{digest}")
    assert response.status_code == 400
    oci_error(response)
