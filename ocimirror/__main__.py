"""``python -m ocimirror``: the command line."""

from ocimirror.cli import console

console()
