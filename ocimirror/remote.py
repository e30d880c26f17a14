"""Remotes (where content comes from) and sync policies (how it comes), as in Pulp."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

import attrs

from ocimirror.core.digest import Digest
from ocimirror.core.reference import validate_repository_name
from ocimirror.errors import InvalidError, InvalidName

__all__ = ["POLICIES", "Remote", "SyncPolicy"]

#: Download policies. Only ``immediate`` is implemented; the others are refused until
#: on-demand and streamed mirroring exist.
POLICIES = ("immediate", "on_demand", "streamed")


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or len(value) > 255 or value.strip() != value:
        raise InvalidName(f"{attribute.name} must be 1-255 characters without outer spaces")


def _check_url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise InvalidError(f"url must start with http:// or https://, got {value!r}")


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
    ``include_foreign_layers``. The password never appears in reprs or JSON output.
    """

    name: str = attrs.field(validator=_check_name)
    url: str = attrs.field(validator=_check_url)
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
    proxy_url: str | None = None
    download_concurrency: int = attrs.field(default=10, validator=_positive)
    max_retries: int = attrs.field(default=3, validator=_non_negative)
    rate_limit: float | None = attrs.field(default=None, validator=_positive)
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
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
        """The fields as JSON; the password (and CA certificate body) only with ``secrets``."""
        data = attrs.asdict(self)
        data["include_tags"] = list(self.include_tags)
        data["exclude_tags"] = list(self.exclude_tags)
        data["headers"] = dict(self.headers)
        if not secrets:
            data["password"] = None if self.password is None else "********"
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
