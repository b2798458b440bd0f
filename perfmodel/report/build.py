"""Building a report: review file in, ``index.html`` + ``report.md`` + ``tables/*.csv`` + ``figures/*.png`` out.

The build is deterministic: the same review and specs give the same files (no timestamps, no host names), so the
example reports under ``reports/examples/`` change only when the model or the review does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from perfmodel.report import (assumptions, breakdown, capacity, html, markdown, methods, quantisation, roofline,
                              sparse, validation)
from perfmodel.report.context import Context
from perfmodel.report.document import Section
from perfmodel.report.review import Review, load_review

BUILDERS: dict[str, Callable[[Context], Section]] = {
    "roofline": roofline.build,
    "breakdown": breakdown.build,
    "methods": methods.build,
    "quantisation": quantisation.build,
    "sparse": sparse.build,
    "capacity": capacity.build,
    "validation": validation.build,
    "assumptions": assumptions.build,
}


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote and how long it took."""

    out_dir: Path
    files: list[Path]
    sections: list[Section]
    predictions: int
    seconds: float

    @property
    def index_html(self) -> Path:
        return self.out_dir / "index.html"

    @property
    def report_md(self) -> Path:
        return self.out_dir / "report.md"


def build_sections(ctx: Context, progress: Callable[[str], None] | None = None) -> list[Section]:
    """Every section the review asks for, in its order; assumptions last, so that it counts every prediction."""
    built: dict[str, Section] = {}
    for key in sorted(ctx.review.sections, key=lambda k: k == "assumptions"):
        if progress:
            progress(key)
        built[key] = BUILDERS[key](ctx)
    return [built[key] for key in ctx.review.sections]


def write_report(out_dir: Path, review: Review, meta: str, sections: list[Section]) -> list[Path]:
    """Write the page, the Markdown, the figures and the tables; stale files of an earlier build are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder, pattern in (("figures", "*.png"), ("tables", "*.csv")):
        for old in (out_dir / folder).glob(pattern):
            old.unlink()
    files = []
    for section in sections:
        for fig in section.figures:
            path = out_dir / fig.png_path
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(fig.png)
            files.append(path)
        for table in section.tables:
            path = out_dir / table.csv_path
            path.parent.mkdir(exist_ok=True)
            table.frame.to_csv(path, index=False, lineterminator="\n")
            files.append(path)
    for name, writer in (("index.html", html.render), ("report.md", markdown.render)):
        path = out_dir / name
        path.write_text(writer(review.title, review.description, meta, sections), encoding="utf-8")
        files.append(path)
    return files


def build_report(review: str | Path, out_dir: str | Path, progress: Callable[[str], None] | None = None
                 ) -> BuildResult:
    """Build the report of a review file into ``out_dir``; ``progress`` is called with each section's key."""
    from perfmodel import __version__

    start = time.perf_counter()
    review_path = Path(review)
    spec, base_dir = load_review(review_path)
    ctx = Context.from_review(spec, base_dir)
    sections = build_sections(ctx, progress)
    meta = (f"Review {review_path.name} · perfmodel {__version__} · {spec.engine} engine · devices: "
            f"{', '.join(d.name for d in ctx.devices)} · {ctx.predictions} predictions")
    files = write_report(Path(out_dir), spec, meta, sections)
    return BuildResult(Path(out_dir), files, sections, ctx.predictions, time.perf_counter() - start)
