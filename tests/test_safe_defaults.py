"""Safe by default: a mirror sync that would leave no tag is refused, tag patterns are what
they look like."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures.registry import Registry

import ocimirror
from ocimirror.errors import EmptyMirror, InvalidError
from ocimirror.ingest import Ingest
from ocimirror.pullthrough import PullThroughRemote
from ocimirror.testing import random_image


@pytest.fixture
def upstream(docker_registry: Registry, registry_name: str) -> dict[str, Any]:
    """An upstream repository with tags v1.0, v1.1 and v2.0."""
    images = {tag: random_image(seed=f"{registry_name}-{tag}") for tag in ("v1.0", "v1.1", "v2.0")}
    for tag, image in images.items():
        docker_registry.push(registry_name, image, tag)
    return {"url": docker_registry.url, "name": registry_name, "images": images}


def mirror_of(reg: ocimirror.Registry, upstream: dict[str, Any], **fields: Any) -> Any:
    reg.create_remote(name="up", url=upstream["url"], upstream_name=upstream["name"], **fields)
    return reg.create_repository("mirror", remote="up")


def test_a_mirror_sync_whose_filters_match_nothing_is_refused_and_publishes_nothing(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    repo = mirror_of(registry, upstream)
    first = repo.sync(mirror=True)
    assert first.version.number == 1 and len(repo.tags()) == 3

    registry.update_remote("up", include_tags=["zzz*"])  # a typo
    with pytest.raises(EmptyMirror) as caught:
        repo.sync(mirror=True)
    message = str(caught.value)
    assert "include_tags=['zzz*']" in message and "exclude_tags=[]" in message
    assert "match none of the 3 tags" in message and "v1.0" in message
    assert "allow_empty" in message and "--allow-empty" in message
    assert repo.latest_version().number == 1 and len(repo.tags()) == 3

    emptied = repo.sync(mirror=True, allow_empty=True)
    assert emptied.created and emptied.version.number == 2 and repo.tags() == {}
    assert repo.tags(1) == {t: str(i.digest) for t, i in upstream["images"].items()}


def test_exclude_filters_that_leave_nothing_are_refused_too(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    repo = mirror_of(registry, upstream, exclude_tags="v*")
    with pytest.raises(EmptyMirror, match=r"exclude_tags=\['v\*'\]"):
        repo.sync(policy=ocimirror.SyncPolicy(mirror=True))
    assert repo.latest_version().number == 0


def test_an_additive_sync_matching_nothing_changes_nothing_without_error(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    repo = mirror_of(registry, upstream, include_tags="zzz*")
    result = repo.sync()
    assert not result.created and result.version.number == 0 and result.tags == 0


def test_sync_all_reports_the_refusal_in_place_of_the_result(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    mirror_of(registry, upstream, include_tags=["nothing-like-this"])
    results = registry.sync_all(mirror=True, workers=1)
    assert isinstance(results["mirror"], EmptyMirror)
    results = registry.sync_all(mirror=True, allow_empty=True, workers=1)
    outcome = results["mirror"]
    assert isinstance(outcome, ocimirror.SyncResult) and outcome.tags == 0


def test_the_cli_refuses_with_the_filters_named_and_allow_empty_does_it(
    cli: Any, upstream: dict[str, Any]
) -> None:
    status, _, err = cli(
        "remote", "create", "--name", "typo", "--url", upstream["url"],
        "--upstream-name", upstream["name"], "--include-tags", "v9*",
    )  # fmt: skip
    assert status == 0, err
    cli("repository", "create", "--name", "m", "--remote", "typo")
    status, out, err = cli("repository", "sync", "--name", "m", "--mirror", "--no-progress")
    assert status != 0 and out is None
    assert "include_tags=['v9*']" in err and "--allow-empty" in err
    assert "Traceback" not in err
    status, out, err = cli(
        "repository", "sync", "--name", "m", "--mirror", "--allow-empty", "--no-progress"
    )
    assert status == 0, err
    assert out["sync"]["tags"] == 0


def test_publishing_a_mirror_version_without_tags_over_tagged_content_needs_allow_empty(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    """The other way to empty a mirror: nothing left upstream. The one ingestion path refuses
    it, inside the version's transaction."""
    repo = mirror_of(registry, upstream)
    repo.sync(mirror=True)
    aio = registry.aio
    ingest = Ingest(aio.metadata, aio.blobs)

    async def publish(**options: Any) -> Any:
        from ocimirror.backends.metadata import ContentBatch

        return await ingest.publish("mirror", ContentBatch(), tags={}, mirror=True, **options)

    loop_call = registry._portal.call
    with pytest.raises(EmptyMirror, match="would remove all 3 of its tags"):
        loop_call(publish())
    assert repo.latest_version().number == 1
    published = loop_call(publish(allow_empty=True))
    assert published.created and repo.tags() == {}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("v1.1", ("v1.1",)),
        (["v1.*", "latest"], ("v1.*", "latest")),
        (("a", "a", "b"), ("a", "b")),
        ({"only"}, ("only",)),
        (None, ()),
        ([], ()),
    ],
)
def test_tag_patterns_a_string_is_one_pattern(given: Any, stored: tuple[str, ...]) -> None:
    remote = ocimirror.Remote(
        name="r", url="https://example.test", upstream_name="x", include_tags=given
    )
    assert remote.include_tags == stored
    excluded = ocimirror.Remote(
        name="r", url="https://example.test", upstream_name="x", exclude_tags=given
    )
    assert excluded.exclude_tags == stored


@pytest.mark.parametrize("given", [5, b"v1", {"v1": 1}.keys(), [""], ["ok", 3], [None]])
def test_tag_patterns_anything_else_is_an_error_that_says_what_it_got(given: Any) -> None:
    with pytest.raises(InvalidError, match="tag patterns must be"):
        ocimirror.Remote(
            name="r", url="https://example.test", upstream_name="x", include_tags=given
        )
    with pytest.raises(InvalidError, match="name patterns must be"):
        PullThroughRemote(name="p", url="https://example.test", include_names=given)


def test_patterns_are_validated_on_update_too(registry: ocimirror.Registry) -> None:
    registry.create_remote(name="r", url="https://example.test", upstream_name="x")
    assert registry.update_remote("r", include_tags="v1.1").include_tags == ("v1.1",)
    assert registry.remote("r").include_tags == ("v1.1",)
    with pytest.raises(InvalidError, match="got int 7"):
        registry.update_remote("r", exclude_tags=7)
    assert registry.remote("r").exclude_tags == ()


def test_a_string_pattern_selects_the_tag_it_names(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    repo = mirror_of(registry, upstream, include_tags="v1.1")
    result = repo.sync(mirror=True)
    assert result.tags == 1 and list(repo.tags()) == ["v1.1"]
