"""Building a report: review file in, ``index.html`` + ``report.md`` + ``tables/*.csv`` + ``figures/*.png`` out.

The build is deterministic: the same review and specs give the same files (no timestamps, no host names), so the
example reports under ``reports/examples/`` change only when the model or the review does.

The output folder is treated as shared: a build lists the files it wrote in a manifest (:data:`MANIFEST`), and the
next build replaces or removes only files that list names. A folder holding any other file is refused unless
``force`` is given, and even then those files are left alone (one with the name of a report file is replaced).
Every file is written through :func:`perfmodel.files.write_atomic`, inside the folder.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from perfmodel.files import inside, write_atomic

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
    beyond_context: dict[str, int] = field(default_factory=dict)  # model -> its longest context, points left out

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


MANIFEST = ".perfmodel-report.json"
_SHOWN_OTHERS = 3


def _manifest(out_dir: Path) -> set[str]:
    """The files an earlier build listed as its own (none when there is no readable manifest)."""
    path = out_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"] if isinstance(data, dict) and data.get("written_by") == "perfmodel report" else []
        return {str(f) for f in files if isinstance(f, str)}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _other_files(out_dir: Path, ours: set[str]) -> list[str]:
    """Up to a few files under ``out_dir`` that no perfmodel report build wrote."""
    others = []
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if (path.is_file() or path.is_symlink()) and rel != MANIFEST and rel not in ours:
            others.append(rel)
            if len(others) > _SHOWN_OTHERS:
                break
    return others


def report_files(review: Review, meta: str, sections: list[Section]) -> dict[str, bytes]:
    """Every file of the report, by its path relative to the output folder."""
    files: dict[str, bytes] = {}
    for section in sections:
        for fig in section.figures:
            files[fig.png_path] = fig.png
        for table in section.tables:
            files[table.csv_path] = table.frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    for name, writer in (("index.html", html.render), ("report.md", markdown.render)):
        files[name] = writer(review.title, review.description, meta, sections).encode("utf-8")
    return files


def check_folder(out_dir: Path, force: bool = False) -> set[str]:
    """The files an earlier build of a report wrote into ``out_dir`` (its manifest), after checking that the folder
    may receive a report: a ``ValueError`` when it is a file, or holds files no build wrote and ``force`` is off."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: not a folder, expected a folder for the report (new, empty or an earlier report)")
    if not out_dir.is_dir():
        return set()
    previous = _manifest(out_dir)
    others = _other_files(out_dir, previous)
    if others and not force:
        shown = ", ".join(others[:_SHOWN_OTHERS]) + (", ..." if len(others) > _SHOWN_OTHERS else "")
        raise ValueError(f"{out_dir}: holds files perfmodel report did not write ({shown}); expected a new or empty "
                         "folder or an earlier report's, or --force to write beside them (they are kept; one with the "
                         "name of a report file is replaced)")
    return previous


def write_report(out_dir: Path, review: Review, meta: str, sections: list[Section], force: bool = False
                 ) -> list[Path]:
    """Write the page, the Markdown, the figures and the tables; files an earlier build wrote and this one does
    not are removed. A folder holding files no build wrote is a ``ValueError`` unless ``force``."""
    files = report_files(review, meta, sections)
    previous = check_folder(out_dir, force)
    for rel in files:  # every path checked before anything is written
        inside(out_dir, rel)
    written = [write_atomic(out_dir / rel, content, root=out_dir) for rel, content in files.items()]
    for rel in sorted(previous - set(files)):
        try:
            stale = inside(out_dir, rel)
        except ValueError:
            continue  # a manifest naming a path outside the folder: never follow it
        if stale.is_file() and not (out_dir / rel).is_symlink():
            stale.unlink()
    manifest = {"written_by": "perfmodel report", "files": sorted(files)}
    write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n", root=out_dir)
    return written


def build_report(review: str | Path, out_dir: str | Path, progress: Callable[[str], None] | None = None,
                 force: bool = False) -> BuildResult:
    """Build the report of a review file into ``out_dir``; ``progress`` is called with each section's key.
    ``force`` writes into a folder that holds files no report build wrote (see :func:`write_report`)."""
    from perfmodel import __version__

    start = time.perf_counter()
    review_path = Path(review)
    spec, base_dir = load_review(review_path)
    check_folder(Path(out_dir), force)  # before the (long) build: a refused folder fails fast
    ctx = Context.from_review(spec, base_dir)
    sections = build_sections(ctx, progress)
    meta = (f"Review {review_path.name} · perfmodel {__version__} · {spec.engine} engine · devices: "
            f"{', '.join(d.name for d in ctx.devices)} · {ctx.predictions} predictions")
    files = write_report(Path(out_dir), spec, meta, sections, force)
    return BuildResult(Path(out_dir), files, sections, ctx.predictions, time.perf_counter() - start,
                       dict(ctx.beyond_context))
