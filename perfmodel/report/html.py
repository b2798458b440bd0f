"""The HTML writer: one self-contained page (figures inlined as base64 PNG, no network), readable printed.

The page carries a few lines of script (in the head, so that it sees everything after it) that record script
errors, ``console.error`` calls and failed loads, and once the window has loaded check that every image decoded
(``complete`` and ``naturalWidth > 0``). The results go on ``<body data-images-ok="true|false" data-errors="N">``
and into the hidden ``#image-check`` and ``#error-check`` elements: a headless browser dumping the DOM can then
tell a blank plot or a broken page from a good one without any test library.
"""
from __future__ import annotations

import base64
import html
import numbers
import struct
from string import Template

import numpy as np
import pandas as pd

from perfmodel.report.document import Figure, Section, Table, fmt

CSS = """
:root { --ink: #1a1a1a; --muted: #555; --rule: #c8c8c8; --band: #f3f3f3; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); max-width: 1060px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.7em; margin: 0 0 .3em; }
h2 { font-size: 1.3em; margin: 1.8em 0 .5em; padding-bottom: .2em; border-bottom: 2px solid var(--ink); }
h3 { font-size: 1em; margin: 1.2em 0 .3em; }
.lead { font-size: 1.05em; margin: 0 0 .4em; }
.meta { color: var(--muted); font-size: .85em; margin: 0; }
nav.toc { border: 1px solid var(--rule); padding: .4em 1.2em; margin: 1.2em 0; columns: 2; }
nav.toc h2 { border: 0; font-size: 1em; margin: .4em 0; column-span: all; }
nav.toc ol { margin: 0; }
figure { margin: 1em 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { font-size: .85em; color: var(--muted); text-align: left; margin-top: .3em; }
.table-wrap { overflow-x: auto; margin: .3em 0 .2em; }
table { border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
th, td { padding: 2px 7px; border-bottom: 1px solid var(--rule); white-space: nowrap; }
th { text-align: left; border-bottom: 1.5px solid var(--ink); vertical-align: bottom; white-space: normal; }
td.num { text-align: right; }
td.wrap { white-space: normal; min-width: 22em; }
tbody tr:nth-child(even) { background: var(--band); }
.csv { font-size: .8em; color: var(--muted); margin: 0 0 .8em; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { font-size: 10pt; max-width: none; padding: 0; }
  nav.toc { break-after: page; }
  section { break-before: page; }
  section:first-of-type { break-before: auto; }
  h2, h3 { break-after: avoid; }
  figure, .table-block { break-inside: avoid; }
  figure img { max-height: 125mm; width: auto; border: 0; }
  .table-wrap { overflow: visible; }
  table { font-size: 6.5pt; }
  th, td { padding: 1px 3px; }
  tbody tr:nth-child(even) { background: none; }
  a { color: inherit; text-decoration: none; }
}
"""

SCRIPT = """
(function () {
  var errors = [];
  var consoleError = console.error;
  console.error = function () {
    errors.push(Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("error", function (event) {
    var target = event.target || {};
    errors.push(event.message || ("failed to load " + (target.id || target.tagName || "a resource")));
  }, true);
  window.addEventListener("load", function () {
    var broken = [];
    Array.prototype.forEach.call(document.images, function (img) {
      if (!img.complete || img.naturalWidth === 0) { broken.push(img.id || img.alt || "(unnamed image)"); }
    });
    document.body.dataset.imagesChecked = String(document.images.length);
    document.body.dataset.imagesOk = broken.length ? "false" : "true";
    document.body.dataset.errors = String(errors.length);
    document.getElementById("image-check").textContent = broken.join("\\n");
    document.getElementById("error-check").textContent = errors.join("\\n");
  });
})();
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
<script>$script</script>
</head>
<body>
<header>
<h1>$title</h1>
$description
<p class="meta">$meta</p>
</header>
<nav class="toc"><h2>Contents</h2><ol>$toc</ol></nav>
<main>
$sections
</main>
<div id="image-check" hidden></div>
<div id="error-check" hidden></div>
</body>
</html>
""")


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height of a PNG from its IHDR chunk (bytes 16–24)."""
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def _figure(fig: Figure, number: int) -> str:
    width, height = png_size(fig.png)
    data = base64.b64encode(fig.png).decode("ascii")
    caption = html.escape(fig.caption)
    return (f'<figure><img id="fig-{html.escape(fig.name)}" src="data:image/png;base64,{data}" width="{width}" '
            f'height="{height}" alt="{caption}"><figcaption>Figure {number}. {caption}</figcaption></figure>')


def _cell(value) -> str:
    """A table cell: numbers right-aligned, long text allowed to wrap."""
    text = html.escape(fmt(value))
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return f'<td class="num">{text}</td>'
    return f'<td class="wrap">{text}</td>' if len(text) > 40 else f"<td>{text}</td>"


def table_html(table: Table) -> str:
    """A table block: title, the visible rows, and a link to the whole table as CSV."""
    path = html.escape(table.csv_path)
    link = f'<p class="csv">All {len(table.frame)} rows: <a href="{path}">{path}</a></p>'
    if table.shown == 0:
        return f'<div class="table-block"><h3>{html.escape(table.title)}</h3>{link}</div>'
    frame: pd.DataFrame = table.visible()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "\n".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>"
                     for row in frame.itertuples(index=False, name=None))
    return (f'<div class="table-block"><h3>{html.escape(table.title)}</h3><div class="table-wrap"><table>'
            f"<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>{link}</div>")


def render(title: str, description: str, meta: str, sections: list[Section]) -> str:
    """The whole page."""
    parts, toc, number = [], [], 0
    for i, section in enumerate(sections, 1):
        toc.append(f'<li><a href="#{section.key}">{html.escape(section.title)}</a></li>')
        body = [f'<section id="{section.key}"><h2>{i}. {html.escape(section.title)}</h2>']
        body += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        for fig in section.figures:
            number += 1
            body.append(_figure(fig, number))
        body += [table_html(t) for t in section.tables]
        body.append("</section>")
        parts.append("\n".join(body))
    return PAGE.substitute(title=html.escape(title), css=CSS, script=SCRIPT, meta=html.escape(meta),
                           description=f'<p class="lead">{html.escape(description)}</p>' if description else "",
                           toc="".join(toc), sections="\n".join(parts))
