"""Repository names, tags and image references."""

from __future__ import annotations

import pytest

from ocimirror.core.digest import Digest
from ocimirror.core.reference import (
    Reference,
    is_digest_reference,
    validate_repository_name,
    validate_tag,
)
from ocimirror.errors import InvalidDigest, InvalidError, InvalidName, InvalidReference

DIGEST = "sha256:a8560b36e8b8210634f77d9f7f9efd7ffa463e380b75e2e74aff4511df3ef88c"


@pytest.mark.parametrize(
    "name",
    [
        "ubuntu",
        "library/ubuntu",
        "a",
        "0",
        "my-org/my.app/sub_dir/x__y",
        "a--b",
        "a---b",
        "a.b_c__d-e",
        "ns/" + "a" * 251,
    ],
)
def test_a_valid_repository_name_is_returned_unchanged(name: str) -> None:
    """Names made of lowercase components with single separators are accepted as they are."""
    assert validate_repository_name(name) == name


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("", "empty"),
        ("a" * 256, "256 characters long; the limit is 255"),
        ("Library/Ubuntu", "must be lowercase: use 'library/ubuntu'"),
        ("/ubuntu", "empty component"),
        ("ubuntu/", "empty component"),
        ("library//ubuntu", "empty component"),
        ("a___b", "component 'a___b' is invalid"),
        ("a..b", "invalid"),
        ("-a", "invalid"),
        ("a-", "invalid"),
        ("_a", "invalid"),
        ("a.", "invalid"),
        ("a b", "invalid"),
        ("a:b", "invalid"),
        ("a@b", "invalid"),
        ("ubuntu\n", "invalid"),
        ("caf\u00e9", "invalid"),
    ],
)
def test_an_invalid_repository_name_is_refused_saying_what_is_wrong(
    name: str, complaint: str
) -> None:
    """Bad names raise InvalidName with a message that names the problem."""
    with pytest.raises(InvalidName, match=complaint):
        validate_repository_name(name)


def test_the_name_error_says_what_is_allowed() -> None:
    """A bad component's message spells out the rule, with an example."""
    with pytest.raises(InvalidName, match=r"lowercase letters and digits.*'library/ubuntu'"):
        validate_repository_name("bad!name")


@pytest.mark.parametrize("tag", ["latest", "v1.2.3", "_x", "1", "A-b_c.d", "a" * 128])
def test_a_valid_tag_is_returned_unchanged(tag: str) -> None:
    """Tags of up to 128 letters, digits, '_', '.' and '-' not starting with '.' or '-' pass."""
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    ("tag", "complaint"),
    [
        ("", "is empty"),
        ("a" * 129, "129 characters long; the limit is 128"),
        (".hidden", "must not start with"),
        ("-rc1", "must not start with"),
        ("v1+build", "may only hold"),
        ("v1:2", "may only hold"),
        ("latest\n", "may only hold"),
    ],
)
def test_an_invalid_tag_is_refused_saying_what_is_wrong(tag: str, complaint: str) -> None:
    """Bad tags raise InvalidReference with a message that names the problem."""
    with pytest.raises(InvalidReference, match=complaint):
        validate_tag(tag)


@pytest.mark.parametrize(
    ("ref", "is_digest"),
    [
        (DIGEST, True),
        ("latest", False),
        ("sha256:abc", False),
        ("sha256", False),
        ("v1.0", False),
    ],
)
def test_is_digest_reference_tells_digests_from_tags(ref: str, is_digest: bool) -> None:
    """Only a string that parses as a digest counts as a digest reference."""
    assert is_digest_reference(ref) is is_digest


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("ubuntu", None, "ubuntu", None, None),
        ("ubuntu:22.04", None, "ubuntu", "22.04", None),
        ("library/ubuntu", None, "library/ubuntu", None, None),
        ("docker.io/library/ubuntu:latest", "docker.io", "library/ubuntu", "latest", None),
        ("ghcr.io/org/team/app:v1", "ghcr.io", "org/team/app", "v1", None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/app:dev", "localhost:5000", "app", "dev", None),
        ("registry.example.com:443/a/b", "registry.example.com:443", "a/b", None, None),
        ("127.0.0.1:5000/a", "127.0.0.1:5000", "a", None, None),
        ("[::1]:5000/a", "[::1]:5000", "a", None, None),
        ("Example.COM/app", "Example.COM", "app", None, None),
        (f"alpine@{DIGEST}", None, "alpine", None, DIGEST),
        (f"quay.io/a/b:1.0@{DIGEST}", "quay.io", "a/b", "1.0", DIGEST),
        ("localhost", None, "localhost", None, None),
        ("localhost:5000", None, "localhost", "5000", None),
        ("my.app", None, "my.app", None, None),
    ],
)
def test_a_reference_parses_into_its_parts_and_prints_back(
    text: str, registry: str | None, repository: str, tag: str | None, digest: str | None
) -> None:
    """[registry/]repo[:tag][@digest] parses; the first component is a registry only if it
    has '.' or ':' or is 'localhost' and more components follow; str() round-trips."""
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "error", "complaint"),
    [
        ("", InvalidReference, "empty"),
        ("ubuntu:", InvalidReference, "tag '' is empty"),
        ("ubuntu:-x", InvalidReference, "must not start"),
        ("Ubuntu", InvalidName, "must be lowercase"),
        ("docker.io/Library/ubuntu", InvalidName, "must be lowercase"),
        ("ghcr.io/", InvalidReference, "no repository name"),
        ("a//b", InvalidName, "empty component"),
        (":tag", InvalidReference, "no repository name"),
        ("ubuntu@sha256:abc", InvalidDigest, "64 lowercase hex"),
        ("ubuntu@latest", InvalidDigest, "no ':'"),
        (f"ubuntu@{DIGEST}@x", InvalidDigest, "64 lowercase hex"),
        ("bad_host.com/app", InvalidReference, "registry 'bad_host.com' is not a host name"),
        ("host.com:port/app", InvalidReference, "is not a host name"),
    ],
)
def test_an_invalid_reference_is_refused_with_the_error_for_the_bad_part(
    text: str, error: type[InvalidError], complaint: str
) -> None:
    """Each malformed part raises its own InvalidError subclass with a helpful message."""
    with pytest.raises(error, match=complaint):
        Reference.parse(text)


@pytest.mark.parametrize(
    ("text", "identifier"),
    [
        ("ubuntu", "latest"),
        ("ubuntu:22.04", "22.04"),
        (f"ubuntu@{DIGEST}", DIGEST),
        (f"ubuntu:22.04@{DIGEST}", DIGEST),
    ],
)
def test_identifier_prefers_the_digest_then_the_tag_then_latest(text: str, identifier: str) -> None:
    """identifier is what to ask the registry for: digest, else tag, else 'latest'."""
    assert Reference.parse(text).identifier == identifier


def test_name_joins_registry_and_repository() -> None:
    """name is registry/repository, or the repository alone."""
    assert Reference.parse("ghcr.io/a/b:1").name == "ghcr.io/a/b"
    assert Reference.parse("a/b:1").name == "a/b"


def test_the_constructor_validates_every_part() -> None:
    """A Reference cannot be built with an invalid repository, registry or tag."""
    with pytest.raises(InvalidName):
        Reference("UPPER")
    with pytest.raises(InvalidReference):
        Reference("ok", registry="not a host")
    with pytest.raises(InvalidReference):
        Reference("ok", tag="bad tag")
    with pytest.raises(InvalidDigest):
        Reference("ok", digest="sha256:abc")


def test_the_digest_may_be_given_as_a_string() -> None:
    """Reference(digest="sha256:...") parses the string into a Digest."""
    assert Reference("ok", digest=DIGEST).digest == Digest.parse(DIGEST)


def test_references_are_hashable_values() -> None:
    """Parsing the same text twice gives equal, equally hashed references."""
    assert len({Reference.parse("ghcr.io/a:1"), Reference.parse("ghcr.io/a:1")}) == 1
