"""Checks of what callers pass to the public API, refused in ocimirror's own words.

A wrong type or an unknown field name is the caller's mistake; it must say so as an
:class:`~ocimirror.errors.InvalidError` naming the argument, before anything reaches a store
(where it would surface as a database driver's error, differently on SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import attrs

from ocimirror.errors import InvalidError

__all__ = [
    "build",
    "count",
    "duration",
    "fields_of",
    "flag",
    "known_fields",
    "name_of",
    "names",
    "optional_text",
    "text",
    "version_number",
]

T = TypeVar("T")


def _got(value: object) -> str:
    """What a wrong argument was: its type, and its value when that is a plain scalar (a
    mapping or an object may hold a password, which an error message must never show)."""
    kind = type(value).__name__
    if value is None or isinstance(value, bool | int | float):
        return f"{kind} {value!r}"
    if isinstance(value, str):
        return f"{kind} {value[:40]!r}" + ("..." if len(value) > 40 else "")
    return kind


def text(value: Any, what: str) -> str:
    """``value``, which must be a string."""
    if not isinstance(value, str):
        raise InvalidError(f"{what} must be a string, got {_got(value)}")
    return value


def optional_text(value: Any, what: str) -> str | None:
    """``value``, which must be a string or None."""
    return None if value is None else text(value, what)


def flag(value: Any, what: str) -> bool:
    """``value``, which must be True or False."""
    if not isinstance(value, bool):
        raise InvalidError(f"{what} must be True or False, got {_got(value)}")
    return value


def count(value: Any, what: str) -> int:
    """``value``, which must be an integer >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidError(f"{what} must be an integer >= 0, got {_got(value)}")
    return value


def version_number(value: Any, what: str = "version") -> int:
    """A repository version number: an integer >= 0."""
    return count(value, what)


def duration(value: Any, what: str) -> timedelta:
    """A timedelta, or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    raise InvalidError(f"{what} must be a timedelta or a number of seconds, got {_got(value)}")


def name_of(value: Any, what: str, kinds: tuple[type, ...] = ()) -> str:
    """A name: a string, or an object of one of ``kinds`` (a Remote, a Repository...) whose
    ``name`` it takes."""
    if kinds and isinstance(value, kinds):
        return text(getattr(value, "name", None), f"{what}.name")
    if isinstance(value, str):
        return value
    accepted = " or ".join(["a name", *(f"a {k.__name__.removeprefix('Async')}" for k in kinds)])
    raise InvalidError(f"{what} must be {accepted}, got {_got(value)}")


def names(value: Any, what: str) -> list[str]:
    """A list of names: one (a string) or an iterable of strings (never a string's letters)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InvalidError(f"{what} must be a name or a list of names, got {_got(value)}")
    items = list(value)
    for item in items:
        text(item, f"each of {what}")
    return items


def known_fields(given: Mapping[str, Any], allowed: Collection[str], what: str) -> None:
    """Refuse field names ``what`` does not have, listing the ones it has."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise InvalidError(
            f"{what} has no field{plural} {', '.join(map(repr, unknown))}; "
            f"its fields are {', '.join(sorted(allowed))}"
        )


def fields_of(cls: type, given: Mapping[str, Any]) -> None:
    """Refuse names in ``given`` that are no field of the attrs class ``cls``."""
    known_fields(given, [f.name for f in attrs.fields(cls)], cls.__name__)


def build(cls: type[T], fields: Mapping[str, Any]) -> T:
    """``cls(**fields)`` for an attrs class, with unknown field names refused by name."""
    fields_of(cls, fields)
    return cls(**fields)
