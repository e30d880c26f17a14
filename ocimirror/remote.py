"""Remotes (where content comes from) and sync policies (how it comes), as in Pulp."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from ocimirror._html import fields
from ocimirror.core.descriptor import Platform
from ocimirror.core.digest import Digest
from ocimirror.core.reference import validate_repository_name
from ocimirror.errors import InvalidError, InvalidName

__all__ = ["POLICIES", "Remote", "SyncPolicy"]

#: Download policies, Pulp's: ``immediate`` downloads every layer at sync time; ``on_demand``
#: records layers and fetches each on its first request, then keeps it; ``streamed`` fetches
#: it for every request and keeps nothing (see :mod:`ocimirror.ondemand`).
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


def masked_connection(data: dict[str, Any]) -> dict[str, Any]:
    """A remote's JSON (:meth:`Remote.to_json`, a pull-through remote's) with its connection
    secrets masked: the password, URL userinfo passwords, every header value, and a CA
    certificate given as PEM text."""
    data["url"] = _masked_url(data["url"])
    data["proxy_url"] = _masked_url(data["proxy_url"])
    data["headers"] = _masked_headers(data["headers"])
    data["password"] = None if data["password"] is None else _MASK
    data["ca_cert"] = _masked_ca_cert(data["ca_cert"])
    return data


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 255 or value.strip() != value:
        raise InvalidName(f"{attribute.name} must be 1-255 characters without outer spaces")


def _check_url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise InvalidError(f"url must start with http:// or https://, got {_masked_url(value)!r}")


def _check_upstream(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    validate_repository_name(value)


def _check_policy(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in POLICIES:
        raise InvalidError(f"policy must be one of {', '.join(POLICIES)}, got {value!r}")


def patterns(value: Any, kind: str = "tag") -> tuple[str, ...]:
    """``kind`` patterns (``"tag"``, ``"name"``) as a tuple: one pattern (a string) or a list
    of them; ``None`` is none.

    A string is one pattern, never its characters; anything else that is not a list, tuple
    or set of non-empty strings is refused, saying what it was.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple | set | frozenset):
        raise InvalidError(
            f"{kind} patterns must be a string or a list of strings like ['v1.*'], "
            f"got {type(value).__name__} {value!r}"
        )
    for pattern in value:
        if not isinstance(pattern, str) or not pattern:
            raise InvalidError(
                f"{kind} patterns must be non-empty strings, got {pattern!r} in {list(value)!r}"
            )
    return tuple(dict.fromkeys(value))


def _tag_patterns(value: Any) -> tuple[str, ...]:
    return patterns(value, "tag")


def _check_sigstore(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        not isinstance(value, str)
        or not value.lower().startswith(("http://", "https://", "file://"))
    ):
        raise InvalidError(
            "sigstore must be a URL starting with http://, https:// or file://, "
            f"got {_masked_url(value) if isinstance(value, str) else value!r}"
        )


def _none_if_empty(value: str | None) -> str | None:
    return value or None


def _keys(value: Any) -> tuple[str, ...]:
    """Trusted keys as text: one key (``str`` or ``bytes``) or a list of them (``None``: none)."""
    if value is None:
        return ()
    if isinstance(value, str | bytes):
        value = [value]
    if not isinstance(value, list | tuple | set | frozenset):
        raise InvalidError(f"trusted keys must be key text or a list of them, got {value!r}")
    keys = []
    for key in value:
        if isinstance(key, bytes):
            try:
                key = key.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidError(
                    "a trusted key must be ASCII-armored (gpg --armor --export) or PEM text"
                ) from None
        keys.append(key)
    return tuple(keys)


def _check_keys(marker: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        for key in value:
            if not isinstance(key, str) or marker not in key:
                raise InvalidError(
                    f"{attribute.name} entries must be key text containing {marker!r} "
                    "(ASCII-armored GPG keys, PEM public keys)"
                )

    return check


def _keys_repr(value: tuple[str, ...]) -> str:
    return f"<{len(value)} key{'s' if len(value) != 1 else ''}>"


def _platforms(value: Any) -> tuple[str, ...]:
    """Platform filters: one ``os/architecture[/variant]`` or a list of them, validated."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple | set | frozenset):
        raise InvalidError(f"platforms must be a list like ['linux/amd64'], got {value!r}")
    return tuple(dict.fromkeys(str(Platform.parse(p)) for p in value))


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
    ):
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
    include_tags: tuple[str, ...] = attrs.field(default=(), converter=_tag_patterns)
    exclude_tags: tuple[str, ...] = attrs.field(default=(), converter=_tag_patterns)
    sigstore: str | None = attrs.field(
        default=None,
        converter=_none_if_empty,  # "" (``--sigstore ''``) clears it
        validator=_check_sigstore,
        repr=lambda v: repr(_masked_url(v)),
    )
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
    #: Download only these platforms' children of an index (``linux/amd64``); the index and
    #: the other children's manifests are kept byte for byte, their blobs left remote.
    platforms: tuple[str, ...] = attrs.field(default=(), converter=_platforms)
    #: ASCII-armored GPG public keys: atomic signatures must verify against one of them.
    trusted_gpg_keys: tuple[str, ...] = attrs.field(
        default=(), converter=_keys, validator=_check_keys("BEGIN PGP PUBLIC KEY"), repr=_keys_repr
    )
    #: PEM public keys (ECDSA): cosign signatures must verify against one of them.
    trusted_cosign_keys: tuple[str, ...] = attrs.field(
        default=(), converter=_keys, validator=_check_keys("BEGIN PUBLIC KEY"), repr=_keys_repr
    )

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
        data["platforms"] = list(self.platforms)
        data["trusted_gpg_keys"] = list(self.trusted_gpg_keys)
        data["trusted_cosign_keys"] = list(self.trusted_cosign_keys)
        if not secrets:
            masked_connection(data)
            data["sigstore"] = _masked_url(self.sigstore)
        return data

    def _repr_html_(self) -> str:
        shown = {k: v for k, v in self.to_json().items() if v not in (None, (), [], {})}
        for key in ("trusted_gpg_keys", "trusted_cosign_keys"):
            if key in shown:
                shown[key] = _keys_repr(getattr(self, key))
        return fields(f"Remote {self.name}", shown)

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
    """How a sync treats the repository's existing content, and which images it trusts.

    ``mirror=False`` (additive) keeps what the repository had; ``mirror=True`` makes the new
    version hold exactly the filtered upstream set. A mirror sync that would leave the
    repository without a single tag (filters that match none of the upstream's tags, often a
    typo, or an upstream emptied) is refused with EmptyMirror unless ``allow_empty``.

    ``signed_only`` skips images that have no signature (atomic or cosign), as Pulp's
    ``signed_only``. Trusted keys go further: with ``trusted_gpg_keys`` (ASCII-armored GPG
    public keys, for atomic signatures) or ``trusted_cosign_keys`` (PEM public keys, for
    cosign signatures), an image is synced only when one of its signatures verifies against
    one of them and names the image's upstream repository; otherwise it is dropped and the
    report says why. The remote's own trusted keys are added to these.
    """

    mirror: bool = False
    #: Let a mirror sync publish a version without tags (its filters match nothing upstream,
    #: or the upstream has none left); without it such a sync raises EmptyMirror.
    allow_empty: bool = False
    signed_only: bool = False
    #: Platforms to download (added to the remote's ``platforms``); see :class:`Remote`.
    platforms: tuple[str, ...] = attrs.field(default=(), converter=_platforms)
    trusted_gpg_keys: tuple[str, ...] = attrs.field(
        default=(), converter=_keys, validator=_check_keys("BEGIN PGP PUBLIC KEY"), repr=_keys_repr
    )
    trusted_cosign_keys: tuple[str, ...] = attrs.field(
        default=(), converter=_keys, validator=_check_keys("BEGIN PUBLIC KEY"), repr=_keys_repr
    )

    def with_remote(self, remote: Remote) -> SyncPolicy:
        """This policy with the remote's trusted keys added."""
        return attrs.evolve(
            self,
            platforms=tuple(dict.fromkeys((*self.platforms, *remote.platforms))),
            trusted_gpg_keys=tuple(
                dict.fromkeys((*self.trusted_gpg_keys, *remote.trusted_gpg_keys))
            ),
            trusted_cosign_keys=tuple(
                dict.fromkeys((*self.trusted_cosign_keys, *remote.trusted_cosign_keys))
            ),
        )

    @property
    def verifies(self) -> bool:
        """Whether images must carry a signature that verifies against a trusted key."""
        return bool(self.trusted_gpg_keys or self.trusted_cosign_keys)
