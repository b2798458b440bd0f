"""Capacity planning: physics-consistent answers, rejection reasons, targets, CLI; all-reduce vs measured NCCL."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from perfmodel.planner import Target, plan, plans_frame, planning_hardware
from perfmodel.validation.compare import allreduce_engine_time

HBM = "hardware.memory.hbm.bandwidth_bytes_per_s"
TPOT_50MS = Target(tpot_s=0.050)


def _answer(multiplier: str):
    (p,) = plan("llama-3.1-70b", "arm", TPOT_50MS, hardware=["h100-sxm"], overrides={HBM: multiplier})
    assert p.best is not None, p.notes
    return p


def test_70b_at_50ms_tpot_follows_hbm_bandwidth():
    half, base, double = (_answer(x) for x in ("x0.5", "x1", "x2"))

    def cost(p):  # more GPUs, or as many GPUs serving a smaller batch, is a worse answer
        return (p.best.gpus, -p.best.batch)

    assert cost(half) > cost(base) >= cost(double)
    assert base.best.tpot_s <= 0.050 and half.best.tpot_s <= 0.050
    assert double.best.tpot_s < base.best.tpot_s
    # tp=1 cannot hold 141 GB of bf16 weights on an 80 GB device, whatever the bandwidth.
    assert base.notes[1].startswith("out of memory")
    assert all(not o.ok for o in base.options if o.tp == 1)


def test_every_rejected_option_says_why():
    p = _answer("x0.5")
    assert p.notes[2].startswith("too slow: TPOT")
    rejected = [o for o in p.options if not o.ok]
    assert rejected and all(o.reason.startswith(("out of memory", "too slow")) for o in rejected)
    for o in rejected:
        if o.reason.startswith("out of memory"):
            assert o.memory_per_gpu_bytes > o.memory_limit_bytes
        else:
            assert o.tpot_s > 0.050
    assert p.best.memory_per_gpu_bytes <= p.best.memory_limit_bytes


def test_catalog_plan_skips_cpus_and_orders_devices_cheapest_first():
    names = planning_hardware()
    assert "h100-sxm" in names and "cpu-generic" not in names
    plans = plan("llama-3.1-70b", "arm", TPOT_50MS, batches=(1, 16, 64))
    assert {p.hardware for p in plans} == set(names)
    gpus = [p.best.gpus for p in plans if p.best is not None]
    assert gpus == sorted(gpus)
    frame = plans_frame(plans)
    assert list(frame.hardware) == [p.hardware for p in plans]


def test_throughput_target_is_met_with_replicas_and_memory_budget_forces_more_gpus():
    (p,) = plan("llama-3.1-8b", "arm", Target(throughput_tokens_per_s=50_000), hardware=["h100-sxm"],
                tps=(1, 2), batches=(8, 64))
    b = p.best
    assert b.gpus == b.tp * b.replicas and b.throughput_tokens_per_s >= 50_000
    (tight,) = plan("llama-3.1-8b", "arm", Target(tpot_s=0.1, memory_budget_bytes=10e9), hardware=["h100-sxm"],
                    tps=(1, 2, 4), batches=(1, 8))
    assert tight.best.tp >= 2 and tight.notes[1].startswith("out of memory")


def test_price_breaks_ties_and_is_reported(tmp_path):
    from perfmodel.specs.base import catalog_dir

    text = (catalog_dir("hardware") / "h100-sxm.yaml").read_text()
    spec = tmp_path / "h100-priced.yaml"
    spec.write_text(text.replace("name: h100-sxm", "name: h100-priced") + "\nprice_per_hour_usd: 2.5\n")
    (p,) = plan("llama-3.1-70b", "arm", TPOT_50MS, hardware=[str(spec)], batches=(1, 8))
    assert p.best.price_per_hour_usd == pytest.approx(2.5 * p.best.gpus)


def test_target_and_override_errors():
    with pytest.raises(ValueError, match="at least one"):
        Target()
    with pytest.raises(ValueError, match="tpot_s"):
        Target(tpot_s=-1)
    with pytest.raises(ValueError, match="planner chooses"):
        plan("llama-3.1-8b", "arm", TPOT_50MS, hardware=["h100-sxm"], overrides={"batch": 4})


def test_cli_plan_help_json_and_errors(capsys):
    from perfmodel.cli.main import main

    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    text = capsys.readouterr().out
    assert "--tpot-ms" in text and "--throughput" in text and "cheapest" in text
    assert main(["plan", "--model", "llama-3.1-70b", "--tpot-ms", "50", "--hardware", "h100-sxm", "--batch", "1",
                 "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    best = data["plans"][0]["best"]
    assert best["gpus"] == 2 and data["plans"][0]["why_not"]["1"].startswith("out of memory")
    assert main(["plan", "--model", "llama-3.1-70b", "--tpot-ms", "50", "--hardware", "h100-sxm"]) == 0
    out = capsys.readouterr().out
    assert "why not fewer GPUs" in out and "h100-sxm tp=1: out of memory" in out
    assert main(["plan", "--model", "llama-3.1-70b"]) == 2
    assert "at least one" in capsys.readouterr().err
    assert main(["plan", "--tpot-ms", "50", "--set", f"{HBM}=fast", "--hardware", "h100-sxm"]) == 2
    err = capsys.readouterr().err
    assert "bandwidth_bytes_per_s" in err and "fast" in err


# -- all-reduce against measured NCCL ----------------------------------------------------------------------
DEVICES = {"h100": "h100-sxm", "a100": "a100-sxm-80gb"}


def test_allreduce_model_against_measured_nccl(measured_dir, capsys):
    """Fit η∞ and S½ on two large 8-GPU rows per device; print the median APE on every other row."""
    from perfmodel import collectives as C
    from perfmodel.specs.hardware import load_hardware

    tables = []
    for short, name in DEVICES.items():
        hw = load_hardware(name)
        nccl = sorted((measured_dir / "aiconfigurator" / f"{short}_sxm" / "comm" / "nccl").glob("*/nccl_perf.parquet"))
        vidur = measured_dir / "vidur" / "network" / f"{short}_dgx" / "all_reduce.csv"
        if not nccl or not vidur.is_file():
            pytest.skip(f"NCCL measurements for {short} not found")
        aic = C.read_nccl_allreduce(nccl[0])
        p8 = aic[aic.devices == 8]
        fit_rows = p8[p8.message_bytes.isin([p8.message_bytes.max(), 2.0 ** 24])]
        assert len(fit_rows) == 2
        model = C.fit(fit_rows, hw)
        rows = pd.concat([aic.drop(fit_rows.index), C.read_vidur_allreduce(vidur)], ignore_index=True)
        table = C.error_table(rows, {
            "engine_ape_pct": allreduce_engine_time(rows.message_bytes, rows.devices, hw),
            "model_ape_pct": model.time(rows.message_bytes, rows.devices)})
        tables.append(table.assign(hardware=name, eta=round(model.efficiency, 3),
                                   half_mb=round(model.half_size_bytes / 1e6, 2)))
    report = pd.concat(tables, ignore_index=True)
    with capsys.disabled():
        print("\nall-reduce median APE (%) by source, GPUs and message size (fit rows excluded):")
        print(report.round({"engine_ape_pct": 1, "model_ape_pct": 1}).to_string(index=False))
    aic_large = report[report.source.str.startswith("aiconfigurator") & (report.band == ">=1MB")]
    assert (aic_large.model_ape_pct < 25).all()
    # The engine reads the fitted η∞ and S½ from the link spec: it must reproduce the fitted model.
    assert (report.engine_ape_pct - report.model_ape_pct).abs().max() < 2.0
