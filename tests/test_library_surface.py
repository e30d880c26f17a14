"""The library as its users meet it: errors in its own words, reprs that say what an object
is, HTML for notebooks, a progress display, and the documented exports."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from fixtures.registry import Registry

import ocimirror
from ocimirror import progress as progress_module
from ocimirror.errors import InvalidDigest, InvalidError, OcimirrorError, RepositoryNotFound
from ocimirror.testing import random_image, write_layout

DOCS = Path(__file__).parent.parent / "docs" / "api.md"
SECRET = "s3cr3t-pa55word"


@pytest.fixture
def filled(registry: ocimirror.Registry, tmp_path: Path) -> ocimirror.Repository:
    """A push repository with two versions, a stored remote and a distribution."""
    registry.create_remote(
        name="up", url=f"https://bob:{SECRET}@registry.test", upstream_name="library/app"
    )
    repo = registry.create_repository("app")
    image = random_image(seed="surface")
    write_layout(tmp_path / "layout", {"v1": image})
    repo.import_layout(tmp_path / "layout")
    repo.tag("v1-copy", image.digest)
    registry.create_distribution("app", base_path="app", repository="app")
    return repo


# -- errors in the library's own words ------------------------------------------------------

WRONG_CALLS: dict[str, Callable[[ocimirror.Registry, ocimirror.Repository], Any]] = {
    "repository(5)": lambda reg, repo: reg.repository(5),
    "create_repository(description=5)": lambda reg, repo: reg.create_repository("x", description=5),
    "create_repository(remote=5)": lambda reg, repo: reg.create_repository("x", remote=5),
    "delete_repository(None)": lambda reg, repo: reg.delete_repository(None),
    "remote(5)": lambda reg, repo: reg.remote(5),
    "create_remote(unknown field)": lambda reg, repo: reg.create_remote(
        name="r", url="https://a.test", upstream_name="a", colour="red"
    ),
    "update_remote(unknown field)": lambda reg, repo: reg.update_remote("up", colour="red"),
    "update_remote(5)": lambda reg, repo: reg.update_remote(5, url="https://b.test"),
    "create_distribution(repository_version='1')": lambda reg, repo: reg.create_distribution(
        "d", base_path="d", repository="app", repository_version="1"
    ),
    "create_distribution(private='yes')": lambda reg, repo: reg.create_distribution(
        "d", base_path="d", repository="app", private="yes"
    ),
    "create_distribution(name=5)": lambda reg, repo: reg.create_distribution(5, base_path="d"),
    "distribution(5)": lambda reg, repo: reg.distribution(5),
    "update_distribution(unknown field)": lambda reg, repo: reg.update_distribution(
        "app", colour="red"
    ),
    "update_distribution(repository_version='x')": lambda reg, repo: reg.update_distribution(
        "app", repository_version="x"
    ),
    "user(5)": lambda reg, repo: reg.user(5),
    "create_user(admin='yes')": lambda reg, repo: reg.create_user(
        "u", password="pw-long-enough", admin="yes"
    ),
    "repo.version('1')": lambda reg, repo: repo.version("1"),
    "repo.tags(version='x')": lambda reg, repo: repo.tags("x"),
    "repo.tags(n='x')": lambda reg, repo: repo.tags(n="x"),
    "repo.tags(n=-1)": lambda reg, repo: repo.tags(n=-1),
    "repo.resolve(5)": lambda reg, repo: repo.resolve(5),
    "repo.update(unknown field)": lambda reg, repo: repo.update(colour="red"),
    "repo.update(description=5)": lambda reg, repo: repo.update(description=5),
    "repo.delete_version('x')": lambda reg, repo: repo.delete_version("x"),
    "repo.has_manifest('x')": lambda reg, repo: repo.has_manifest("x"),
    "repo.add(tags=[...])": lambda reg, repo: repo.add(tags=["v1"]),
    "repo.tag(digest='x')": lambda reg, repo: repo.tag("t", "not-a-digest"),
    "repo.sync(remote=5)": lambda reg, repo: repo.sync(5),
    "repo.sync(policy='mirror')": lambda reg, repo: repo.sync("up", policy="mirror"),
    "repo.copy_tags(5)": lambda reg, repo: repo.copy_tags(5),
    "repo.export_layout(version='x')": lambda reg, repo: repo.export_layout("out", version="x"),
    "create_pull_through_remote(unknown field)": lambda reg, repo: reg.create_pull_through_remote(
        name="p", url="https://a.test", colour="red"
    ),
    "create_pull_through_distribution(remote=5)": lambda reg, repo: (
        reg.create_pull_through_distribution("pd", base_path="cache", remote=5)
    ),
    "put_blob(5)": lambda reg, repo: reg.put_blob(5),
    "orphan_cleanup(grace='1h')": lambda reg, repo: reg.orphan_cleanup(grace="1h"),
    "sync_all(policy='mirror')": lambda reg, repo: reg.sync_all(policy="mirror"),
}


@pytest.mark.parametrize("call", WRONG_CALLS.values(), ids=WRONG_CALLS.keys())
def test_a_wrong_argument_is_an_ocimirror_error_on_every_backend(
    registry: ocimirror.Registry, filled: ocimirror.Repository, call: Any
) -> None:
    """SQLite and PostgreSQL drivers refuse wrong types differently (or not at all); the
    library refuses them first, in its own words, naming the argument."""
    with pytest.raises(InvalidError) as caught:
        call(registry, filled)
    message = str(caught.value)
    assert "sqlalchemy" not in message.lower() and "asyncpg" not in message
    assert re.search(r"must be|has no field|digest|tag", message), message


def test_nothing_is_written_by_a_refused_call(
    registry: ocimirror.Registry, filled: ocimirror.Repository
) -> None:
    before = (filled.latest_version(), registry.distributions(), registry.remotes())
    for call in WRONG_CALLS.values():
        with pytest.raises(OcimirrorError):
            call(registry, filled)
    assert (filled.latest_version(), registry.distributions(), registry.remotes()) == before


def test_remote_arguments_take_a_remote_or_its_name(
    registry: ocimirror.Registry, filled: ocimirror.Repository
) -> None:
    remote = registry.remote("up")
    mirror = registry.create_repository("mirror", remote=remote)
    assert mirror.remote == "up"
    assert filled.update(remote=remote).remote == "up"
    assert filled.update(remote=None).remote is None
    with pytest.raises(ocimirror.RemoteNotFound):
        registry.create_repository(
            "other",
            remote=ocimirror.Remote(name="unstored", url="https://a.test", upstream_name="a"),
        )


def test_distributions_take_repositories_and_versions_as_objects(
    registry: ocimirror.Registry, filled: ocimirror.Repository
) -> None:
    first = filled.version(1)
    pinned = registry.create_distribution("pinned", base_path="pinned", repository_version=first)
    assert (pinned.repository, pinned.repository_version) == ("app", 1)
    assert pinned.serves == "version 1 of 'app'"
    latest = registry.update_distribution("pinned", repository_version=None)
    assert latest.serves == "latest version of 'app'"
    other = registry.create_repository("other")
    moved = registry.update_distribution("pinned", repository=other)
    assert moved.repository == "other"
    with pytest.raises(InvalidError, match="a version of 'app', not of 'other'"):
        registry.create_distribution(
            "mixed", base_path="mixed", repository=other, repository_version=first
        )


def test_copying_takes_a_repository_name_and_single_names(
    registry: ocimirror.Registry, filled: ocimirror.Repository
) -> None:
    target = registry.create_repository("target")
    target.copy_tags("app", "v1")
    assert list(target.tags()) == ["v1"]
    with pytest.raises(RepositoryNotFound):
        target.copy_tags("nope")
    digest = filled.resolve("v1")
    copied = registry.create_repository("copied")
    copied.copy_manifests(filled, str(digest))
    assert copied.manifests() == [digest]
    with pytest.raises(InvalidDigest):
        copied.copy_manifests(filled, "sha256:short")


def test_removing_one_tag_by_name_is_not_removing_its_letters(
    filled: ocimirror.Repository,
) -> None:
    filled.remove(tags="v1-copy")
    assert list(filled.tags()) == ["v1"]


def test_orphan_cleanup_takes_seconds_too(registry: ocimirror.Registry) -> None:
    assert registry.orphan_cleanup(grace=3600) == registry.orphan_cleanup(grace=timedelta(hours=1))


# -- what an object is -----------------------------------------------------------------------


def test_reprs_say_blocking_or_async_and_what_kind_of_repository(
    registry: ocimirror.Registry, filled: ocimirror.Repository
) -> None:
    assert repr(registry).startswith("<Registry metadata=")
    assert repr(registry.aio).startswith("<AsyncRegistry metadata=")
    assert repr(filled) == "<Repository 'app' latest_version=2 (push)>"
    aio = registry.aio
    assert repr(registry._portal.call(aio.repository("app"))).startswith("<AsyncRepository 'app'")
    waiting = registry.create_repository("mirror", remote="up")
    assert repr(waiting) == "<Repository 'mirror' latest_version=0 (remote 'up', not synced yet)>"
    assert waiting.kind == "remote 'up', not synced yet"
    assert SECRET not in repr(registry) + repr(registry.remote("up"))


def test_html_reprs_of_repositories_remotes_distributions_and_version_lists(
    registry: ocimirror.Registry, filled: ocimirror.Repository
) -> None:
    repo_html = filled._repr_html_()
    assert repo_html.startswith("<b>Repository app</b><table>") and "push" in repo_html
    remote_html = registry.remote("up")._repr_html_()
    assert "Remote up" in remote_html and "library/app" in remote_html
    assert SECRET not in remote_html and "bob:********@registry.test" in remote_html
    versions = filled.versions()
    assert isinstance(versions, ocimirror.VersionList) and isinstance(versions, list)
    assert [v.number for v in versions] == [2, 1, 0]
    table = versions._repr_html_()
    assert "app: 3 versions" in table and table.count("<tr>") == 4
    dist_html = registry.distribution("app")._repr_html_()
    assert "latest version of &#x27;app&#x27;" in dist_html


def test_html_is_escaped(registry: ocimirror.Registry) -> None:
    repo = registry.create_repository("<script>alert(1)</script>", description="a & b")
    shown = repo._repr_html_() + repo.versions()._repr_html_()
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "a &amp; b" in shown


# -- syncs in notebooks: results, progress ---------------------------------------------------


@pytest.fixture
def upstream(docker_registry: Registry, registry_name: str) -> dict[str, Any]:
    images = {tag: random_image(seed=f"{registry_name}-{tag}") for tag in ("a", "b", "c")}
    for tag, image in images.items():
        docker_registry.push(registry_name, image, tag)
    return {"url": docker_registry.url, "name": registry_name}


def test_progress_and_result_agree_on_bytes_and_the_result_shows_as_html(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    registry.create_remote(name="src", url=upstream["url"], upstream_name=upstream["name"])
    repo = registry.create_repository("m", remote="src")
    seen: list[ocimirror.SyncProgress] = []
    result = repo.sync(progress=lambda p: seen.append(attrs.evolve(p)))
    assert seen[-1].phase == "done"
    assert seen[-1].bytes_downloaded == result.bytes_downloaded > 0
    assert [p.bytes_downloaded for p in seen] == sorted(p.bytes_downloaded for p in seen)
    shown = result._repr_html_()
    assert "Sync of m" in shown and "complete" in shown and "m version 1" in shown
    assert "m: complete, 3 tags -> version 1 (new)" in str(result)
    again = repo.sync(progress=False)
    assert again.bytes_downloaded < result.bytes_downloaded  # counted per sync, not per client


def test_a_notebook_gets_a_progress_bar_by_default(
    registry: ocimirror.Registry, upstream: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[progress_module.SyncBars] = []
    real_call = progress_module.SyncBars.__call__

    def spy(self: progress_module.SyncBars, p: ocimirror.SyncProgress) -> None:
        drawn.append(self)
        real_call(self, p)

    monkeypatch.setattr(progress_module.SyncBars, "__call__", spy)
    registry.create_remote(name="src", url=upstream["url"], upstream_name=upstream["name"])
    repo = registry.create_repository("m", remote="src")

    monkeypatch.setattr(progress_module, "in_notebook", lambda: False)
    repo.sync()
    assert drawn == []  # a script prints nothing unless asked

    monkeypatch.setattr(progress_module, "in_notebook", lambda: True)
    repo.sync(mirror=True)
    assert drawn and all(bars.notebook for bars in drawn)
    drawn.clear()
    repo.sync(progress=False)
    assert drawn == []
    registry.sync_all(workers=1)
    assert drawn and all(bars.combined for bars in drawn)


def test_in_notebook_is_false_outside_a_kernel() -> None:
    assert progress_module.in_notebook() is False


# -- exports and documentation ---------------------------------------------------------------


def test_one_name_opens_a_registry() -> None:
    assert ocimirror.open.__module__ == "ocimirror.blocking"
    assert "open_registry" not in ocimirror.__all__
    with pytest.raises(AttributeError):
        ocimirror.open_registry  # noqa: B018


DOCUMENTED = [
    ocimirror.Remote,
    ocimirror.SyncPolicy,
    ocimirror.SyncResult,
    ocimirror.SyncProgress,
    ocimirror.Distribution,
    ocimirror.RepositoryVersion,
    ocimirror.ContentSummary,
    ocimirror.VersionDiff,
    ocimirror.PullThroughRemote,
    ocimirror.PullThroughDistribution,
    ocimirror.ExportReport,
    ocimirror.CleanupReport,
    ocimirror.RepairReport,
]


@pytest.mark.parametrize("cls", DOCUMENTED, ids=lambda c: c.__name__)
def test_every_field_of_the_public_values_is_in_the_api_docs(cls: type) -> None:
    text = DOCS.read_text()
    section = text.split(f"### `{cls.__name__}`", 1)
    assert len(section) == 2, f"docs/api.md has no section for {cls.__name__}"
    body = section[1].split("\n### ", 1)[0]
    missing = [f.name for f in attrs.fields(cls) if f"`{f.name}`" not in body]
    assert not missing, f"{cls.__name__} fields missing from docs/api.md: {missing}"


def test_every_export_is_named_in_the_api_docs() -> None:
    text = DOCS.read_text()
    missing = [n for n in ocimirror.__all__ if f"`{n}`" not in text and not n.startswith("_")]
    assert not missing, f"exports missing from docs/api.md: {missing}"


def test_a_refused_argument_never_shows_what_it_holds(registry: ocimirror.Registry) -> None:
    """A mapping passed where a name goes may carry a password: the error names its type."""
    with pytest.raises(InvalidError) as caught:
        registry.create_repository("x", remote={"name": "up", "password": SECRET})
    assert "got dict" in str(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(InvalidError) as caught:
        registry.update_distribution("nope", repository={"token": SECRET})
    assert SECRET not in str(caught.value)
