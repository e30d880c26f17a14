"""The command line: Pulp CLI verbs, JSON on stdout, one-line errors, exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ocimirror.testing import random_image, write_layout


def test_repository_lifecycle(cli: Any) -> None:
    status, repo, _ = cli("repository", "create", "--name", "foo", "--retain-repo-versions", "3")
    assert status == 0 and repo["name"] == "foo" and repo["retain_repo_versions"] == 3
    status, listed, _ = cli("repository", "list")
    assert [r["name"] for r in listed] == ["foo"]
    status, shown, _ = cli("repository", "show", "--name", "foo")
    assert shown["latest_version"] == 0
    status, versions, _ = cli("repository", "version", "list", "--repository", "foo")
    assert versions == [
        {
            "repository": "foo",
            "number": 0,
            "base_version": None,
            "created": versions[0]["created"],
            "content_summary": {"added": {}, "removed": {}, "present": {}},
        }
    ]
    status, updated, _ = cli("repository", "update", "--name", "foo", "--description", "d")
    assert updated["description"] == "d"
    assert cli("repository", "destroy", "--name", "foo")[0] == 0
    assert cli("repository", "list")[1] == []


def test_errors_are_one_line_and_non_zero(cli: Any) -> None:
    status, out, err = cli("repository", "show", "--name", "nope")
    assert status == 1 and out is None
    assert err.strip() == "Error: no repository named 'nope'"
    cli("repository", "create", "--name", "foo")
    status, _, err = cli("repository", "create", "--name", "foo")
    assert status == 1 and err.count("\n") == 1 and "already exists" in err


def test_usage_errors_exit_2(cli: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("repository", "create")
    assert exc.value.code == 2
    status, _, err = cli("repository", "sync")
    assert status == 2 and "--name" in err


def test_remote_patterns_repeat_or_come_as_json_and_update_replaces(cli: Any) -> None:
    status, remote, _ = cli(
        "remote", "create", "--name", "hub", "--url", "https://registry-1.docker.io",
        "--upstream-name", "library/alpine", "--include-tags", "3.*",
        "--include-tags", '["edge", "latest"]', "--exclude-tags", "*-rc*",
        "--username", "me", "--password", "s3cret", "--no-tls-validation",
    )  # fmt: skip
    assert status == 0
    assert remote["include_tags"] == ["3.*", "edge", "latest"]
    assert remote["exclude_tags"] == ["*-rc*"]
    assert remote["tls_validation"] is False
    assert remote["password"] == "********"
    _, updated, _ = cli("remote", "update", "--name", "hub", "--include-tags", "[]")
    assert updated["include_tags"] == [] and updated["exclude_tags"] == ["*-rc*"]
    _, shown, _ = cli("remote", "show", "--name", "hub")
    assert "s3cret" not in json.dumps(shown)
    status, _, err = cli("remote", "update", "--name", "hub", "--include-tags", "[oops")
    assert status == 2 and "JSON" in err
    status, updated, _ = cli("remote", "update", "--name", "hub", "--policy", "on_demand")
    assert status == 0 and updated["policy"] == "on_demand"
    assert cli("remote", "destroy", "--name", "hub")[0] == 0


def test_layout_import_export_and_distributions(cli: Any, tmp_path: Path) -> None:
    image = random_image(seed="cli")
    write_layout(tmp_path / "in", {"v1": image})
    cli("repository", "create", "--name", "foo")
    status, version, _ = cli(
        "repository", "import", "--name", "foo", "--path", str(tmp_path / "in")
    )
    assert status == 0 and version["number"] == 1
    assert version["content_summary"]["present"] == {
        "container.blob": 3,
        "container.manifest": 1,
        "container.tag": 1,
    }
    status, report, _ = cli(
        "repository", "export", "--name", "foo", "--path", str(tmp_path / "out.tar"), "--tar"
    )
    assert status == 0 and report["tags"] == {"v1": str(image.digest)}
    status, dist, _ = cli(
        "distribution", "create", "--name", "foo", "--base-path", "library/foo",
        "--repository", "foo",
    )  # fmt: skip
    assert status == 0 and dist == {
        "name": "foo",
        "base_path": "library/foo",
        "repository": "foo",
        "repository_version": None,
        "private": False,
        "description": None,
    }
    _, pinned, _ = cli("distribution", "update", "--name", "foo", "--repository", "foo",
                       "--version", "1")  # fmt: skip
    assert pinned["repository_version"] == 1
    status, _, err = cli("repository", "version", "destroy", "--repository", "foo",
                         "--version", "1")  # fmt: skip
    assert status == 1 and "distribution" in err


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ocimirror", "--home", str(tmp_path), "repository", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == []
