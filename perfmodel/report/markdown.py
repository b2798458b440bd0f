"""The Markdown writer: the same sections as the HTML page, figures linked from ``figures/``, tables as pipe tables."""
from __future__ import annotations

from perfmodel.report.document import Section, Table, fmt


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    """A table's visible rows as a pipe table, numbers right-aligned, and a link to its CSV."""
    link = f"All {len(table.frame)} rows: [{table.csv_path}]({table.csv_path})"
    if table.shown == 0:
        return f"**{table.title}.** {link}"
    frame = table.visible()
    numeric = [frame[c].dtype.kind in "iuf" for c in frame.columns]
    lines = ["| " + " | ".join(_escape(str(c)) for c in frame.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(_escape(fmt(v)) for v in row) + " |" for row in frame.itertuples(index=False, name=None)]
    return f"**{table.title}**\n\n" + "\n".join(lines) + f"\n\n{link}"


def render(title: str, description: str, meta: str, sections: list[Section]) -> str:
    """The whole report as Markdown."""
    out = [f"# {title}", ""]
    if description:
        out += [description, ""]
    out += [f"_{meta}_", ""]
    number = 0
    for i, section in enumerate(sections, 1):
        out += [f"## {i}. {section.title}", ""]
        for paragraph in section.paragraphs:
            out += [paragraph, ""]
        for fig in section.figures:
            number += 1
            out += [f"![{_escape(fig.caption)}]({fig.png_path})", "", f"*Figure {number}. {fig.caption}*", ""]
        for table in section.tables:
            out += [table_markdown(table), ""]
    return "\n".join(out).rstrip() + "\n"
