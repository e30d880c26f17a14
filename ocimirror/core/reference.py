"""Repository names, tags and image references (``[registry/]repository[:tag][@digest]``)."""

from __future__ import annotations

import re

import attrs

from ocimirror.core.digest import Digest
from ocimirror.errors import InvalidDigest, InvalidName, InvalidReference

__all__ = [
    "MAX_NAME_LENGTH",
    "Reference",
    "is_digest_reference",
    "validate_repository_name",
    "validate_tag",
]

#: The longest repository name the OCI distribution-spec lets registries require support for.
MAX_NAME_LENGTH = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_HOST_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_REGISTRY = re.compile(
    rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?"
)

_NAME_RULE = (
    "lowercase letters and digits, separated inside a component by '.', '_', '__' or "
    "dashes, with components separated by '/' (for example 'library/ubuntu')"
)


def validate_repository_name(name: str) -> str:
    """Return ``name`` if it is a valid OCI repository name, else raise :class:`InvalidName`.

    A name is ``/``-separated components matching ``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*``,
    at most 255 characters in all.
    """
    if not isinstance(name, str):
        raise InvalidName(f"a repository name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidName(f"repository name is empty; use {_NAME_RULE}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"repository name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    for component in name.split("/"):
        if _COMPONENT.fullmatch(component):
            continue
        if not component:
            raise InvalidName(
                f"repository name {name[:140]!r} has an empty component "
                "(a leading, trailing or doubled '/')"
            )
        if _COMPONENT.fullmatch(component.lower()):
            raise InvalidName(
                f"repository name {name[:140]!r} must be lowercase: use {name.lower()[:140]!r}"
            )
        raise InvalidName(
            f"repository name component {component[:140]!r} is invalid; use {_NAME_RULE}"
        )
    return name


def validate_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid tag, else raise :class:`InvalidReference`.

    A tag is up to 128 characters from ``[a-zA-Z0-9._-]``, not starting with ``.`` or ``-``.
    """
    if not isinstance(tag, str):
        raise InvalidReference(f"a tag must be a string, got {type(tag).__name__}")
    if not _TAG.fullmatch(tag):
        if not tag:
            problem = "is empty"
        elif len(tag) > 128:
            problem = f"is {len(tag)} characters long; the limit is 128"
        elif tag[0] in ".-":
            problem = "must not start with '.' or '-'"
        else:
            problem = "may only hold letters, digits, '_', '.' and '-'"
        raise InvalidReference(f"tag {tag[:140]!r} {problem}")
    return tag


def is_digest_reference(ref: str) -> bool:
    """True if ``ref`` (a manifest reference from a URL) is a digest rather than a tag."""
    if not isinstance(ref, str) or ":" not in ref:
        return False
    try:
        Digest.parse(ref)
    except InvalidDigest:
        return False
    return True


def _validate_registry(registry: str) -> None:
    if not isinstance(registry, str) or not _REGISTRY.fullmatch(registry):
        raise InvalidReference(
            f"registry {str(registry)[:140]!r} is not a host name with an optional port "
            "(for example 'ghcr.io' or 'localhost:5000')"
        )


def _check_repository(instance: Reference, attribute: attrs.Attribute[str], value: str) -> None:
    validate_repository_name(value)


def _check_registry(
    instance: Reference, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None:
        _validate_registry(value)


def _check_tag(
    instance: Reference, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None:
        validate_tag(value)


def _to_digest(value: Digest | str | None) -> Digest | None:
    return None if value is None else Digest.parse(value)


def _looks_like_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


@attrs.frozen
class Reference:
    """An image reference: ``[registry/]repository[:tag][@digest]``; ``str()`` round-trips.

    Every part is validated on construction; ``digest`` may be given as a string.
    No defaults are filled in: ``Reference.parse("ubuntu")`` has no registry and no tag, and
    its :attr:`identifier` is ``"latest"``.
    """

    repository: str = attrs.field(validator=_check_repository)
    registry: str | None = attrs.field(default=None, validator=_check_registry)
    tag: str | None = attrs.field(default=None, validator=_check_tag)
    digest: Digest | None = attrs.field(default=None, converter=_to_digest)

    @classmethod
    def parse(cls, value: str) -> Reference:
        """Parse ``[registry/]repository[:tag][@digest]``.

        The first ``/``-separated component is the registry when it contains ``.`` or ``:`` or
        is ``localhost``. Raise :class:`InvalidReference`, :class:`InvalidName` or
        :class:`InvalidDigest` saying which part is wrong.
        """
        if not isinstance(value, str):
            raise InvalidReference(f"a reference must be a string, got {type(value).__name__}")
        if not value:
            raise InvalidReference("reference is empty; expected '[registry/]repository[:tag]'")
        rest, at, digest_part = value.partition("@")
        digest = Digest.parse(digest_part) if at else None
        tag: str | None = None
        colon = rest.rfind(":")
        if colon > rest.rfind("/"):
            rest, tag = rest[:colon], rest[colon + 1 :]
        registry: str | None = None
        first, slash, remainder = rest.partition("/")
        if slash and _looks_like_registry(first):
            registry, rest = first, remainder
        if not rest:
            raise InvalidReference(f"reference {value[:140]!r} has no repository name")
        return cls(repository=rest, registry=registry, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``registry/repository``, or just the repository when no registry is named."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def identifier(self) -> str:
        """What to ask a registry for: the digest if any, else the tag, else ``"latest"``."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag if self.tag is not None else "latest"

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out
