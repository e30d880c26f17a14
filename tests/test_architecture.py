"""The pure domain stays pure: ``ocimirror.core`` imports no I/O library.

Two checks per module: importing it in a fresh interpreter loads none of the forbidden
packages, and its source imports only from an allow-list (so a lazy import inside a function
is caught too).

The package root ``ocimirror/__init__.py`` loads its exports lazily, so importing a core
module in a fresh interpreter runs the real package root too: a regression there shows here.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

#: Packages that do I/O or belong to another layer; none may be loaded by importing core.
FORBIDDEN = {"httpx", "fsspec", "sqlalchemy", "s3fs", "starlette", "asyncio"}

#: The only top-level modules core's source may import.
ALLOWED = {
    "__future__",
    "abc",
    "attr",
    "attrs",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "enum",
    "functools",
    "hashlib",
    "itertools",
    "json",
    "math",
    "operator",
    "re",
    "string",
    "types",
    "typing",
    "typing_extensions",
    "ocimirror",
}

#: Within ocimirror, core may use only itself and the errors module.
ALLOWED_OCIMIRROR = ("ocimirror.errors", "ocimirror.core")

_SPEC = importlib.util.find_spec("ocimirror")  # finds the package without running it
assert _SPEC is not None and _SPEC.submodule_search_locations is not None
PACKAGE_DIR = Path(next(iter(_SPEC.submodule_search_locations)))
CORE_DIR = PACKAGE_DIR / "core"

#: Run in a fresh interpreter: import one core module, print the names of every loaded module.
IMPORT_SCRIPT = """
import importlib, json, sys
importlib.import_module({module!r})
print(json.dumps(sorted(sys.modules)))
"""


def core_modules() -> list[str]:
    """Every module of the ocimirror.core package, the package itself included."""
    names = ["ocimirror.core"]
    for info in pkgutil.walk_packages([str(CORE_DIR)], prefix="ocimirror.core."):
        names.append(info.name)
    return sorted(names)


def module_path(name: str) -> Path:
    """The source file of a core module."""
    relative = Path(*name.split(".")[2:])
    package = CORE_DIR / relative / "__init__.py"
    return package if package.exists() else (CORE_DIR / relative).with_suffix(".py")


def imported_modules(name: str) -> list[str]:
    """The absolute names of every module the source of ``name`` imports, at any depth."""
    path = module_path(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                found.append(".".join([*base, node.module] if node.module else base))
            else:
                found.append(node.module or "")
    return found


MODULES = core_modules()


def test_the_core_package_has_the_expected_modules() -> None:
    """The walk finds the core modules, so the checks below are not vacuous."""
    expected = {"digest", "mediatype", "descriptor", "reference", "manifest"}
    assert {f"ocimirror.core.{name}" for name in expected} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_core_module_loads_no_io_library(module: str) -> None:
    """A fresh interpreter that imports the module has none of the forbidden packages loaded."""
    script = IMPORT_SCRIPT.format(module=module)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = {name.partition(".")[0] for name in json.loads(result.stdout)}
    assert not loaded & FORBIDDEN, f"{module} loads {sorted(loaded & FORBIDDEN)}"


@pytest.mark.parametrize("module", MODULES)
def test_a_core_module_imports_only_pure_modules(module: str) -> None:
    """Every import in the module's source is on the allow-list of pure modules."""
    for imported in imported_modules(module):
        top = imported.partition(".")[0]
        assert top in ALLOWED, f"{module} imports {imported!r}, which core may not use"
        if top == "ocimirror":
            assert imported.startswith(ALLOWED_OCIMIRROR), (
                f"{module} imports {imported!r}; core may import only ocimirror.errors "
                "and ocimirror.core"
            )
