"""Errors: one table gives each error its OCI code and HTTP status."""

from __future__ import annotations

import inspect

import pytest

import ocimirror.errors as errors
from ocimirror.errors import ERRORS, OCI_STATUS, OcimirrorError, oci_error

CLASSES = [
    obj
    for name in errors.__all__
    if inspect.isclass(obj := getattr(errors, name)) and issubclass(obj, OcimirrorError)
]


def test_every_error_class_is_exported_and_found() -> None:
    """The walk over the module finds the hierarchy, so the checks below are not vacuous."""
    assert len(CLASSES) > 25
    defined = {
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, OcimirrorError)
    }
    assert defined == set(CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_no_class_carries_its_own_code_or_status(cls: type[OcimirrorError]) -> None:
    """Code and status live in the table only: a class attribute would be a second truth."""
    for attribute in ("code", "status"):
        if attribute in vars(cls):
            assert cls is OcimirrorError and isinstance(vars(cls)[attribute], property)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_an_error_answers_with_its_nearest_row_of_the_table(cls: type[OcimirrorError]) -> None:
    """``exc.code`` and ``exc.status`` are the row of the class or its nearest listed base."""
    exc = cls("boom") if cls is not errors.UpstreamError else cls("boom", status_code=502)
    nearest = next(k for k in cls.__mro__ if k in ERRORS)
    assert (exc.code, exc.status) == ERRORS[nearest] == oci_error(cls)
    assert exc.to_oci()["code"] == exc.code


@pytest.mark.parametrize(
    ("cls", "code", "status"),
    [
        (errors.ManifestTooLarge, "MANIFEST_INVALID", 413),
        (errors.ManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", 400),
        (errors.RangeNotSatisfiable, "UNSUPPORTED", 416),
        (errors.ChunkOutOfOrder, "BLOB_UPLOAD_INVALID", 416),
        (errors.Unsupported, "UNSUPPORTED", 405),
        (errors.LeaseLost, "DENIED", 409),
        (errors.SizeMismatch, "SIZE_INVALID", 400),
        (errors.TagNotFound, "MANIFEST_UNKNOWN", 404),
        (errors.SchemaError, "UNKNOWN", 500),
    ],
)
def test_table_rows(cls: type[OcimirrorError], code: str, status: int) -> None:
    """A few rows, as the registry API answers them."""
    assert oci_error(cls) == (code, status)


def test_oci_status_is_derived_from_the_table() -> None:
    """The code-to-status view agrees with the first class that answers with each code."""
    for code, status in OCI_STATUS.items():
        first = next(row for row in ERRORS.values() if row[0] == code)
        assert first == (code, status)
    assert set(OCI_STATUS) == {code for code, _ in ERRORS.values()}
