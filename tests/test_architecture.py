"""The architecture holds: ``ocimirror.core`` imports no I/O library, no import circle exists
anywhere in the package at run time, and each floor imports only what is below it.

Two checks per core module: importing it in a fresh interpreter loads none of the forbidden
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


# -- the whole package: import edges at run time --------------------------------------------

#: Every module of the package, by name, with its source file.
ALL_MODULES: dict[str, Path] = {"ocimirror": PACKAGE_DIR / "__init__.py"}
for _info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="ocimirror."):
    _relative = Path(*_info.name.split(".")[1:])
    _package = PACKAGE_DIR / _relative / "__init__.py"
    ALL_MODULES[_info.name] = (
        _package if _package.exists() else (PACKAGE_DIR / _relative).with_suffix(".py")
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(name: str) -> set[str]:
    """The ocimirror modules ``name`` imports when it runs: at module level or inside a
    function (a lazy import still runs), but not under ``if TYPE_CHECKING:``. ``from a import
    b`` counts as importing ``a.b`` when that is a module, else ``a``."""
    path = ALL_MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.add(candidate if candidate in ALL_MODULES else module)
    # ``_EXPORTS`` of the package root are imported lazily by name (importlib).
    for node in ast.walk(tree):
        if name == "ocimirror" and isinstance(node, ast.Constant) and node.value in ALL_MODULES:
            found.add(str(node.value))
    return {m for m in found if m in ALL_MODULES and m != name}


GRAPH = {name: runtime_imports(name) for name in ALL_MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, if any (depth-first search over a module graph)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_the_service_modules() -> None:
    """The walk finds the package's modules and their imports, so the checks are not vacuous."""
    assert {"ocimirror.sync", "ocimirror.registry", "ocimirror.backends.sql.store"} <= set(GRAPH)
    assert "ocimirror.ingest" in GRAPH["ocimirror.sync"]
    assert "ocimirror.repository" in GRAPH["ocimirror.registry"]


def test_the_circle_finder_finds_a_circle() -> None:
    """A graph with a circle through three modules is caught, one without is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_back_at_run_time() -> None:
    """No import circle inside ocimirror, lazy imports included."""
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH) or [])


def test_the_upstream_client_knows_no_store_no_remote_and_not_the_package_root() -> None:
    """``upstream/`` takes plain settings and owns its sink protocol."""
    for name, imports in GRAPH.items():
        if name.startswith("ocimirror.upstream"):
            bad = {
                m
                for m in imports
                if m == "ocimirror"
                or m.startswith("ocimirror.backends")
                or m in ("ocimirror.remote", "ocimirror.registry", "ocimirror.repository")
            }
            assert not bad, f"{name} imports {sorted(bad)}"


SERVICES = {
    "ocimirror",
    "ocimirror.registry",
    "ocimirror.repository",
    "ocimirror.sync",
    "ocimirror.transfer",
    "ocimirror.ingest",
    "ocimirror.blocking",
    "ocimirror.cli",
    "ocimirror.asgi",
    "ocimirror.remote",
    "ocimirror.distribution",
    "ocimirror.versions",
    "ocimirror.users",
}


def test_backends_import_no_service_module() -> None:
    """Stores know core, errors and each other; never the services built on them."""
    for name, imports in GRAPH.items():
        if name.startswith("ocimirror.backends"):
            bad = {
                m
                for m in imports
                if m in SERVICES or m.startswith(("ocimirror.server", "ocimirror.upstream"))
            }
            assert not bad, f"{name} imports {sorted(bad)}"


def test_services_name_the_store_protocols_not_the_sql_classes() -> None:
    """Only the place that opens the default store names the SQL implementation."""
    allowed = {"ocimirror.registry", "ocimirror.server.serve"}
    for name, imports in GRAPH.items():
        if name.startswith("ocimirror.backends") or name in allowed:
            continue
        assert not any(m.startswith("ocimirror.backends.sql") for m in imports), name


def test_no_module_passes_about_800_lines() -> None:
    """Files along their seams: no module of the package is a house of several rooms."""
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in ALL_MODULES.items()
    }
    assert max(sizes.values()) <= 820, max(sizes.items(), key=lambda kv: kv[1])
