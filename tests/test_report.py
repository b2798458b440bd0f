"""Design-review reports: a small review built into a temporary folder, its files, its numbers, and the page as a
headless browser renders it."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from perfmodel.api import predict
from perfmodel.errors import SpecError
from perfmodel.report import SECTIONS, build_report, load_review
from perfmodel.report import validation as report_validation
from perfmodel.report.build import MANIFEST
from perfmodel.report.capacity import largest_batch
from perfmodel.report.context import Context
from perfmodel.report.document import fmt
from perfmodel.report.methods import steps_overrides
from perfmodel.schema import lookup

REPO = Path(__file__).resolve().parents[1]

REVIEW = """
title: Small review
description: ARM against diffusion on an H100 and a what-if H100 with twice the HBM bandwidth.
hardware:
  - h100-sxm
  - name: h100-2x-hbm
    base: h100-sxm
    note: what-if device, HBM bandwidth doubled
    set:
      memory.hbm.bandwidth_bytes_per_s: 6.7e12
methods:
  - {label: ARM, model: llama-3.1-8b, scenario: arm}
  - {label: DLM, model: llada-8b, scenario: dlm}
  - {label: Block-wise DLM, model: llada-8b, scenario: block-dlm}
sweeps: {batch: [1, 8], context: [512, 2048], steps: [32, 256]}
quantisation:
  scenarios: [kv-int4, xquant]
  bits: [2, 4]
  bits_scenarios: [xquant]
  context: [1024, 4096]
  batch: 4
sparse:
  scenarios: [squeezed-attention]
  token_budget: [0.05, 0.2]
  context: [4096, 16384]
  batch: 2
capacity: {context: [2048, 32768], max_batch: 1024, target_batch: 64, target_context: 8192}
validation: [measurements.csv]
dpi: 60
"""

MEASUREMENTS = """hardware,op,dtype,m,n,k,batch,q_len,kv_len,heads,kv_heads,head_dim,causal,measured_s,source
h100-sxm,gemm,bf16,4096,4096,4096,,,,,,,,1.6e-4,test: hand-written
h100-sxm,gemm,bf16,1,4096,4096,,,,,,,,1.4e-5,test: hand-written
h100-sxm,gemm,bf16,512,14336,4096,,,,,,,,1.3e-4,test: hand-written
h100-sxm,attention,bf16,,,,1,1,4096,32,8,128,true,1.5e-5,test: hand-written
h100-sxm,attention,bf16,,,,8,1,8192,32,8,128,true,9.0e-5,test: hand-written
h100-sxm,attention,bf16,,,,1,4096,4096,32,8,128,true,4.0e-4,test: hand-written
"""


@pytest.fixture(scope="module")
def review_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("review")
    (folder / "measurements.csv").write_text(MEASUREMENTS)
    path = folder / "small.yaml"
    path.write_text(REVIEW)
    return path


@pytest.fixture(scope="module")
def built(review_file, tmp_path_factory):
    return build_report(review_file, tmp_path_factory.mktemp("out") / "report")


# -- files and sections ----------------------------------------------------------------------------------------
def test_writes_html_markdown_tables_and_figures(built):
    out = built.out_dir
    assert built.index_html.is_file() and built.report_md.is_file()
    for section in built.sections:
        for table in section.tables:
            csv = out / table.csv_path
            assert csv.is_file(), csv
            assert len(pd.read_csv(csv)) == len(table.frame)
        for fig in section.figures:
            assert (out / fig.png_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in (out / "tables").iterdir()} == {f"{t.name}.csv" for s in built.sections for t in s.tables}


def test_every_section_is_present_in_both_documents(built):
    html = built.index_html.read_text()
    md = built.report_md.read_text()
    assert [s.key for s in built.sections] == list(SECTIONS)
    for i, section in enumerate(built.sections, 1):
        assert f'<section id="{section.key}">' in html
        assert f"## {i}. {section.title}" in md
    # every section but the assumptions has a plot; the validation one because the review gives a table
    assert all(s.figures for s in built.sections if s.key != "assumptions")
    assert all(s.tables for s in built.sections)


def test_html_is_self_contained(built):
    html = built.index_html.read_text()
    sources = re.findall(r'<img[^>]* src="([^"]*)"', html)
    assert len(sources) == sum(len(s.figures) for s in built.sections)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'(src|href)="https?:', html)
    assert "<link" not in html and "@import" not in html
    assert "@media print" in html


def test_rebuild_removes_its_own_stale_files_only(review_file, tmp_path):
    out = tmp_path / "report"
    two = review_file.with_name("two.yaml")
    two.write_text(REVIEW.replace("dpi: 60", "dpi: 60\nsections: [breakdown, assumptions]"))
    build_report(two, out)
    assert "assumptions_specs.csv" in {p.name for p in (out / "tables").iterdir()}
    one = review_file.with_name("tiny.yaml")
    one.write_text(REVIEW.replace("dpi: 60", "dpi: 60\nsections: [breakdown]"))
    build_report(one, out)  # the earlier build's files are its own: replaced or removed without --force
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["breakdown.csv"]
    assert json.loads((out / MANIFEST).read_text())["files"] == ["figures/breakdown.png", "index.html", "report.md",
                                                                  "tables/breakdown.csv"]


def test_report_never_deletes_files_it_did_not_write(review_file, tmp_path):
    out = tmp_path / "report"
    (out / "tables").mkdir(parents=True)
    (out / "figures").mkdir()
    mine = {out / "tables" / "old.csv": "x\n1\n", out / "figures" / "photo.png": "not a png", out / "notes.txt": "n"}
    for path, text in mine.items():
        path.write_text(text)
    review = review_file.with_name("tiny.yaml")
    review.write_text(REVIEW.replace("dpi: 60", "dpi: 60\nsections: [breakdown]"))
    with pytest.raises(ValueError, match=r"holds files perfmodel report did not write .*--force"):
        build_report(review, out)
    assert not (out / "index.html").exists()
    build_report(review, out, force=True)
    assert (out / "index.html").is_file() and (out / "tables" / "breakdown.csv").is_file()
    assert all(path.read_text() == text for path, text in mine.items())
    build_report(review, out, force=True)  # and again: the user's files are still not the report's
    assert all(path.read_text() == text for path, text in mine.items())


def test_report_cli_refuses_a_folder_of_other_files(review_file, tmp_path, capsys):
    from perfmodel.cli.main import main

    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.csv").write_text("a\n")
    review = review_file.with_name("tiny.yaml")
    review.write_text(REVIEW.replace("dpi: 60", "dpi: 60\nsections: [breakdown]"))
    assert main(["report", str(review), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "keep.csv" in err and "--force" in err and "Traceback" not in err
    assert main(["report", str(review), "-o", str(out), "-q", "--force"]) == 0
    assert (out / "keep.csv").read_text() == "a\n"


def test_names_from_the_review_stay_inside_the_output_folder(tmp_path):
    # A device name is part of a figure's file name: the second device makes a folder "figures/roofline-", through
    # which the third one's name would climb out of the output folder if it were used as written.
    folder = tmp_path / "in"
    folder.mkdir()
    review = folder / "evil.yaml"
    review.write_text("title: <script>alert(1)</script> [x](javascript:alert(1))\n"
                      "hardware: [h100-sxm, {name: /x, base: h100-sxm}, {name: /../../../ESCAPED, base: h100-sxm}]\n"
                      "methods: [{label: '<img src=x onerror=alert(1)>', model: llama-3.1-8b, scenario: arm}]\n"
                      "sections: [roofline]\ndpi: 40\n")
    out = tmp_path / "a" / "b" / "out"
    result = build_report(review, out)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents and p.parent != folder]
    assert outside == []
    assert all(out.resolve() in p.resolve().parents for p in result.files)
    assert sum("ESCAPED" in p.name for p in (out / "figures").iterdir()) == 1
    md = (out / "report.md").read_text()
    assert "<script>" not in md and "<img" not in md and "&lt;script&gt;" in md
    assert "\\[x\\](javascript" in md


def test_report_files_get_the_umask_permissions(review_file, tmp_path):
    review = review_file.with_name("tiny.yaml")
    review.write_text(REVIEW.replace("dpi: 60", "dpi: 60\nsections: [breakdown]"))
    old = os.umask(0o027)
    try:
        result = build_report(review, tmp_path / "r")
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in result.files} == {0o640}


# -- numbers come from the predictions ---------------------------------------------------------------------------
def test_markdown_numbers_match_the_prediction(built):
    pred = predict("h100-sxm", "llama-3.1-8b", "arm")
    md = built.report_md.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| ARM | h100-sxm |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert fmt(pred["latency_s"]) in cells
    assert fmt(pred["tokens_per_s"]) in cells
    assert fmt(pred["time_per_step_s"]) in cells
    assert fmt(pred["energy_per_token_j"]) in cells  # energy per token in the default report
    table = pd.read_csv(built.out_dir / "tables" / "breakdown.csv")
    arm = table[(table.configuration == "ARM") & (table.hardware == "h100-sxm")].iloc[0]
    assert arm["latency_s"] == pytest.approx(pred["latency_s"], rel=1e-12)
    classes = [f"{c}_time_per_step_s" for c in ("gemm", "attention", "norm_elementwise", "other")]
    assert arm[classes].sum() == pytest.approx(arm["time_per_step_s"], rel=1e-9)
    assert all(lookup(c) is not None for c in table.columns)  # every column is a field of the vocabulary


def test_derived_device_is_predicted_with_its_overrides(built):
    table = pd.read_csv(built.out_dir / "tables" / "roofline_ridges.csv")
    hbm = table[table.level == "hbm"].set_index("hardware")
    assert hbm.loc["h100-2x-hbm", "bandwidth_bytes_per_s"] == pytest.approx(6.7e12)
    assert hbm.loc["h100-sxm", "bandwidth_bytes_per_s"] == pytest.approx(3.35e12)
    arm = pd.read_csv(built.out_dir / "tables" / "breakdown.csv").set_index(["configuration", "hardware"])
    assert arm.loc[("ARM", "h100-2x-hbm"), "time_per_step_s"] < arm.loc[("ARM", "h100-sxm"), "time_per_step_s"]


def test_crossover_is_where_the_diffusion_latency_meets_arm(built):
    cross = pd.read_csv(built.out_dir / "tables" / "methods_crossover.csv")
    row = cross[(cross.hardware == "h100-sxm") & (cross.configuration == "DLM")].iloc[0]
    steps = math.floor(row["crossover_steps"])
    below = predict("h100-sxm", "llada-8b", "dlm", {"steps": steps})["latency_s"]
    above = predict("h100-sxm", "llada-8b", "dlm", {"steps": steps + 1})["latency_s"]
    assert below <= row["reference_latency_s"] < above


def test_steps_overrides_for_block_methods():
    assert steps_overrides("dlm", 64, 256, 32) == ({"steps": 64}, 64)
    assert steps_overrides("block-dlm", 64, 256, 32) == ({"steps_per_block": 8}, 64)
    assert steps_overrides("fast-dllm-dual", 4, 256, 32) == ({"steps_per_block": 1}, 8)


def test_largest_batch_fits_and_the_next_does_not(review_file):
    review, base = load_review(review_file)
    ctx = Context.from_review(review, base)
    device, method = ctx.devices[0], review.methods[0]
    batch = largest_batch(ctx, device, method, 32768, 1024)
    assert batch >= 1
    fits = lambda b: predict("h100-sxm", "llama-3.1-8b", "arm", {"batch": b, "prompt_len": 32768})["memory"]["fits"]
    assert fits(batch) and not fits(batch + 1)
    assert largest_batch(ctx, device, method, 512, 4) == 4  # the whole search range fits


def test_points_beyond_a_models_context_are_left_out_and_named(built):
    # LLaDA-8B was trained to 4,096 tokens: its 32,768-token capacity points are not searched, ARM's are
    frame = pd.read_csv(built.out_dir / "tables" / "capacity_batch.csv")
    long = frame[frame.prompt_len == 32768].set_index(["hardware", "configuration"])
    assert not long.loc[("h100-sxm", "DLM"), "within_context"] and long.loc[("h100-sxm", "DLM"), "max_batch"] == 0
    assert long.loc[("h100-sxm", "ARM"), "within_context"] and long.loc[("h100-sxm", "ARM"), "max_batch"] > 0
    assert built.beyond_context == {"llada-8b": 4096}
    assert "beyond the model's context" in built.report_md.read_text()


def test_validation_error_table_by_kind(built):
    errors = pd.read_csv(built.out_dir / "tables" / "validation_errors.csv")
    assert set(errors["kind"]) == {"gemm", "attention"}
    assert (errors.rows == 3).all()
    rows = pd.read_csv(built.out_dir / "tables" / "validation_rows.csv")
    ape = ((rows.predicted_s - rows.measured_s).abs() / rows.measured_s * 100)
    gemm = errors.set_index("kind").loc["gemm"]
    assert gemm["median_ape_pct"] == pytest.approx(ape[rows.op == "gemm"].median())


def test_validation_without_the_validation_package(review_file, monkeypatch):
    """The fallback predicts each row with predict_op and gives the same kinds and row counts."""
    monkeypatch.setattr(report_validation, "_module", lambda name: None)
    review, base = load_review(review_file)
    section = report_validation.build(Context.from_review(review, base))
    errors = section.tables[0].frame
    assert set(errors["kind"]) == {"gemm", "attention"} and (errors.rows == 3).all()
    assert any("predict_op" in p for p in section.paragraphs)


def test_fmt():
    assert fmt(0.007375) == "0.007375"
    assert fmt(135.234) == "135.2"
    assert fmt(0.1) == "0.1"
    assert fmt(32768.0) == "32768"
    assert fmt(9.894e14) == "9.894e+14"
    assert fmt(True) == "yes" and fmt(float("nan")) == "-" and fmt(None) == "-"
    assert fmt(255.0) == "255"  # a whole count prints as an integer


# -- review files ---------------------------------------------------------------------------------------------
def test_review_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(REVIEW.replace("sweeps:", "sweep:"))
    with pytest.raises(SpecError, match="bad.yaml: field 'sweep'"):
        load_review(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text(REVIEW.replace("label: DLM", "label: ARM"))
    with pytest.raises(SpecError, match=r"field 'methods': .*expected distinct method labels \(ARM repeated\)"):
        load_review(dup)


@pytest.mark.parametrize("path", sorted((REPO / "reports").glob("*.yaml")), ids=lambda p: p.name)
def test_example_reviews_are_valid(path):
    review, base = load_review(path)
    Context.from_review(review, base)  # every device loads


def test_cli_builds_a_report(review_file, tmp_path, capsys):
    from perfmodel.cli.main import main

    review = review_file.with_name("cli.yaml")
    review.write_text(REVIEW.replace("dpi: 60", "dpi: 60\nsections: [breakdown, assumptions]"))
    assert main(["report", str(review), "-o", str(tmp_path / "r"), "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "index.html")
    assert main(["report", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "r")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


# -- the page in a headless browser ------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                    "(Debian: apt-get install -y chromium)")


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args,
           page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def render_check(page: Path, profile: Path) -> dict:
    """Load a page headless and read back what its own check script wrote, plus console errors from stderr."""
    run = _chromium(page, profile, "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", run.stdout)
    assert body, "no <body> in the dumped DOM"
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1)))
    broken = re.search(r'<div id="image-check" hidden="">(.*?)</div>', run.stdout, re.S)
    console = [line for line in run.stderr.splitlines()
               if "CONSOLE" in line and ("Uncaught" in line or "rror" in line)]
    return {"images_ok": attrs.get("images-ok"), "images": int(attrs.get("images-checked", -1)),
            "errors": int(attrs.get("errors", -1)), "broken": broken.group(1).split() if broken else [],
            "console": console}


@needs_chromium
def test_page_renders_in_chromium_with_every_image(built, tmp_path):
    check = render_check(built.index_html, tmp_path / "profile")
    figures = sum(len(s.figures) for s in built.sections)
    assert check == {"images_ok": "true", "images": figures, "errors": 0, "broken": [], "console": []}
    shot = tmp_path / "shot.png"
    run = _chromium(built.index_html, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,3000")
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    shutil.copy(shot, built.out_dir / "screenshot.png")  # beside the report, for a person to look at


@needs_chromium
def test_broken_image_and_script_error_are_caught(built, tmp_path):
    html = built.index_html.read_text()
    first = re.search(r'<img id="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    broken = built.out_dir / "broken.html"
    broken.write_text(html.replace(first.group(2), "AAAAbroken", 1))
    check = render_check(broken, tmp_path / "profile")
    assert check["images_ok"] == "false" and check["broken"] == [first.group(1)]
    failing = built.out_dir / "failing.html"
    failing.write_text(html.replace("</main>", "<script>notDefinedAnywhere();</script></main>"))
    check = render_check(failing, tmp_path / "profile")
    assert check["images_ok"] == "true" and check["errors"] == 1
    assert any("notDefinedAnywhere" in line for line in check["console"])
