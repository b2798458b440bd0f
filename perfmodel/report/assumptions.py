"""Assumptions section: which code and which spec files produced the numbers, and the efficiency each device used.

A reader of a design review must be able to rebuild it: the perfmodel version, the engine, every spec file with a
content hash, each derived device's overrides, every source the hardware numbers cite, and the efficiency block
(achievable fractions of the peaks, launch cost) that turned datasheet peaks into predictions.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from perfmodel.report.context import Context, resolve_name
from perfmodel.report.document import Section, Table, fmt
from perfmodel.specs.base import catalog_dir, resolve
from perfmodel.specs.hardware import Hardware

KINDS = {"hardware": "hardware", "models": "model", "scenarios": "scenario"}


def _display(kind: str, path: Path, base_dir: Path) -> str:
    """A catalog file as ``<kind>/<file>``; any other file relative to the review file where possible."""
    if path.resolve().parent == catalog_dir(kind).resolve():
        return f"{kind}/{path.name}"
    try:
        return str(path.resolve().relative_to(base_dir))
    except ValueError:
        return str(path)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def spec_files(ctx: Context) -> pd.DataFrame:
    """Every spec file the report read: kind, name, file, sha256 prefix and overrides applied."""
    review = ctx.review
    rows = []
    for device in ctx.devices:
        overrides = ", ".join(f"{k}={v}" for k, v in device.overrides.items())
        rows.append({"kind": "hardware", "name": device.name,
                     "file": _display("hardware", device.spec_file, ctx.base_dir),
                     "sha256": _digest(device.spec_file), "overrides": overrides or "–"})
    models = [m.model for m in review.methods]
    scenarios = [m.scenario for m in review.methods]
    if "quantisation" in review.sections:
        models.append(review.quantisation.model)
        scenarios += [review.quantisation.baseline, *review.quantisation.scenarios]
    if "sparse" in review.sections:
        models.append(review.sparse.model)
        scenarios += [review.sparse.baseline, *review.sparse.scenarios]
    for kind, names in (("models", models), ("scenarios", scenarios)):
        for name in dict.fromkeys(names):
            path = resolve(kind, resolve_name(name, ctx.base_dir))
            rows.append({"kind": KINDS[kind], "name": name, "file": _display(kind, path, ctx.base_dir),
                         "sha256": _digest(path), "overrides": "–"})
    return pd.DataFrame(rows)


def efficiency_row(name: str, hw: Hardware) -> dict:
    """Every field of a device's efficiency block, memory fractions per level (defaults filled in), note last."""
    eff = hw.efficiency
    row = {"hardware": name}
    for key, value in eff.model_dump().items():
        if key == "memory":
            row.update({f"efficiency.memory.{level}": eff.memory_fraction(level) for level in hw.memory})
        elif key != "note":
            row[f"efficiency.{key}"] = value
    row["note"] = eff.note
    return row


def build(ctx: Context) -> Section:
    """Versions, spec files, sources and efficiency blocks."""
    from perfmodel import __version__

    sources, efficiency = [], []
    for device in ctx.devices:
        hw = device.hardware
        for key, citation in hw.sources.items():
            sources.append({"hardware": device.name, "key": key, "source": citation})
        efficiency.append(efficiency_row(device.name, hw))
    paragraphs = [f"perfmodel {__version__}, {ctx.review.engine} engine, {fmt(ctx.predictions)} distinct "
                  f"predictions. Every number in this report comes from those predictions; the text around them is "
                  f"generated from the same numbers."]
    for device in ctx.devices:
        if device.note:
            paragraphs.append(f"{device.name} is derived from {_display('hardware', device.spec_file, ctx.base_dir)}"
                              f": {device.note}")
    return Section("assumptions", "Assumptions", paragraphs, [], [
        Table("assumptions_specs", "Spec files", spec_files(ctx)),
        Table("assumptions_efficiency", "Efficiency block of each device", pd.DataFrame(efficiency)),
        Table("assumptions_sources", "Sources of the hardware numbers", pd.DataFrame(sources)),
    ])
