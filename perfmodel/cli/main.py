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
    from perfmodel.errors import SpecError, UnknownNameError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (SpecError, UnknownNameError) as exc:
        print(f"perfmodel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perfmodel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
