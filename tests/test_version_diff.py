"""Version diffs (``repo.diff``, ``repository version diff``) and rollback by pinning a
distribution (``distribution update --version N``, then ``--version latest``)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

import ocimirror
from ocimirror.errors import InvalidError, VersionNotFound
from ocimirror.testing import random_image, random_layer, write_layout
from ocimirror.versions import TagMove, VersionDiff

BASE = random_layer(2048, seed="diff-base")
ONE = random_image(seed="diff-1", base=[BASE], layers=1)
TWO = random_image(seed="diff-2", base=[BASE], layers=1)
THREE = random_image(seed="diff-3", layers=2)
D1, D2, D3 = str(ONE.digest), str(TWO.digest), str(THREE.digest)


@pytest.fixture
def repo(registry: ocimirror.Registry, tmp_path: Path) -> ocimirror.Repository:
    """Versions 1-6 of ``r``: import, tag, move, untag, remove an image, import again."""
    write_layout(tmp_path / "one", {"v1": ONE, "latest": ONE, "stable": ONE})
    write_layout(tmp_path / "two", {"v2": TWO})
    write_layout(tmp_path / "three", {"v3": THREE})
    repo = registry.create_repository("r")
    assert repo.import_layout(tmp_path / "one").number == 1
    assert repo.import_layout(tmp_path / "two").number == 2
    assert repo.tag("latest", D2).number == 3
    assert repo.untag("v1").number == 4
    assert repo.remove(tags=["stable"], manifests=[D1]).number == 5
    assert repo.import_layout(tmp_path / "three").number == 6
    return repo


def set_diff(repo: ocimirror.Repository, a: int, b: int) -> dict[str, dict[str, int]]:
    """The counts a diff must give, from what each version lists."""
    held = {
        n: {
            "container.tag": set(repo.tags(n).items()),
            "container.manifest": set(repo.manifests(n)),
            "container.blob": set(repo.blobs(n)),
        }
        for n in (a, b)
    }
    out: dict[str, dict[str, int]] = {"added": {}, "removed": {}}
    for ct in held[a]:
        if added := len(held[b][ct] - held[a][ct]):
            out["added"][ct] = added
        if removed := len(held[a][ct] - held[b][ct]):
            out["removed"][ct] = removed
    return out


def test_tags_added_removed_and_moved_with_their_digests(repo: ocimirror.Repository) -> None:
    diff = repo.diff(1)  # to the latest, 6
    assert isinstance(diff, VersionDiff)
    assert (diff.repository, diff.base_version, diff.version) == ("r", 1, 6)
    assert diff.tags_added == {"v2": D2, "v3": D3}
    assert diff.tags_removed == {"stable": D1, "v1": D1}
    assert diff.tags_moved == {"latest": TagMove(old=D1, new=D2)}
    old, new = diff.tags_moved["latest"]
    assert (old, new) == (D1, D2)
    assert diff.content_added == {"container.blob": 5, "container.manifest": 2, "container.tag": 3}
    assert diff.content_removed == {
        "container.blob": 2,
        "container.manifest": 1,
        "container.tag": 3,
    }
    assert diff and not diff.unchanged

    assert repo.diff(2, 3).tags_moved == {"latest": TagMove(D1, D2)}
    untag = repo.diff(3, 4)
    assert untag.tags_removed == {"v1": D1} and not untag.tags_added and not untag.tags_moved
    assert untag.content_removed == {"container.tag": 1} and untag.content_added == {}
    assert repo.diff(0, 1).tags_added == {"latest": D1, "stable": D1, "v1": D1}


def test_counts_are_the_set_difference_of_any_two_versions(repo: ocimirror.Repository) -> None:
    for a, b in itertools.product(range(7), repeat=2):
        diff = repo.diff(a, b)
        expected = set_diff(repo, a, b)
        assert dict(diff.content_added) == expected["added"], (a, b)
        assert dict(diff.content_removed) == expected["removed"], (a, b)
        if b == a + 1:  # next to each other: what the version's own summary says
            summary = repo.version(b).content_summary
            assert (diff.content_added, diff.content_removed) == (summary.added, summary.removed)


def test_a_version_against_itself_is_unchanged(repo: ocimirror.Repository) -> None:
    for n in (0, 3, 6):
        diff = repo.diff(n, n)
        assert diff.unchanged and not diff
        assert diff.to_json() == {
            "base_version": n,
            "content_added": {},
            "content_removed": {},
            "repository": "r",
            "tags_added": {},
            "tags_moved": {},
            "tags_removed": {},
            "version": n,
        }
        assert str(diff) == f"r version {n} -> {n}: no changes"
    assert repo.diff(6).unchanged  # the latest against the latest


def test_the_reversed_diff_swaps_added_and_removed(repo: ocimirror.Repository) -> None:
    for a, b in ((1, 6), (2, 5), (0, 4)):
        forward, back = repo.diff(a, b), repo.diff(b, a)
        assert (back.base_version, back.version) == (b, a)
        assert back.tags_added == forward.tags_removed
        assert back.tags_removed == forward.tags_added
        assert back.tags_moved == {t: TagMove(m.new, m.old) for t, m in forward.tags_moved.items()}
        assert back.content_added == forward.content_removed
        assert back.content_removed == forward.content_added


def test_versions_are_numbers_or_repository_versions(
    registry: ocimirror.Registry, repo: ocimirror.Repository
) -> None:
    by_value = repo.diff(repo.version(2), repo.latest_version())
    assert by_value == repo.diff(2, 6) == repo.diff(2)
    for bad in ("1", 1.0, True, None, [1]):
        with pytest.raises(InvalidError):
            repo.diff(bad)
        with pytest.raises(InvalidError):
            repo.diff(0, bad if bad is not None else "6")
    other = registry.create_repository("other")
    with pytest.raises(InvalidError, match="other"):
        repo.diff(other.latest_version())
    for a, b in ((7, None), (0, 7), (-1, 2)):
        with pytest.raises(VersionNotFound):
            repo.diff(a, b)
    repo.delete_version(3)
    with pytest.raises(VersionNotFound):
        repo.diff(3)
    assert repo.diff(2, 4).tags_moved == {"latest": TagMove(D1, D2)}


def test_json_has_sorted_keys_and_str_reads(repo: ocimirror.Repository) -> None:
    data = repo.diff(2, 6).to_json()
    assert json.dumps(data) == json.dumps(data, sort_keys=True)
    assert data["tags_moved"] == {"latest": {"new": D2, "old": D1}}
    text = str(repo.diff(2, 6))
    assert text.splitlines()[0] == "r version 2 -> 6"
    assert f"  ~ latest  {D1} -> {D2}" in text
    assert f"  + v3  {D3}" in text and f"  - v1  {D1}" in text
    assert "container.manifest" in text


def test_the_html_repr_escapes_the_repository_name(
    registry: ocimirror.Registry, tmp_path: Path
) -> None:
    write_layout(tmp_path / "one", {"v1.0-rc_1": ONE})
    repo = registry.create_repository("<script>alert('x')</script> & co")
    repo.import_layout(tmp_path / "one")
    page = repo.diff(0)._repr_html_()
    assert "<script>" not in page and "'x'" not in page
    assert (
        "<b>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co version 0 -&gt; 1</b>"
        in page
    )
    assert f"<td>+</td><td>v1.0-rc_1</td><td></td><td>{D1}</td>" in page


def test_the_html_repr_lists_tags_and_counts(repo: ocimirror.Repository) -> None:
    page = repo.diff(1, 6)._repr_html_()
    assert page.startswith("<b>r version 1 -&gt; 6</b><table>")
    assert f"<td>~</td><td>latest</td><td>{D1}</td><td>{D2}</td>" in page
    assert "<tr><td>container.blob</td><td>5</td><td>2</td></tr>" in page


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli_repo(cli: Any, tmp_path: Path) -> Any:
    """Repository ``foo`` with versions 1 (v1, latest -> ONE) and 2 (v2, latest -> TWO)."""
    write_layout(tmp_path / "one", {"v1": ONE, "latest": ONE})
    write_layout(tmp_path / "two", {"v2": TWO, "latest": TWO})
    cli("repository", "create", "--name", "foo")
    for layout in ("one", "two"):
        status, _, err = cli(
            "repository", "import", "--name", "foo", "--path", str(tmp_path / layout)
        )
        assert status == 0, err
    return cli


def test_cli_version_diff_prints_the_json(cli_repo: Any) -> None:
    status, data, _ = cli_repo(
        "repository", "version", "diff", "--repository", "foo", "--base-version", "1"
    )
    assert status == 0 and data == {
        "base_version": 1,
        "content_added": {"container.blob": 2, "container.manifest": 1, "container.tag": 2},
        "content_removed": {"container.tag": 1},
        "repository": "foo",
        "tags_added": {"v2": D2},
        "tags_moved": {"latest": {"new": D2, "old": D1}},
        "tags_removed": {},
        "version": 2,
    }
    status, back, _ = cli_repo("repository", "version", "diff", "--repository", "foo",
                               "--base-version", "2", "--version", "0")  # fmt: skip
    assert status == 0 and back["tags_removed"] == {"latest": D2, "v1": D1, "v2": D2}
    status, _, err = cli_repo("repository", "version", "diff", "--repository", "foo",
                              "--base-version", "5")  # fmt: skip
    assert status == 1 and err.startswith("Error: ") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:  # no --base-version: argparse's usage error
        cli_repo("repository", "version", "diff", "--repository", "foo")
    assert exc.value.code == 2


def test_cli_rollback_pins_a_version_and_latest_unpins(cli_repo: Any) -> None:
    cli = cli_repo
    cli("distribution", "create", "--name", "d", "--base-path", "foo", "--repository", "foo")
    status, pinned, err = cli("distribution", "update", "--name", "d", "--version", "1")
    assert status == 0, err
    assert (pinned["repository"], pinned["repository_version"]) == ("foo", 1)
    status, pinned, _ = cli("distribution", "update", "--name", "d", "--version", "2")
    assert status == 0 and pinned["repository_version"] == 2
    status, _, err = cli("distribution", "update", "--name", "d", "--version", "9")
    assert status == 1 and "9" in err
    assert cli("distribution", "show", "--name", "d")[1]["repository_version"] == 2
    status, unpinned, _ = cli("distribution", "update", "--name", "d", "--version", "latest")
    assert status == 0 and unpinned["repository_version"] is None
    assert unpinned["repository"] == "foo"
    status, again, _ = cli("distribution", "update", "--name", "d", "--repository", "foo",
                           "--version", "1")  # fmt: skip
    assert status == 0 and again["repository_version"] == 1
    status, again, _ = cli("distribution", "update", "--name", "d", "--repository", "foo",
                           "--version", "latest")  # fmt: skip
    assert status == 0 and again["repository_version"] is None
    with pytest.raises(SystemExit) as exc:
        cli("distribution", "update", "--name", "d", "--version", "newest")
    assert exc.value.code == 2
    assert cli("distribution", "update", "--name", "d", "--repository", "")[0] == 0
    status, _, err = cli("distribution", "update", "--name", "d", "--version", "1")
    assert status == 2 and "--repository" in err


def test_update_distribution_with_no_version_unpins(registry: ocimirror.Registry) -> None:
    repo = registry.create_repository("r")
    repo.add(manifests=[])
    registry.create_distribution("d", base_path="r", repository="r", repository_version=0)
    assert registry.distribution("d").repository_version == 0
    unpinned = registry.update_distribution("d", repository_version=None)
    assert unpinned.repository_version is None and unpinned.repository == "r"
