"""Text from run and data files made safe for markdown: table cells, lines and code spans
(a run or subject name may hold a newline, '|', a backtick or HTML)."""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def md_escape(value) -> str:
    """Text from a run or data file made safe for a markdown table cell or line: control
    characters (a newline ends the row) become a space, '|' and '\\' are escaped, and '<', '>', '&'
    are HTML entities, so no name carries markup into the page."""
    import html

    text = _CONTROL.sub(" ", str(value)).replace("\\", "\\\\")
    return html.escape(text, quote=False).replace("|", "\\|")


def md_code(value) -> str:
    """A name in backticks, or escaped text when a backtick, control character or '|' would break the span."""
    text = str(value)
    return f"`{text}`" if not re.search(r"[`|\x00-\x1f\x7f]", text) else md_escape(text)


def md_table(table) -> str:
    """A DataFrame as a markdown table with every header and cell escaped (md_escape)."""
    table = table.copy()
    table.columns = [md_escape(c) for c in table.columns]
    for column in table.columns:
        table[column] = table[column].map(md_escape)
    return table.to_markdown(index=False, disable_numparse=True)
