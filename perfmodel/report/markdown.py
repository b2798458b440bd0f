"""The Markdown writer: the same sections as the HTML page, figures linked from ``figures/``, tables as pipe tables.

Every piece of text is escaped before it is written, since much of it comes from the review file (title,
description, labels, device names): many Markdown renderers pass raw HTML through, so ``<script>`` must arrive as
text, and brackets must not turn a label into a link or an image.
"""
from __future__ import annotations

from perfmodel.report.document import Section, Table, fmt

_MARKDOWN_ESCAPES = str.maketrans({"\\": "\\\\", "`": "\\`", "[": "\\[", "]": "\\]", "<": "&lt;", ">": "&gt;",
                                   "\n": " ", "\r": " "})


def _text(text: str) -> str:
    """Text shown as written: no HTML, no links, images or code spans, one line."""
    return str(text).translate(_MARKDOWN_ESCAPES)


def _escape(text: str) -> str:
    """Text of a table cell or caption (as :func:`_text`, and a '|' does not end the cell)."""
    return _text(text).replace("|", "\\|")


def table_markdown(table: Table) -> str:
    """A table's visible rows as a pipe table, numbers right-aligned, and a link to its CSV."""
    link = f"All {len(table.frame)} rows: [{table.csv_path}]({table.csv_path})"
    if table.shown == 0:
        return f"**{_text(table.title)}.** {link}"
    frame = table.visible()
    numeric = [frame[c].dtype.kind in "iuf" for c in frame.columns]
    lines = ["| " + " | ".join(_escape(str(c)) for c in frame.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(_escape(fmt(v)) for v in row) + " |" for row in frame.itertuples(index=False, name=None)]
    return f"**{_text(table.title)}**\n\n" + "\n".join(lines) + f"\n\n{link}"


def render(title: str, description: str, meta: str, sections: list[Section]) -> str:
    """The whole report as Markdown."""
    out = [f"# {_text(title)}", ""]
    if description:
        out += [_text(description), ""]
    out += [f"_{_text(meta)}_", ""]
    number = 0
    for i, section in enumerate(sections, 1):
        out += [f"## {i}. {_text(section.title)}", ""]
        for paragraph in section.paragraphs:
            out += [_text(paragraph), ""]
        for fig in section.figures:
            number += 1
            out += [f"![{_escape(fig.caption)}]({fig.png_path})", "", f"*Figure {number}. {_escape(fig.caption)}*", ""]
        for table in section.tables:
            out += [table_markdown(table), ""]
    return "\n".join(out).rstrip() + "\n"
