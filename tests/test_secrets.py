"""Credentials never show: not in a remote's repr or JSON, not in what the CLI prints, not in
a log line or a sync report.

Only ``Remote.to_json(secrets=True)`` (what the store keeps) holds them: the password, the
password in the URL's or the proxy URL's userinfo, every header value and a PEM CA
certificate. Syncs run against Debian's docker-registry behind Basic auth and against
pytest-httpx, with logs captured at DEBUG.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.registry import Registry
from pytest_httpx import HTTPXMock

import ocimirror
from ocimirror.cli import main
from ocimirror.remote import Remote
from ocimirror.testing import random_image

MASK = "********"
URL_PASSWORD = "url-Pa55-7f3a"
PASSWORD = "remote-Pa55-c41d"
PROXY_PASSWORD = "proxy-Pa55-9e0b"
HEADER_VALUE = "Bearer header-token-5b2e"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBcert-body-2d7c\n-----END CERTIFICATE-----\n"
SECRETS = (URL_PASSWORD, PASSWORD, PROXY_PASSWORD, HEADER_VALUE, "cert-body-2d7c")


def remote(**fields: Any) -> Remote:
    """A remote with a secret in every place one can be."""
    values: dict[str, Any] = {
        "name": "hub",
        "url": f"https://bob:{URL_PASSWORD}@registry.example:5000/prefix",
        "upstream_name": "library/alpine",
        "username": "alice",
        "password": PASSWORD,
        "proxy_url": f"http://proxyuser:{PROXY_PASSWORD}@proxy.example:3128",
        "headers": {"Authorization": HEADER_VALUE, "X-Tenant": "blue"},
        "ca_cert": PEM,
    }
    values.update(fields)
    return Remote(**values)


def assert_no_secret(text: str) -> None:
    """None of the test's secrets (nor alice's Basic credentials) is in ``text``."""
    for secret in SECRETS:
        assert secret not in text
    assert base64.b64encode(f"alice:{PASSWORD}".encode()).decode() not in text


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in a fresh home; returns (exit status, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        status = main(["--home", str(tmp_path / "home"), *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


# -- the remote value


def test_a_remotes_repr_shows_no_secret_but_the_user_and_header_names() -> None:
    """The repr masks the URL's and the proxy's password and every header value, and leaves
    out the password and the CA certificate; user names, hosts and header names stay."""
    text = repr(remote())
    assert_no_secret(text)
    assert f"https://bob:{MASK}@registry.example:5000/prefix" in text
    assert f"http://proxyuser:{MASK}@proxy.example:3128" in text
    assert "'Authorization': '********'" in text and "'X-Tenant': '********'" in text
    assert "username='alice'" in text


def test_to_json_masks_every_secret_and_with_secrets_round_trips() -> None:
    """``to_json()`` masks; ``to_json(secrets=True)`` keeps everything, and ``from_json`` reads
    it back to the same remote."""
    r = remote()
    shown = r.to_json()
    assert_no_secret(json.dumps(shown))
    assert shown["url"] == f"https://bob:{MASK}@registry.example:5000/prefix"
    assert shown["proxy_url"] == f"http://proxyuser:{MASK}@proxy.example:3128"
    assert shown["headers"] == {"Authorization": MASK, "X-Tenant": MASK}
    assert shown["password"] == MASK and shown["ca_cert"] == MASK
    assert shown["username"] == "alice"

    kept = r.to_json(secrets=True)
    assert kept["url"] == r.url and kept["proxy_url"] == r.proxy_url
    assert kept["headers"] == dict(r.headers)
    assert kept["password"] == PASSWORD and kept["ca_cert"] == PEM
    assert Remote.from_json(json.loads(json.dumps(kept))) == r


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://registry.example", "https://registry.example"),
        ("https://bob@registry.example/x", "https://bob@registry.example/x"),
        (f"https://bob:{URL_PASSWORD}@registry.example", f"https://bob:{MASK}@registry.example"),
        (f"https://:{URL_PASSWORD}@registry.example", f"https://:{MASK}@registry.example"),
    ],
)
def test_a_user_name_alone_shows_a_password_never(url: str, shown: str) -> None:
    """Only the password part of a URL's userinfo is masked."""
    assert remote(url=url, proxy_url=None).to_json()["url"] == shown


def test_a_ca_bundle_path_shows_its_pem_text_does_not() -> None:
    """A CA bundle given as a path is not a secret; PEM text is shown masked."""
    assert remote(ca_cert="/etc/ssl/ca.pem").to_json()["ca_cert"] == "/etc/ssl/ca.pem"
    assert remote(ca_cert=None).to_json()["ca_cert"] is None


def test_a_refused_url_is_quoted_without_its_password() -> None:
    """A URL that fails validation is quoted in the error with its password masked."""
    with pytest.raises(ocimirror.InvalidError) as caught:
        remote(url=f"ftp://bob:{URL_PASSWORD}@registry.example")
    assert URL_PASSWORD not in str(caught.value)
    assert "ftp://bob:********@registry.example" in str(caught.value)


# -- the command line


def test_remote_create_show_list_and_update_print_no_secret(cli: Any, tmp_path: Path) -> None:
    """Every remote verb prints masked JSON; what was stored still has the secrets."""
    ca = tmp_path / "ca.pem"
    ca.write_text(PEM)
    status, out, err = cli(
        "remote", "create", "--name", "hub",
        "--url", f"https://bob:{URL_PASSWORD}@registry.example",
        "--upstream-name", "library/alpine",
        "--username", "alice", "--password", PASSWORD,
        "--proxy-url", f"http://proxyuser:{PROXY_PASSWORD}@proxy.example:3128",
        "--ca-cert", str(ca),
    )  # fmt: skip
    assert status == 0, err
    created = json.loads(out)
    assert created["url"] == f"https://bob:{MASK}@registry.example"
    assert created["password"] == MASK and created["ca_cert"] == MASK
    with ocimirror.open(home=tmp_path / "home") as reg:
        reg.update_remote("hub", headers={"Authorization": HEADER_VALUE})
        stored = reg.remote("hub")
    assert stored.password == PASSWORD and stored.ca_cert == PEM
    assert stored.url == f"https://bob:{URL_PASSWORD}@registry.example"
    assert stored.headers == {"Authorization": HEADER_VALUE}

    printed = [out, err]
    for argv in (
        ("remote", "show", "--name", "hub"),
        ("remote", "list"),
        ("remote", "update", "--name", "hub", "--password", "new-Pa55-0c9d", "--max-retries", "2"),
    ):
        status, out, err = cli(*argv)
        assert status == 0, err
        printed += [out, err]
        data = json.loads(out)
        for shown in data if isinstance(data, list) else [data]:
            assert shown["headers"] == {"Authorization": MASK}
            assert shown["proxy_url"] == f"http://proxyuser:{MASK}@proxy.example:3128"
    for text in printed:
        assert_no_secret(text)
        assert "new-Pa55-0c9d" not in text


def test_a_remote_the_cli_refuses_is_reported_without_its_password(cli: Any) -> None:
    """A bad URL with a password: the one-line error masks it."""
    status, out, err = cli(
        "remote", "create", "--name", "r", "--url", f"ftp://u:{URL_PASSWORD}@host",
        "--upstream-name", "x", "--password", PASSWORD,
    )  # fmt: skip
    assert status == 1 and out == ""
    assert "url must start with http:// or https://" in err
    assert_no_secret(err)


# -- syncs


def test_a_sync_behind_basic_auth_with_credentials_in_the_url_logs_no_secret(
    tmp_path: Path,
    docker_registry_basic: Registry,
    registry_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Credentials in the remote's URL and an API key header: the sync works, and no log line
    (at DEBUG, every logger) nor the sync report holds the password, its Basic encoding or the
    header's value."""
    image = random_image(seed=registry_name)
    docker_registry_basic.push(registry_name, image, "v1")
    user, password = docker_registry_basic.credentials or ("", "")
    url = docker_registry_basic.url.replace("http://", f"http://{user}:{password}@")
    caplog.set_level(logging.DEBUG)

    with ocimirror.open(home=tmp_path / "home") as reg:
        reg.create_remote(
            name="up", url=url, upstream_name=registry_name, headers={"X-Api-Key": HEADER_VALUE}
        )
        repo = reg.create_repository("mirror", remote="up")
        result = repo.sync()
        assert result.ok and repo.tags() == {"v1": str(image.digest)}
        shown = repr(reg.remote("up"))

    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    for text in (caplog.text, json.dumps(result.to_json()), shown):
        assert password not in text and encoded not in text
        assert HEADER_VALUE not in text
    assert "ocimirror.upstream" in caplog.text  # the client did log


def test_a_sync_report_of_a_signed_blob_redirect_that_fails_names_the_host_only(
    tmp_path: Path, httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    """A layer redirected to a signed object-store URL that answers 403: the tag is dropped
    with a reason naming the object store's host; neither the reason nor any ocimirror log line
    holds the signature, the access key, the remote's passwords or its header value."""
    image = random_image(seed="signed-redirect")
    config, denied, fine = image.blobs()
    signed = "https://bucket.s3.example/blob?X-Amz-Signature=SECRET&X-Amz-Credential=AK"
    blobs = {str(b.digest): b.data for b in (config, fine)}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "bucket.s3.example":
            return httpx.Response(403, text="<Error><Code>AccessDenied</Code></Error>")
        if request.headers.get("authorization") != "Basic " + base64.b64encode(
            f"bob:{URL_PASSWORD}".encode()
        ).decode("ascii"):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        path = request.url.path
        if path.endswith("/tags/list"):
            return httpx.Response(200, json={"name": "team/app", "tags": ["v1"]})
        if "/manifests/" in path:
            return httpx.Response(
                200,
                content=image.manifest,
                headers={
                    "Content-Type": image.media_type,
                    "Docker-Content-Digest": str(image.digest),
                },
            )
        digest = path.rsplit("/", 1)[1]
        if digest == str(denied.digest):
            return httpx.Response(307, headers={"Location": signed})
        return httpx.Response(200, content=blobs[digest])

    httpx_mock.add_callback(handler, is_reusable=True)
    caplog.set_level(logging.DEBUG, logger="ocimirror")

    with ocimirror.open(home=tmp_path / "home") as reg:
        reg.create_remote(
            name="up",
            url=f"https://bob:{URL_PASSWORD}@registry.example",
            upstream_name="team/app",
            headers={"X-Api-Key": HEADER_VALUE},
            proxy_url=f"http://proxyuser:{PROXY_PASSWORD}@proxy.example:3128",
            max_retries=0,
        )
        result = reg.create_repository("mirror", remote="up").sync()

    assert result.status == "failed"
    [dropped] = result.dropped
    assert dropped["tag"] == "v1"
    assert "bucket.s3.example refused the request" in dropped["reason"]
    logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("ocimirror"))
    assert "bucket.s3.example" in logs
    for text in (json.dumps(result.to_json()), logs):
        assert_no_secret(text)
        assert "SECRET" not in text and "X-Amz" not in text and "Credential=AK" not in text
    for request in httpx_mock.get_requests():
        if request.url.host == "bucket.s3.example":
            assert "authorization" not in request.headers
            assert "x-api-key" not in request.headers


def test_the_cli_shows_library_log_lines_without_a_signed_query_string() -> None:
    """httpx logs whole URLs at INFO; what ``ocimirror -v`` prints has them cut."""
    import io
    import logging

    from ocimirror.cli import _redact_record

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(_redact_record)
    logger = logging.getLogger("httpx.test-redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info(
            'HTTP Request: %s %s "%s"',
            "GET",
            "https://bucket.s3.example/blob?X-Amz-Signature=SECRET&X-Amz-Credential=AK",
            "HTTP/1.1 200 OK",
        )
    finally:
        logger.removeHandler(handler)
    shown = stream.getvalue()
    assert "bucket.s3.example/blob" in shown
    assert "SECRET" not in shown and "AK" not in shown
