"""Remotes (where content comes from) and sync policies (how it comes), as in Pulp."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from ocimirror.core.digest import Digest
from ocimirror.core.reference import validate_repository_name
from ocimirror.errors import InvalidError, InvalidName

__all__ = ["POLICIES", "Remote", "SyncPolicy"]

#: Download policies. Only ``immediate`` is implemented; the others are refused until
#: on-demand and streamed mirroring exist.
POLICIES = ("immediate", "on_demand", "streamed")

#: What a secret is shown as.
_MASK = "********"


def _masked_url(url: str | None) -> str | None:
    """``url`` with the password of its userinfo masked (``https://bob:********@host/x``);
    a user name alone stays."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK if "@" in url else url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not at or not colon:
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:{_MASK}@{hostport}"))


def _masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The header names, each value masked (an ``Authorization`` or API key header)."""
    return dict.fromkeys(headers, _MASK)


def _masked_ca_cert(ca_cert: str | None) -> str | None:
    """A CA bundle's path as it is; PEM text masked."""
    return _MASK if ca_cert is not None and "-----BEGIN" in ca_cert else ca_cert


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or len(value) > 255 or value.strip() != value:
        raise InvalidName(f"{attribute.name} must be 1-255 characters without outer spaces")


def _check_url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise InvalidError(f"url must start with http:// or https://, got {_masked_url(value)!r}")


def _check_upstream(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    validate_repository_name(value)


def _check_policy(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in POLICIES:
        raise InvalidError(f"policy must be one of {', '.join(POLICIES)}, got {value!r}")
    if value != "immediate":
        raise InvalidError(
            f"policy {value!r} is not available yet: only 'immediate' downloads are supported"
        )


def _check_patterns(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    for pattern in value:
        if not isinstance(pattern, str) or not pattern:
            raise InvalidError(f"{attribute.name} entries must be non-empty strings")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, int | float) or value <= 0):
        raise InvalidError(f"{attribute.name} must be a positive number, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise InvalidError(f"{attribute.name} must be an integer >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Remote:
    """An upstream registry repository to sync from.

    ``include_tags`` and ``exclude_tags`` are fnmatch-style patterns matched against the whole
    tag; exclude wins over include; an include entry ``sha256:<hex>`` selects that digest,
    untagged. Foreign (non-distributable) layers are not downloaded unless
    ``include_foreign_layers``.

    Secrets never show in the repr or in :meth:`to_json` output (only
    ``to_json(secrets=True)``, what the store keeps, has them): the password, the password in
    ``url``'s or ``proxy_url``'s userinfo, every header value, and a CA certificate given as
    PEM text are shown as ``********``.
    """

    name: str = attrs.field(validator=_check_name)
    url: str = attrs.field(validator=_check_url, repr=lambda v: repr(_masked_url(v)))
    upstream_name: str = attrs.field(validator=_check_upstream)
    include_tags: tuple[str, ...] = attrs.field(
        default=(), converter=tuple, validator=_check_patterns
    )
    exclude_tags: tuple[str, ...] = attrs.field(
        default=(), converter=tuple, validator=_check_patterns
    )
    sigstore: str | None = None
    policy: str = attrs.field(default="immediate", validator=_check_policy)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls_validation: bool = True
    ca_cert: str | None = attrs.field(default=None, repr=False)
    proxy_url: str | None = attrs.field(default=None, repr=lambda v: repr(_masked_url(v)))
    download_concurrency: int = attrs.field(default=10, validator=_positive)
    max_retries: int = attrs.field(default=3, validator=_non_negative)
    rate_limit: float | None = attrs.field(default=None, validator=_positive)
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=lambda v: repr(_masked_headers(v)))
    include_foreign_layers: bool = False

    def wants_tag(self, tag: str) -> bool:
        """Whether a tag passes the include and exclude filters."""
        if any(fnmatch.fnmatchcase(tag, p) for p in self.exclude_tags):
            return False
        patterns = [p for p in self.include_tags if not _is_digest(p)]
        if not self.include_tags:
            return True
        return any(fnmatch.fnmatchcase(tag, p) for p in patterns)

    @property
    def include_digests(self) -> tuple[Digest, ...]:
        """Digests named in ``include_tags``, synced untagged."""
        return tuple(Digest.parse(p) for p in self.include_tags if _is_digest(p))

    def to_json(self, *, secrets: bool = False) -> dict[str, Any]:
        """The fields as JSON, secrets masked; with ``secrets`` every field as it is (what
        the store keeps, and :meth:`from_json` reads back)."""
        data = attrs.asdict(self)
        data["include_tags"] = list(self.include_tags)
        data["exclude_tags"] = list(self.exclude_tags)
        data["headers"] = dict(self.headers)
        if not secrets:
            data["url"] = _masked_url(self.url)
            data["proxy_url"] = _masked_url(self.proxy_url)
            data["headers"] = _masked_headers(self.headers)
            data["password"] = None if self.password is None else _MASK
            data["ca_cert"] = _masked_ca_cert(self.ca_cert)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Remote:
        """Build a remote from :meth:`to_json` output (with secrets)."""
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _is_digest(pattern: str) -> bool:
    try:
        Digest.parse(pattern)
    except InvalidError:
        return False
    return True


@attrs.frozen(kw_only=True)
class SyncPolicy:
    """How a sync treats the repository's existing content.

    ``mirror=False`` (additive) keeps what the repository had; ``mirror=True`` makes the new
    version hold exactly the filtered upstream set.
    """

    mirror: bool = False
