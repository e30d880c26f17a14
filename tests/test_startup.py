"""Start-up stays fast: ``ocimirror --help`` and ``--version`` load no I/O library, and a
command loads only what it uses (``repository list`` neither the upstream client nor the server).

Each check runs the command line in a fresh interpreter and reads ``sys.modules`` at its end:
what a module imports at its top, or what a parser touches while it is built, shows here. The
times themselves are in docs/performance.md ("Start-up"); a test does not time anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import ocimirror

#: Libraries a command that reads or writes nothing has no use for.
HEAVY = {
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "greenlet",
    "httpx",
    "httpcore",
    "fsspec",
    "s3fs",
    "starlette",
    "granian",
    "jwt",
    "argon2",
    "cryptography",
    "tqdm",
    "asyncio",
}

#: Parts of ocimirror a command that reads or writes nothing has no use for.
HEAVY_OCIMIRROR = (
    "ocimirror.registry",
    "ocimirror.backends",
    "ocimirror.upstream",
    "ocimirror.sync",
    "ocimirror.server",
    "ocimirror.asgi",
)

#: What listing repositories must not load: the upstream client, the server, progress bars,
#: object storage and the PostgreSQL dialect (the home is SQLite and files).
NOT_FOR_A_LISTING = {
    "httpx",
    "httpcore",
    "s3fs",
    "starlette",
    "granian",
    "tqdm",
    "jwt",
    "argon2",
    "cryptography",
}
NOT_FOR_A_LISTING_PREFIXES = (
    "ocimirror.upstream",
    "ocimirror.sync",
    "ocimirror.transfer",
    "ocimirror.layout",
    "ocimirror.server",
    "ocimirror.asgi",
    "sqlalchemy.dialects.postgresql",
)

#: Run in a fresh interpreter: the command line with ``argv``, then the exit status and the
#: names of every loaded module as the last line of stdout.
PROGRAM = """
import json, sys
from ocimirror.cli import main
try:
    status = main({argv!r})
except SystemExit as exc:
    status = exc.code
sys.stdout.write("\\n" + json.dumps({{"status": status, "modules": sorted(sys.modules)}}) + "\\n")
"""


def _env() -> dict[str, str]:
    """This environment without ``OCIMIRROR_*`` settings, so the home alone decides."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OCIMIRROR_")}


def run_program(source: str) -> tuple[str, Any]:
    """Run ``source`` in a fresh interpreter: what it printed before its last line, and that
    line read as JSON (its report)."""
    done = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    printed, _, report = done.stdout.rstrip("\n").rpartition("\n")
    return printed, json.loads(report)


def run_cli(*argv: str) -> tuple[int, str, set[str]]:
    """The exit status, what was printed before the report, and the loaded modules."""
    printed, data = run_program(PROGRAM.format(argv=list(argv)))
    return data["status"], printed, set(data["modules"])


def loaded(modules: set[str], tops: set[str], prefixes: tuple[str, ...]) -> list[str]:
    """The loaded modules whose top-level package is in ``tops`` or whose name starts with
    one of ``prefixes``."""
    return sorted(m for m in modules if m.partition(".")[0] in tops or m.startswith(prefixes))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["repository", "--help"],
        ["repository", "sync", "--help"],
        ["remote", "create", "--help"],
        ["serve", "--help"],
    ],
    ids=" ".join,
)
def test_help_and_version_load_no_io_library(argv: list[str]) -> None:
    """Printing help or the version loads no database, HTTP, storage or server module."""
    status, printed, modules = run_cli(*argv)
    assert status == 0 and printed
    assert loaded(modules, HEAVY, HEAVY_OCIMIRROR) == []


def test_listing_repositories_loads_no_upstream_client_and_no_server(tmp_path: Path) -> None:
    """``repository list`` in a home that has a database opens SQLite and files, and nothing
    for syncs."""
    home = str(tmp_path / "home")
    status, _, _ = run_cli("--home", home, "repository", "create", "--name", "a")
    assert status == 0
    status, printed, modules = run_cli("--home", home, "repository", "list")
    assert status == 0 and [r["name"] for r in json.loads(printed)] == ["a"]
    assert "sqlalchemy" in modules  # the check below looks at a real run
    assert loaded(modules, NOT_FOR_A_LISTING, NOT_FOR_A_LISTING_PREFIXES) == []


LISTINGS = [
    ["repository", "list"],
    ["remote", "list"],
    ["distribution", "list"],
    ["user", "list"],
    ["remote", "pull-through", "list"],
    ["distribution", "pull-through", "list"],
]


@pytest.mark.parametrize("argv", LISTINGS, ids=" ".join)
def test_a_listing_in_a_home_where_nothing_was_stored_opens_nothing(
    tmp_path: Path, argv: list[str]
) -> None:
    """No database yet: nothing to list. The answer is ``[]``, as from an empty database,
    without loading the database layer, and the read creates no home."""
    home = tmp_path / "home"
    status, printed, modules = run_cli("--home", str(home), *argv)
    assert status == 0 and json.loads(printed) == []
    assert loaded(modules, HEAVY, HEAVY_OCIMIRROR) == []
    assert not home.exists()
    # The same listing once something was stored answers from the database.
    assert run_cli("--home", str(home), "remote", "create", "--name", "r",
                   "--url", "https://registry.example", "--upstream-name", "x")[0] == 0  # fmt: skip
    status, printed, modules = run_cli("--home", str(home), *argv)
    assert status == 0 and "sqlalchemy" in modules
    names = [item["name"] for item in json.loads(printed)]
    assert names == (["r"] if argv == ["remote", "list"] else [])


def test_importing_the_package_loads_nothing_heavy() -> None:
    """``import ocimirror`` loads its exports when they are first used, not before."""
    script = "import json, sys, ocimirror; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    modules = set(json.loads(done.stdout))
    assert loaded(modules, HEAVY | {"attrs"}, HEAVY_OCIMIRROR) == []


PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def _console_script() -> list[str]:
    """What the installed ``ocimirror`` script runs (pyproject's ``[project.scripts]``)."""
    module, _, function = PYPROJECT["project"]["scripts"]["ocimirror"].partition(":")
    return ["-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


@pytest.mark.parametrize(
    "entry", [["-m", "ocimirror"], _console_script()], ids=["python -m", "console script"]
)
def test_version_prints_the_package_version(entry: list[str]) -> None:
    """``ocimirror --version`` prints ``ocimirror X.Y.Z``, the version pyproject.toml gives."""
    done = subprocess.run(
        [sys.executable, *entry, "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ocimirror {ocimirror.__version__}\n"
    assert PYPROJECT["project"]["version"] == ocimirror.__version__


#: Run in a fresh interpreter: ``call`` with ``sys.argv`` set to the command line ``argv``;
#: prints, at exit, for each ``gc.freeze()`` whether SQLAlchemy was loaded by then.
SETTLE_PROGRAM = """
import atexit, gc, json, sys
froze = []
_freeze = gc.freeze
def freeze():
    froze.append("sqlalchemy" in sys.modules)
    _freeze()
gc.freeze = freeze
atexit.register(lambda: print("\\n" + json.dumps(froze)))
sys.argv = ["ocimirror", *{argv!r}]
{call}
"""


def freezes(call: str, *argv: str) -> list[bool]:
    """For each ``gc.freeze()`` that ``call`` made, whether SQLAlchemy was loaded by then."""
    _, froze = run_program(SETTLE_PROGRAM.format(argv=list(argv), call=call))
    return [bool(loaded) for loaded in froze]


def test_the_command_freezes_its_imports_and_main_called_by_a_program_does_not(
    tmp_path: Path,
) -> None:
    """The ``ocimirror`` command owns its process: once its stores are open it freezes what it
    imported (``gc.freeze``), and again at its end, so the interpreter's exit does not walk
    every module once more. ``main()`` called by another program leaves that program's
    collector alone."""
    home = str(tmp_path / "home")
    module, _, function = PYPROJECT["project"]["scripts"]["ocimirror"].partition(":")
    command = f"from {module} import {function}; {function}()"
    create = ["--home", home, "repository", "create", "--name", "a"]
    assert freezes(command, *create) == [True, True]
    # Nothing to open (an empty home's listing): only the end.
    assert freezes(command, "--home", str(tmp_path / "empty"), "repository", "list") == [False]
    assert freezes("import runpy; runpy.run_module('ocimirror', run_name='__main__')",
                   "--home", home, "repository", "list") == [True, True]  # fmt: skip
    library = "from ocimirror.cli import main; main(sys.argv[1:])"
    assert freezes(library, "--home", home, "repository", "list") == []
