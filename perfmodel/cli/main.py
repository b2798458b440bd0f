"""The ``perfmodel`` command: a thin dispatcher over subcommand modules.

Each module in ``COMMANDS`` exposes ``register(subparsers)``, which adds its subcommand(s) and sets
``func`` on the parser; heavy libraries are imported inside those functions, never here, so that the
command starts fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order their commands appear in --help.
COMMANDS = [
    "perfmodel.cli.catalog",
    "perfmodel.cli.predict_cmd",
    "perfmodel.cli.sweep_cmd",
    "perfmodel.cli.plan_cmd",
    "perfmodel.cli.validate_cmd",
    "perfmodel.cli.report_cmd",
    "perfmodel.cli.import_cmd",
    "perfmodel.cli.measure_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfmodel",
        description="Predict and explain LLM inference performance on GPUs (analytic roofline and event-driven engines).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"perfmodel {version('perfmodel')}"
    except PackageNotFoundError:
        return "perfmodel (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake (a ``ValueError`` naming the input, or a file that cannot be read or
    written) is one message on stderr and exit status 2, never a traceback."""
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    default_show = warnings.showwarning

    def note(message, category, filename, lineno, file=None, line=None):
        # perfmodel's own warnings (a dropped row, a torn line) are notes for the user, not code locations
        if getattr(category, "__module__", "").startswith("perfmodel"):
            print(f"perfmodel: note: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    warnings.showwarning = note
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # SpecError, UnknownNameError and every entry point's input check
        print(f"perfmodel: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional library of an extra that is not installed
        from perfmodel.extras import HINT

        print(f"perfmodel: error: {exc}; {HINT}", file=sys.stderr)
        return 2
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            return 0
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"perfmodel: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perfmodel: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = default_show


if __name__ == "__main__":
    sys.exit(main())
