"""``python -m ocimirror``: the command line."""

import sys

from ocimirror.cli import main

sys.exit(main())
