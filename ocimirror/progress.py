"""Progress displays for syncs: tqdm bars on a terminal, tqdm's notebook widget in Jupyter.

A sync reports :class:`~ocimirror.sync.SyncProgress` to a callback; :class:`SyncBars` is the
callback that draws it. The CLI draws on stderr; in a notebook, ``repo.sync()`` and
``registry.sync_all()`` draw a widget by themselves (``progress=False`` turns it off), through
:mod:`tqdm.auto`, which picks the notebook widget when ipywidgets is installed (the
``notebook`` extra) and plain text otherwise. tqdm is imported on the first report, never at
``import ocimirror``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocimirror.sync import SyncProgress

__all__ = ["SyncBars", "in_notebook", "reporting"]


def in_notebook() -> bool:
    """Whether this process is an IPython kernel (Jupyter, nbclient), where a widget shows."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class SyncBars:
    """Progress bars for syncs: one line per repository, or with ``combined`` one line that
    adds up every repository (tags done, manifests, blobs, bytes), whichever process syncs
    it. ``notebook`` draws with :mod:`tqdm.auto` (a widget in Jupyter), otherwise on
    ``file`` (stderr). Close it when the syncs are done."""

    def __init__(
        self, *, combined: bool = False, notebook: bool = False, file: IO[str] | None = None
    ) -> None:
        self.combined = combined
        self.notebook = notebook
        self.file = file
        self._bars: dict[str, Any] = {}
        self._latest: dict[str, SyncProgress] = {}

    def __call__(self, p: SyncProgress) -> None:
        if not self.combined:
            self._draw(p.repository, p.repository, [p])
            return
        self._latest[p.repository] = p
        repos = list(self._latest.values())
        done = sum(r.phase == "done" for r in repos)
        self._draw("all", f"{done}/{len(repos)} repositories", repos)

    def _new_bar(self, desc: str) -> Any:
        if self.notebook:
            from tqdm.auto import tqdm as auto

            return auto(desc=desc, unit="tag", leave=True)
        from tqdm import tqdm

        out = self.file or sys.stderr
        return tqdm(desc=desc, unit="tag", file=out, leave=True, dynamic_ncols=True)

    def _draw(self, key: str, desc: str, parts: list[SyncProgress]) -> None:
        bar = self._bars.get(key)
        if bar is None:
            bar = self._bars[key] = self._new_bar(desc)
        total = sum(p.tags_total for p in parts)
        if total and bar.total != total:
            bar.reset(total=total)  # what a notebook widget redraws its bar's length from
        bar.n = sum(p.tags_done for p in parts)
        bar.set_description_str(desc, refresh=False)
        phases = {p.phase for p in parts}
        phase = parts[0].phase if len(phases) == 1 else "syncing"
        manifests = (
            sum(p.manifests_downloaded for p in parts),
            sum(p.manifests_reused for p in parts),
        )
        blobs = (sum(p.blobs_downloaded for p in parts), sum(p.blobs_reused for p in parts))
        megabytes = sum(p.bytes_downloaded for p in parts) / 1e6
        bar.set_postfix_str(
            f"{phase} manifests {manifests[0]}+{manifests[1]} blobs {blobs[0]}+{blobs[1]} "
            f"{megabytes:.1f} MB",
            refresh=True,
        )

    def close(self) -> None:
        """Finish every bar (a notebook widget stays, showing the final counts)."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


@contextmanager
def reporting(
    progress: Callable[[SyncProgress], None] | bool | None, *, combined: bool = False
) -> Iterator[Callable[[SyncProgress], None] | None]:
    """The callback a sync reports to while the block runs; bars it draws are closed after.

    ``None``: a notebook widget when running in a Jupyter kernel, nothing otherwise;
    ``False``: nothing; ``True``: bars (a widget in Jupyter, stderr elsewhere); a callable:
    that callable.
    """
    if progress is None:
        progress = in_notebook()
    if progress is False:
        yield None
    elif progress is True:
        bars = SyncBars(combined=combined, notebook=in_notebook())
        try:
            yield bars
        finally:
            bars.close()
    else:
        yield progress
