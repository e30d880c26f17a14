"""Exports that load on first use (PEP 562), so importing a package stays light.

A package lists ``name -> module`` and gets its module ``__getattr__`` and ``__dir__``::

    __getattr__, __dir__ = exports(__name__, {"Thing": "pkg.heavy"}, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(
    package: str, table: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` that imports ``table[name]`` on first use (and keeps the value in the
    package's ``namespace``), and ``__dir__`` that lists the package's ``__all__``."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace["__all__"])

    return __getattr__, __dir__
