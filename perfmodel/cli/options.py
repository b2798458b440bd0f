"""Options every command spells the same way: the specs (--hardware, --model, --scenario), --set, --engine, --json.

One function per option, so that a metavar, a default and a help line are written once: ``--hardware HARDWARE``
in predict, compare, plan and validate alike, and ``--set KEY=VALUE`` with the same syntax (dotted keys, "xF"
multipliers) wherever it is accepted.
"""
from __future__ import annotations

import argparse

SET_HELP = ("override a field, repeatable: a scenario field (batch=8, kv_cache.bits=4), hardware.<path>=VALUE or "
            "model.<field>=VALUE; VALUE may carry a unit (hardware.memory.hbm.bandwidth_bytes_per_s='6.7 TB/s') or "
            "be xF, F times the spec's own value (hardware.memory.hbm.bandwidth_bytes_per_s=x2)")


def add_hardware(p: argparse.ArgumentParser, *, many: bool = False, default: str | list[str] | None = "h100-sxm",
                 helptext: str | None = None) -> None:
    """``--hardware HARDWARE`` (``many``: one or more)."""
    shown = " ".join(default) if isinstance(default, list) else default
    text = helptext or ("catalog name or hardware YAML path" + (f" (default {shown})" if default else ""))
    p.add_argument("--hardware", metavar="HARDWARE", nargs="+" if many else None, default=default, help=text)


def add_model(p: argparse.ArgumentParser, *, many: bool = False, default: str | None = "llama-3.1-8b",
              helptext: str | None = None) -> None:
    """``--model MODEL``: a catalog name, a model YAML or a Hugging Face config.json."""
    text = helptext or ("catalog name, model YAML path or a Hugging Face config.json"
                        + (f" (default {default})" if default else ""))
    p.add_argument("--model", metavar="MODEL", nargs="+" if many else None, default=default, help=text)


def add_scenario(p: argparse.ArgumentParser, *, many: bool = False, default: str | list[str] = "arm") -> None:
    """``--scenario SCENARIO``."""
    shown = " ".join(default) if isinstance(default, list) else default
    p.add_argument("--scenario", metavar="SCENARIO", nargs="+" if many else None, default=default,
                   help=f"catalog name or scenario YAML path (default {shown})")


def add_set(p: argparse.ArgumentParser, extra: str = "") -> None:
    """``--set KEY=VALUE`` (repeatable)."""
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP + extra)


def add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["analytic", "event"], default="analytic",
                   help="timing engine (default analytic)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def set_pairs(values: list[str] | None) -> dict[str, str]:
    """The ``--set`` values as a {dotted key: value text} mapping; a value without '=' is a SpecError."""
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            from perfmodel.errors import SpecError

            raise SpecError("--set", item, item, "KEY=VALUE with a dotted KEY, e.g. batch=8 or kv_cache.bits=4")
        out[key.strip()] = value.strip()
    return out
