"""Signature options of remotes and syncs: the sigstore URL (validated, its password masked),
trusted GPG and cosign keys (key text, shown as a count), ``SyncPolicy`` merging a remote's
keys, and the command line's ``--trust-gpg-key``, ``--trust-cosign-key`` and
``repository sync --signed-only``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import attrs
import pytest
from fixtures.signing import CosignKey

from ocimirror.cli import main
from ocimirror.errors import InvalidError, UpstreamError
from ocimirror.remote import Remote, SyncPolicy
from ocimirror.repository import AsyncRepository

MASK = "********"
SIGSTORE_PASSWORD = "s3cret"
SIGSTORE = f"https://user:{SIGSTORE_PASSWORD}@sigs.example/x"

#: ASCII-armored GPG public keys as text: what a remote keeps (their bodies are not checked
#: here; tests/signatures verifies with real ones).
GPG_A = (
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n"
    "mDMEZgpg-key-body-A-4f1c\n=abcd\n"
    "-----END PGP PUBLIC KEY BLOCK-----\n"
)
GPG_B = GPG_A.replace("body-A-4f1c", "body-B-8e2d")
GPG_C = GPG_A.replace("body-A-4f1c", "body-C-1a9b")


def remote(**fields: Any) -> Remote:
    values: dict[str, Any] = {
        "name": "hub",
        "url": "https://registry.example",
        "upstream_name": "library/app",
    }
    values.update(fields)
    return Remote(**values)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in a fresh home; returns (exit status, parsed stdout, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, Any, str, str]:
        status = main(["--home", str(tmp_path / "home"), *argv])
        out, err = capsys.readouterr()
        return status, (json.loads(out) if out.strip() else None), out, err

    return run


@pytest.fixture
def pem(cosign_key: CosignKey) -> str:
    """A cosign public key as PEM text."""
    return cosign_key.public_pem().decode("ascii")


@pytest.fixture
def other_pem(other_cosign_key: CosignKey) -> str:
    return other_cosign_key.public_pem().decode("ascii")


# -- the sigstore ------------------------------------------------------------------------------


def test_the_sigstore_password_never_shows(cli: Any) -> None:
    """Not in repr, not in to_json(), not in what ``remote create`` and ``remote show`` print;
    the user name stays, the password is masked. Only to_json(secrets=True) holds it."""
    r = remote(sigstore=SIGSTORE)
    assert SIGSTORE_PASSWORD not in repr(r)
    assert f"https://user:{MASK}@sigs.example/x" in repr(r)
    shown = r.to_json()
    assert SIGSTORE_PASSWORD not in json.dumps(shown)
    assert shown["sigstore"] == f"https://user:{MASK}@sigs.example/x"
    kept = r.to_json(secrets=True)
    assert kept["sigstore"] == SIGSTORE
    assert Remote.from_json(kept) == r

    status, created, out, err = cli(
        "remote", "create", "--name", "hub", "--url", "https://registry.example",
        "--upstream-name", "library/app", "--sigstore", SIGSTORE,
    )  # fmt: skip
    assert status == 0, err
    assert SIGSTORE_PASSWORD not in out + err
    assert created["sigstore"] == f"https://user:{MASK}@sigs.example/x"
    status, shown_cli, out, err = cli("remote", "show", "--name", "hub")
    assert status == 0
    assert SIGSTORE_PASSWORD not in out + err
    assert shown_cli["sigstore"] == f"https://user:{MASK}@sigs.example/x"
    status, listed, out, _ = cli("remote", "list")
    assert SIGSTORE_PASSWORD not in out
    assert [r["sigstore"] for r in listed] == [f"https://user:{MASK}@sigs.example/x"]


@pytest.mark.parametrize(
    "sigstore",
    [
        "https://sigs.example/x",
        "http://127.0.0.1:8080/sigstore/",
        "file:///var/lib/containers/sigstore",
        None,
    ],
)
def test_http_https_and_file_sigstores_are_accepted_as_they_are(sigstore: str | None) -> None:
    r = remote(sigstore=sigstore)
    assert r.sigstore == sigstore
    assert r.to_json()["sigstore"] == sigstore


@pytest.mark.parametrize(
    "sigstore",
    ["ftp://x", "sigs.example/x", "/var/lib/sigstore", "s3://bucket/sigs", "javascript:x"],
)
def test_other_sigstores_are_invalid(sigstore: str) -> None:
    with pytest.raises(InvalidError, match="sigstore"):
        remote(sigstore=sigstore)


def test_an_empty_sigstore_means_none_so_an_update_can_clear_it() -> None:
    assert remote(sigstore="").sigstore is None
    assert remote(sigstore="HTTPS://Sigs.Example/x").sigstore == "HTTPS://Sigs.Example/x"


def test_an_invalid_sigstore_error_masks_the_password() -> None:
    with pytest.raises(InvalidError) as caught:
        remote(sigstore=f"ftp://user:{SIGSTORE_PASSWORD}@sigs.example/x")
    assert SIGSTORE_PASSWORD not in str(caught.value)
    assert "ftp://user:" in str(caught.value)


def test_an_invalid_sigstore_is_refused_by_the_cli(cli: Any) -> None:
    """One line on stderr, non-zero, and no remote is made."""
    status, out, _, err = cli(
        "remote", "create", "--name", "hub", "--url", "https://registry.example",
        "--upstream-name", "library/app", "--sigstore", f"ftp://u:{SIGSTORE_PASSWORD}@x",
    )  # fmt: skip
    assert status == 1
    assert out is None
    assert "sigstore" in err
    assert SIGSTORE_PASSWORD not in err
    assert "Traceback" not in err
    assert cli("remote", "list")[1] == []


def test_an_update_that_sets_a_sigstore_masks_it_too(cli: Any) -> None:
    cli(
        "remote", "create", "--name", "hub", "--url", "https://registry.example",
        "--upstream-name", "library/app",
    )  # fmt: skip
    status, updated, out, _ = cli("remote", "update", "--name", "hub", "--sigstore", SIGSTORE)
    assert status == 0
    assert SIGSTORE_PASSWORD not in out
    assert updated["sigstore"] == f"https://user:{MASK}@sigs.example/x"


# -- trusted keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["trusted_gpg_keys", "trusted_cosign_keys"])
@pytest.mark.parametrize(
    "value",
    [
        "not a key",
        ["not a key"],
        [GPG_A, "not a key"],
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n",
        b"\xff\xfe not ascii",
        [42],
    ],
)
def test_what_is_not_key_text_is_invalid(field: str, value: Any) -> None:
    with pytest.raises(InvalidError):
        remote(**{field: value})
    with pytest.raises(InvalidError):
        SyncPolicy(**{field: value})


def test_keys_of_the_wrong_kind_are_invalid(pem: str) -> None:
    """A PEM key is not a GPG key, nor an armored GPG key a cosign key."""
    with pytest.raises(InvalidError, match="trusted_gpg_keys"):
        remote(trusted_gpg_keys=[pem])
    with pytest.raises(InvalidError, match="trusted_cosign_keys"):
        remote(trusted_cosign_keys=[GPG_A])


def test_keys_are_kept_as_text_from_str_or_bytes(pem: str) -> None:
    """One key or a list, str or ASCII bytes: a tuple of str, in order, shown in to_json."""
    r = remote(trusted_gpg_keys=GPG_A.encode(), trusted_cosign_keys=[pem.encode(), pem])
    assert r.trusted_gpg_keys == (GPG_A,)
    assert r.trusted_cosign_keys == (pem, pem)
    data = r.to_json()
    assert data["trusted_gpg_keys"] == [GPG_A]
    assert data["trusted_cosign_keys"] == [pem, pem]
    assert json.loads(json.dumps(data)) == data
    assert Remote.from_json(r.to_json(secrets=True)) == r


def test_a_remote_stored_before_trusted_keys_existed_still_loads() -> None:
    """JSON without the new fields: no trusted keys."""
    data = remote().to_json(secrets=True)
    del data["trusted_gpg_keys"], data["trusted_cosign_keys"]
    loaded = Remote.from_json(data)
    assert loaded.trusted_gpg_keys == ()
    assert loaded.trusted_cosign_keys == ()


def test_reprs_show_how_many_keys_not_the_keys(pem: str, other_pem: str) -> None:
    r = remote(trusted_gpg_keys=[GPG_A, GPG_B], trusted_cosign_keys=[pem])
    text = repr(r)
    assert "trusted_gpg_keys=<2 keys>" in text
    assert "trusted_cosign_keys=<1 key>" in text
    assert "body-A-4f1c" not in text and "body-B-8e2d" not in text
    assert "BEGIN" not in text
    assert pem.splitlines()[1] not in text

    policy = SyncPolicy(
        signed_only=True, trusted_gpg_keys=[GPG_C], trusted_cosign_keys=[pem, other_pem]
    )
    text = repr(policy)
    assert "trusted_gpg_keys=<1 key>" in text
    assert "trusted_cosign_keys=<2 keys>" in text
    assert "signed_only=True" in text
    assert "BEGIN" not in text and "body-C-1a9b" not in text

    empty = repr(SyncPolicy())
    assert "trusted_gpg_keys=<0 keys>" in empty


def test_a_policy_trusts_nothing_and_requires_nothing_by_default() -> None:
    policy = SyncPolicy()
    assert policy.signed_only is False
    assert policy.mirror is False
    assert policy.trusted_gpg_keys == ()
    assert policy.trusted_cosign_keys == ()
    assert policy.verifies is False
    assert SyncPolicy(signed_only=True).verifies is False
    assert SyncPolicy(trusted_gpg_keys=[GPG_A]).verifies is True


def test_with_remote_adds_the_remotes_keys_once_each(pem: str, other_pem: str) -> None:
    """The policy's keys first, then the remote's new ones; duplicates once; the other
    settings kept; the policy itself unchanged (it is frozen)."""
    policy = SyncPolicy(
        mirror=True, signed_only=True, trusted_gpg_keys=[GPG_A, GPG_B], trusted_cosign_keys=[pem]
    )
    r = remote(trusted_gpg_keys=[GPG_B, GPG_C, GPG_A], trusted_cosign_keys=[other_pem, pem])

    merged = policy.with_remote(r)

    assert merged.trusted_gpg_keys == (GPG_A, GPG_B, GPG_C)
    assert merged.trusted_cosign_keys == (pem, other_pem)
    assert merged.mirror is True and merged.signed_only is True
    assert merged.verifies is True
    assert policy.trusted_gpg_keys == (GPG_A, GPG_B)
    assert policy.trusted_cosign_keys == (pem,)


def test_with_remote_of_a_default_policy_takes_the_remotes_keys() -> None:
    merged = SyncPolicy().with_remote(remote(trusted_gpg_keys=[GPG_A, GPG_A]))
    assert merged.trusted_gpg_keys == (GPG_A,)
    assert merged.trusted_cosign_keys == ()
    assert merged.verifies is True
    assert SyncPolicy().with_remote(remote()) == SyncPolicy()


def test_policies_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        SyncPolicy().signed_only = True  # type: ignore[misc]


# -- the command line --------------------------------------------------------------------------


def create_args(*extra: str) -> list[str]:
    return [
        "remote", "create", "--name", "hub", "--url", "https://registry.example",
        "--upstream-name", "library/app", *extra,
    ]  # fmt: skip


def test_trust_cosign_key_stores_the_pem_and_an_empty_update_clears_it(
    cli: Any, tmp_path: Path, pem: str, other_pem: str
) -> None:
    """``--trust-cosign-key FILE`` (repeatable) stores the keys' text; ``remote show`` prints
    it; an update without the option keeps it; ``--trust-cosign-key ''`` clears it."""
    first = tmp_path / "cosign.pub"
    first.write_text(pem)
    second = tmp_path / "other.pub"
    second.write_text(other_pem)

    status, created, _, err = cli(
        *create_args("--trust-cosign-key", str(first), "--trust-cosign-key", str(second))
    )
    assert status == 0, err
    assert created["trusted_cosign_keys"] == [pem, other_pem]
    assert created["trusted_gpg_keys"] == []

    status, shown, _, _ = cli("remote", "show", "--name", "hub")
    assert shown["trusted_cosign_keys"] == [pem, other_pem]

    status, kept, _, _ = cli("remote", "update", "--name", "hub", "--max-retries", "1")
    assert status == 0
    assert kept["trusted_cosign_keys"] == [pem, other_pem]

    status, replaced, _, _ = cli(
        "remote", "update", "--name", "hub", "--trust-cosign-key", str(first)
    )
    assert status == 0
    assert replaced["trusted_cosign_keys"] == [pem]

    status, cleared, _, err = cli("remote", "update", "--name", "hub", "--trust-cosign-key", "")
    assert status == 0, err
    assert cleared["trusted_cosign_keys"] == []
    assert cli("remote", "show", "--name", "hub")[1]["trusted_cosign_keys"] == []


def test_trust_gpg_key_stores_the_armored_key(cli: Any, tmp_path: Path) -> None:
    key = tmp_path / "key.asc"
    key.write_text(GPG_A)
    status, created, _, err = cli(*create_args("--trust-gpg-key", str(key)))
    assert status == 0, err
    assert created["trusted_gpg_keys"] == [GPG_A]
    assert created["trusted_cosign_keys"] == []
    status, cleared, _, _ = cli("remote", "update", "--name", "hub", "--trust-gpg-key", "")
    assert cleared["trusted_gpg_keys"] == []


@pytest.mark.parametrize("option", ["--trust-gpg-key", "--trust-cosign-key"])
def test_a_missing_key_file_is_a_usage_error_naming_it(
    cli: Any, tmp_path: Path, option: str
) -> None:
    missing = tmp_path / "no-such-key.pub"
    status, out, _, err = cli(*create_args(option, str(missing)))
    assert status == 2
    assert out is None
    assert str(missing) in err
    assert "Traceback" not in err
    assert err.startswith("Error: ")
    assert cli("remote", "list")[1] == []


def test_a_missing_key_file_on_update_changes_nothing(cli: Any, tmp_path: Path, pem: str) -> None:
    key = tmp_path / "cosign.pub"
    key.write_text(pem)
    assert cli(*create_args("--trust-cosign-key", str(key)))[0] == 0
    missing = tmp_path / "gone.pub"
    status, _, _, err = cli("remote", "update", "--name", "hub", "--trust-cosign-key", str(missing))
    assert status == 2 and str(missing) in err
    assert cli("remote", "show", "--name", "hub")[1]["trusted_cosign_keys"] == [pem]


@pytest.mark.parametrize(
    ("option", "content", "field"),
    [
        ("--trust-cosign-key", b"just some text\n", "trusted_cosign_keys"),
        ("--trust-gpg-key", b"just some text\n", "trusted_gpg_keys"),
        ("--trust-gpg-key", b"\x99\x01\x33binary gpg export\xff", "ASCII-armored"),
    ],
)
def test_a_file_without_a_key_is_refused_in_one_line(
    cli: Any, tmp_path: Path, option: str, content: bytes, field: str
) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    status, out, _, err = cli(*create_args(option, str(path)))
    assert status == 1
    assert out is None
    assert field in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_repository_sync_help_lists_signed_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["repository", "sync", "--help"])
    assert exited.value.code == 0
    assert "--signed-only" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "expected"), [(["--signed-only"], True), ([], False)])
def test_repository_sync_passes_signed_only_to_the_policy(
    cli: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: bool
) -> None:
    """The sync is asked for with ``SyncPolicy(signed_only=...)`` as the flag says."""
    policies: list[SyncPolicy | None] = []

    async def sync(self: AsyncRepository, remote: Any = None, **options: Any) -> Any:
        policies.append(options.get("policy"))
        raise UpstreamError("stopped by the test")

    monkeypatch.setattr(AsyncRepository, "sync", sync)
    cli("repository", "create", "--name", "foo")
    status, _, _, err = cli("repository", "sync", "--name", "foo", "--no-progress", *argv)
    assert status == 1
    assert "stopped by the test" in err
    [policy] = policies
    assert policy is not None
    assert policy.signed_only is expected
    assert policy.mirror is False


def test_repository_sync_signed_only_reaches_the_network(cli: Any) -> None:
    """Against a remote on a closed port, ``--signed-only`` fails as a sync does, with a
    connection error (exit 1), not as a usage error (exit 2)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert cli(
        "remote", "create", "--name", "dead", "--url", f"http://127.0.0.1:{port}",
        "--upstream-name", "library/app", "--max-retries", "0",
    )[0] == 0  # fmt: skip
    assert cli("repository", "create", "--name", "foo", "--remote", "dead")[0] == 0
    status, _, _, err = cli("repository", "sync", "--name", "foo", "--signed-only", "--no-progress")
    assert status == 1
    assert "usage:" not in err
    assert f"127.0.0.1:{port}" in err
    assert "Connect" in err
