"""What a process ocimirror owns may do that a library must not do to its host's process.

The ``ocimirror`` command and a sync worker (``python -m ocimirror.workers``) are processes of
ocimirror's own; a script, a notebook or a service that imports ocimirror is not, and nothing
here runs in it.

:func:`settle` is :func:`gc.freeze`: the modules such a process imports (SQLAlchemy, aiohttp,
httpx, ..., some 80,000 objects the cycle collector tracks) live as long as the process, yet
every full collection walks them all again, and so does the interpreter on its way out. Frozen,
they are out of the collector's view: a command exits 0.1-0.2 s sooner on the machine of
``docs/performance.md`` ("Start-up"), and a worker's full collections during a sync cost what
the sync's own objects cost.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["settle"]

_log = logging.getLogger("ocimirror.process")


def settle() -> None:
    """Freeze every object alive now (:func:`gc.freeze`); only in a process ocimirror owns.

    Objects created later are collected as always. What is frozen is never collected, so call
    it when what is alive is what the process keeps: after its imports and its stores are
    open, and again when its work is done.
    """
    gc.freeze()
    _log.debug("%d objects out of the cycle collector's view", gc.get_freeze_count())
