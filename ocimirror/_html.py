"""HTML for notebooks: the small, escaped tables behind the objects' ``_repr_html_``.

Jupyter shows an object through its ``_repr_html_`` when it has one. Every value goes through
:func:`html.escape` here, so a name or a description can never become markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["fields", "table"]


def _cell(value: object, tag: str = "td") -> str:
    text = "" if value is None else str(value)
    return f"<{tag}>{html.escape(text)}</{tag}>"


def table(
    rows: Iterable[Sequence[object]],
    *,
    head: Sequence[str] = (),
    title: str | None = None,
) -> str:
    """A table of ``rows`` under the column names ``head``, with an optional bold title."""
    parts = [f"<b>{html.escape(title)}</b>"] if title else []
    parts.append("<table>")
    if head:
        parts.append("<tr>" + "".join(_cell(h, "th") for h in head) + "</tr>")
    parts += ["<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows]
    parts.append("</table>")
    return "".join(parts)


def fields(title: str, values: Mapping[str, object]) -> str:
    """A two-column table of field names and values, under a bold title."""
    return table(values.items(), title=title)
