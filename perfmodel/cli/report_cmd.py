"""`perfmodel report REVIEW.yaml -o DIR`: build a design-review report (HTML, Markdown, CSV tables)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    helptext = "build a design-review report (self-contained HTML, Markdown and CSV tables) from a review file"
    p = sub.add_parser("report", help=helptext, description=helptext + ". Example review files are in reports/.")
    p.add_argument("review", metavar="REVIEW.yaml", help="review file: devices, compared methods, sweeps, "
                                                         "measurement tables (see reports/default.yaml)")
    p.add_argument("-o", "--output", metavar="DIR", default=None,
                   help="output folder (default: <review name>-report in the current folder); a rebuild replaces only "
                        "the files the earlier build wrote (listed in its .perfmodel-report.json)")
    p.add_argument("--force", action="store_true",
                   help="write into a folder that holds files an earlier report did not write (they are kept; "
                        "one with the name of a report file is replaced)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the path of index.html")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from perfmodel.report import build_report

    out = Path(args.output) if args.output else Path(f"{Path(args.review).stem}-report")

    def progress(section: str) -> None:
        if not args.quiet:
            print(f"  building {section} ...", file=sys.stderr, flush=True)

    try:
        result = build_report(args.review, out, progress, force=args.force)
    except (OSError, ValueError) as exc:  # bad review file, spec or measurement table: the message names it
        print(f"perfmodel: error: {exc}", file=sys.stderr)
        return 2
    if args.quiet:
        print(result.index_html)
        return 0
    size = sum(f.stat().st_size for f in result.files)
    for model, limit in result.beyond_context.items():
        print(f"perfmodel: note: {model}: points with prompts beyond its {limit:,}-token context "
              "(max_position_embeddings) are left out of the report", file=sys.stderr)
    print(f"wrote {result.index_html} and {result.report_md} ({len(result.files)} files, {size / 1e6:.2f} MB) "
          f"from {result.predictions} predictions in {result.seconds:.1f} s wall time")
    return 0
