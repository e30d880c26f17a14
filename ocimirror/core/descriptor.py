"""Descriptors (the ``{mediaType, digest, size}`` pointers inside manifests) and platforms."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from ocimirror.core.digest import Digest
from ocimirror.errors import InvalidDigest, InvalidError, InvalidManifest, InvalidPlatform

__all__ = ["MAX_SIZE", "Annotations", "Descriptor", "Platform"]

#: The largest size a descriptor may announce (the OCI spec's int64).
MAX_SIZE = 2**63 - 1

_PLATFORM_PART = re.compile(r"[A-Za-z0-9_.-]+")


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Annotations(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping; equal to any mapping with the same items."""

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        data = dict(items)
        for key, value in data.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidError(
                    f"annotations map strings to strings, got {key!r}: {json_type(value)}"
                )
        self._data: dict[str, str] = data

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"Annotations({self._data!r})"


_NO_ANNOTATIONS = Annotations()


def _to_annotations(value: Mapping[str, str] | None) -> Annotations:
    if value is None:
        return _NO_ANNOTATIONS
    if isinstance(value, Annotations):
        return value
    if not isinstance(value, Mapping):
        raise InvalidError(f"annotations must be a mapping, got {json_type(value)}")
    return Annotations(value)


def _to_str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidError(f"expected a sequence of strings, got {json_type(value)}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise InvalidError(f"expected a sequence of strings, found {json_type(item)}")
    return items


def _check_required(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidPlatform(f"platform {attribute.name} must be a non-empty string")


def _check_optional(
    instance: object, attribute: attrs.Attribute[str | None], value: object
) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidPlatform(f"platform {attribute.name} must be None or a non-empty string")


@attrs.frozen
class Platform:
    """The platform an image runs on: ``os/architecture[/variant]`` and a few rarer details.

    ``str(platform)`` gives ``"linux/arm64/v8"``, which :meth:`parse` reads back.
    """

    architecture: str = attrs.field(validator=_check_required)
    os: str = attrs.field(validator=_check_required)
    variant: str | None = attrs.field(default=None, validator=_check_optional)
    os_version: str | None = attrs.field(default=None, validator=_check_optional)
    os_features: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)
    features: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)

    @classmethod
    def parse(cls, value: str) -> Platform:
        """Parse ``os/architecture[/variant]`` such as ``linux/amd64`` or ``linux/arm64/v8``."""
        if not isinstance(value, str):
            raise InvalidPlatform(f"a platform must be a string, got {type(value).__name__}")
        parts = value.split("/")
        if len(parts) not in (2, 3) or not all(_PLATFORM_PART.fullmatch(p) for p in parts):
            raise InvalidPlatform(
                f"platform {value[:140]!r} is not 'os/architecture[/variant]' "
                "(for example 'linux/amd64' or 'linux/arm64/v8'; letters, digits, '_', '.', '-')"
            )
        variant = parts[2] if len(parts) == 3 else None
        return cls(architecture=parts[1], os=parts[0], variant=variant)

    @classmethod
    def from_json(cls, obj: object, *, where: str = "platform") -> Platform:
        """Read the OCI ``platform`` object; raise :class:`InvalidManifest` naming the bad field."""
        if not isinstance(obj, dict):
            raise InvalidManifest(f"{where}: expected a JSON object, got {json_type(obj)}")
        required: dict[str, str] = {}
        for key in ("architecture", "os"):
            value = obj.get(key)
            if not isinstance(value, str) or not value:
                got = "missing" if key not in obj else f"got {json_type(value)} {value!r}"
                raise InvalidManifest(f"{where}.{key}: expected a non-empty string, {got}")
            required[key] = value
        optional: dict[str, str | None] = {}
        for key in ("variant", "os.version"):
            value = obj.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidManifest(f"{where}.{key}: expected a string, got {json_type(value)}")
            optional[key] = value or None  # Go writes "" as absent, so read it that way
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("os.features", "features"):
            value = obj.get(key)
            lists[key] = _json_str_list(value, f"{where}.{key}")
        return cls(
            architecture=required["architecture"],
            os=required["os"],
            variant=optional["variant"],
            os_version=optional["os.version"],
            os_features=lists["os.features"],
            features=lists["features"],
        )

    def to_json(self) -> dict[str, object]:
        """The OCI ``platform`` object, without empty fields."""
        out: dict[str, object] = {"architecture": self.architecture, "os": self.os}
        if self.os_version is not None:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant is not None:
            out["variant"] = self.variant
        if self.features:
            out["features"] = list(self.features)
        return out

    def matches(self, other: Platform) -> bool:
        """True when os and architecture are equal, and the variants too if both name one."""
        if self.os != other.os or self.architecture != other.architecture:
            return False
        return self.variant is None or other.variant is None or self.variant == other.variant

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def _json_str_list(value: object, where: str) -> tuple[str, ...]:
    """A JSON array of strings (or null/absent) as a tuple."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidManifest(f"{where}: expected an array of strings, got {json_type(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidManifest(f"{where}[{i}]: expected a string, got {json_type(item)}")
    return tuple(value)


def json_annotations(value: object, where: str) -> Annotations:
    """A JSON ``annotations`` object (or null/absent) as :class:`Annotations`."""
    if value is None:
        return _NO_ANNOTATIONS
    if not isinstance(value, dict):
        raise InvalidManifest(f"{where}: expected an object of strings, got {json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidManifest(f"{where}[{key!r}]: expected a string, got {json_type(item)}")
    return Annotations(value)


def _to_digest(value: Digest | str) -> Digest:
    return Digest.parse(value)


def _check_media_type(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidError("a descriptor's media type must be a non-empty string")


def _check_size(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
        raise InvalidError(
            f"a descriptor's size must be an integer from 0 to 2**63-1, got {value!r}"
        )


def _check_optional_str(
    instance: object, attribute: attrs.Attribute[str | None], value: object
) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidError(f"a descriptor's {attribute.name} must be a string or None")


def _check_platform(
    instance: object, attribute: attrs.Attribute[Platform | None], value: object
) -> None:
    if value is not None and not isinstance(value, Platform):
        raise InvalidError(f"a descriptor's platform must be a Platform or None, got {value!r}")


@attrs.frozen
class Descriptor:
    """A typed pointer to content: its media type, digest and size, plus optional details.

    The ``digest`` argument may be given as a string; it is parsed into a :class:`Digest`.
    """

    media_type: str = attrs.field(validator=_check_media_type)
    digest: Digest = attrs.field(converter=_to_digest)
    size: int = attrs.field(validator=_check_size)
    urls: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)
    annotations: Mapping[str, str] = attrs.field(default=_NO_ANNOTATIONS, converter=_to_annotations)
    platform: Platform | None = attrs.field(default=None, validator=_check_platform)
    artifact_type: str | None = attrs.field(default=None, validator=_check_optional_str)

    @classmethod
    def of(cls, media_type: str, data: bytes, *, algorithm: str = "sha256") -> Descriptor:
        """The descriptor of ``data`` (digest and size computed here)."""
        return cls(media_type=media_type, digest=Digest.of(data, algorithm), size=len(data))

    @classmethod
    def from_json(cls, obj: object, *, where: str = "descriptor") -> Descriptor:
        """Read an OCI descriptor object; raise :class:`InvalidManifest` naming the bad field.

        ``where`` is the descriptor's path in its manifest (``"layers[2]"``), used in messages.
        Unknown fields (``data``, vendor extensions) are ignored.
        """
        if not isinstance(obj, dict):
            raise InvalidManifest(f"{where}: expected a descriptor object, got {json_type(obj)}")
        media_type = obj.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            got = "missing" if "mediaType" not in obj else f"got {json_type(media_type)}"
            raise InvalidManifest(f"{where}.mediaType: expected a non-empty string, {got}")
        if "digest" not in obj:
            raise InvalidManifest(f"{where}.digest: missing")
        try:
            digest = Digest.parse(obj["digest"])
        except InvalidDigest as exc:
            raise InvalidManifest(f"{where}.digest: {exc.message}") from exc
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
            got = "missing" if "size" not in obj else f"got {json_type(size)} {size!r:.40}"
            raise InvalidManifest(f"{where}.size: expected an integer from 0 to 2**63-1, {got}")
        urls = _json_str_list(obj.get("urls"), f"{where}.urls")
        annotations = json_annotations(obj.get("annotations"), f"{where}.annotations")
        platform_obj = obj.get("platform")
        platform = (
            None
            if platform_obj is None
            else Platform.from_json(platform_obj, where=f"{where}.platform")
        )
        artifact_type = obj.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise InvalidManifest(
                f"{where}.artifactType: expected a string, got {json_type(artifact_type)}"
            )
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            urls=urls,
            annotations=annotations,
            platform=platform,
            artifact_type=artifact_type or None,
        )

    def to_json(self) -> dict[str, Any]:
        """The OCI descriptor object, without empty fields; ready for :func:`json.dumps`."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        return out
