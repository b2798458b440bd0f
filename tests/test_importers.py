"""Importers of the public measurements (../shared/data/measured) and of Nsight Compute CSVs, and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfmodel.cli.main import main
from perfmodel.validation.importers import SkippedInput, import_source
from perfmodel.validation.table import ALL_COLUMNS, normalize, read_table

MEASURED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "measured"
# dense tensor-core peaks (bf16 = fp16) from the datasheets: no measured GEMM may beat them
PEAK_FLOPS = {"h100-sxm": 989.4e12, "a100-sxm-80gb": 312e12}
# (L2 bytes, main-memory bytes/s) from the datasheets: H100 50 MiB / 3.35 TB/s, A100 40 MiB / 2.039 TB/s,
# L40S 96 MiB / 864 GB/s, GB200 (per GPU) 126 MiB / 8 TB/s
MEMORY = {"h100-sxm": (50 * 2**20, 3.35e12), "a100-sxm-80gb": (40 * 2**20, 2.039e12),
          "l40s": (96 * 2**20, 0.864e12), "gb200": (126 * 2**20, 8.0e12)}


def _dataset(name: str) -> Path:
    path = MEASURED / name
    if not path.is_dir():
        pytest.skip(f"public measurements not found at {path}")
    return path


@pytest.fixture(scope="module")
def aic() -> pd.DataFrame:
    return import_source("aiconfigurator", _dataset("aiconfigurator"))


AIC_GPUS = {"h100-sxm", "a100-sxm-80gb", "l40s", "gb200"}


@pytest.fixture(scope="module")
def vidur() -> pd.DataFrame:
    return import_source("vidur", _dataset("vidur"))


@pytest.fixture(scope="module")
def llmcompass() -> pd.DataFrame:
    return import_source("llmcompass", _dataset("llmcompass"))


@pytest.fixture(scope="module")
def servingsim() -> pd.DataFrame:
    return import_source("llmservingsim", _dataset("llmservingsim"))


def _is_normalized(t: pd.DataFrame) -> None:
    assert tuple(t.columns) == ALL_COLUMNS and len(t) > 0
    times = t["measured_s"].to_numpy()
    assert np.isfinite(times).all() and (times > 0).all()
    pd.testing.assert_frame_equal(normalize(t), t)


def _gemm_flops_rate(t: pd.DataFrame) -> pd.Series:
    g = t[t.op == "gemm"]
    return 2.0 * g.m.astype(float) * g.n.astype(float) * g.k.astype(float) / g.measured_s


# --- aiconfigurator ---------------------------------------------------------------------------------------

def test_aiconfigurator_tables(aic):
    _is_normalized(aic)
    assert set(aic.hardware) == AIC_GPUS
    assert set(aic.op) == {"gemm", "attention"} and set(aic.dtype) == {"bf16"}
    assert (aic.variant == "").all()
    kernels = aic.source.str.split(":").str[1].groupby(aic.hardware).unique().map(set).to_dict()
    assert kernels == {
        "h100-sxm": {"torch.nn.functional.linear", "vllm_flash_attn_fa3"},
        "a100-sxm-80gb": {"vllm_default", "vllm_flash_attn"},
        "l40s": {"torch.nn.functional.linear", "vllm_flash_attn_fa2"},
        "gb200": {"torch.nn.functional.linear", "vllm_flashinfer_trtllmprefill", "vllm_flashinfer_trtllmdecode"},
    }
    assert aic.source.str.startswith("aiconfigurator/").all()


def test_aiconfigurator_gemm_units_are_physical(aic):
    g = aic[aic.op == "gemm"]
    h100 = g[(g.hardware == "h100-sxm") & (g.m == 4096) & (g.n == 4096) & (g.k == 4096)]
    assert len(h100) == 1 and 0.1e-3 < h100.measured_s.iloc[0] < 0.4e-3
    a100 = g[(g.hardware == "a100-sxm-80gb") & (g.m == 4096) & (g.n == 4096) & (g.k == 4096)]
    assert len(a100) == 1 and 0.44e-3 < a100.measured_s.iloc[0] < 1.0e-3  # 312 TFLOPS peak → ≥ 0.44 ms
    rate = _gemm_flops_rate(aic)
    for hw, peak in PEAK_FLOPS.items():
        mine = rate[aic.loc[rate.index, "hardware"] == hw]
        assert mine.max() <= peak and mine.max() > 0.7 * peak


def test_aiconfigurator_attention_filters(aic):
    src = MEASURED / "aiconfigurator" / "h100_sxm" / "attention" / "vllm" / "0.24.0"
    raw = pd.read_parquet(src / "context_attention_perf.parquet")
    expected = raw[(raw.kernel_source == "vllm_flash_attn_fa3") & (raw.kv_cache_dtype == "bfloat16")
                   & (raw.window_size == 0)]
    got = aic[aic.source.str.contains("h100_sxm/attention/vllm/0.24.0/context")]
    assert len(got) == len(expected) > 0
    assert (got.q_len == got.kv_len).all() and got.causal.all()
    assert got.head_dim.max() <= 256  # the FA4 head_dim-512 rows are left out
    decode = aic[aic.source.str.contains("generation_attention")]
    assert (decode.q_len == 1).all() and decode.kv_len.max() == 131071
    assert set((decode.kv_len + 1).astype(int)) <= {2 ** i for i in range(1, 18)}  # step = 2^i - 1
    # the longest decodes read GBs of KV cache: milliseconds, not seconds or microseconds
    longest = decode[decode.batch.astype(float) * decode.kv_len >= 2 ** 20]
    assert 1e-4 < longest.measured_s.max() < 1e-2
    # a cache four times the L2 streams from main memory: below the datasheet bandwidth of each GPU
    kv_bytes = (2 * 2 * decode.batch * decode.kv_len * decode.kv_heads * decode.head_dim).astype(float)
    for hw, (l2_bytes, bandwidth) in MEMORY.items():
        mine = (decode.hardware == hw) & (kv_bytes > 4 * l2_bytes)
        assert mine.sum() > 100 and (kv_bytes[mine] / decode.measured_s[mine]).max() < bandwidth


def test_aiconfigurator_kernel_choice_and_errors():
    f = _dataset("aiconfigurator") / "h100_sxm" / "attention" / "vllm" / "0.24.0" / "context_attention_perf.parquet"
    fa4 = import_source("aiconfigurator", f, attention_kernel="vllm_flash_attn_fa4")
    assert set(fa4.head_dim) == {512} and fa4.source.str.contains("fa4").all()
    with pytest.raises(ValueError, match=r"kernel_source' has no 'nope' rows.*vllm_flash_attn_fa3"):
        import_source("aiconfigurator", f, attention_kernel="nope")
    with pytest.warns(SkippedInput, match="a100_sxm/gemm"):
        fp8 = import_source("aiconfigurator", _dataset("aiconfigurator"),
                            gemm_kernel="CutlassFP8ScaledMMLinearKernel", gemm_dtype="fp8")  # A100 lacks it
    gemm = fp8[fp8.op == "gemm"]
    assert set(gemm.hardware) == {"h100-sxm", "l40s", "gb200"} and set(gemm.dtype) == {"fp8"}


def test_aiconfigurator_unknown_gpu_folder_is_skipped_not_fatal(tmp_path):
    """A GPU folder the importer does not know is reported and skipped; alone, it is an error naming the fix."""
    known = tmp_path / "aiconfigurator" / "h100_sxm" / "gemm" / "gemm_perf.parquet"
    unknown = tmp_path / "aiconfigurator" / "mi355x" / "gemm" / "gemm_perf.parquet"
    for f, device in ((known, "NVIDIA H100 80GB HBM3"), (unknown, "AMD Instinct MI355X")):
        f.parent.mkdir(parents=True)
        pd.DataFrame({"device": [device], "kernel_source": ["torch.nn.functional.linear"],
                      "gemm_dtype": ["bfloat16"], "m": [4096], "n": [4096], "k": [4096],
                      "latency": [0.166]}).to_parquet(f)
    with pytest.warns(SkippedInput, match=r"mi355x.*unknown GPU.*AMD Instinct MI355X.*KNOWN_GPUS"):
        t = import_source("aiconfigurator", tmp_path / "aiconfigurator")
    assert t.hardware.tolist() == ["h100-sxm"]
    with pytest.raises(ValueError, match=r"unknown GPU"):
        import_source("aiconfigurator", unknown)


def test_aiconfigurator_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"missing: no such file or directory"):
        import_source("aiconfigurator", tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no aiconfigurator files under this folder"):
        import_source("aiconfigurator", tmp_path)
    gemm = tmp_path / "h100_sxm" / "gemm_perf.parquet"
    gemm.parent.mkdir()
    pd.DataFrame({"kernel_source": ["torch.nn.functional.linear"], "gemm_dtype": ["bfloat16"], "m": [1],
                  "n": [32], "k": [32]}).to_parquet(gemm)
    with pytest.raises(ValueError, match=r"gemm_perf\.parquet: missing column 'latency'"):
        import_source("aiconfigurator", gemm)


def test_aiconfigurator_gpu_from_device_column(tmp_path):
    gemm = tmp_path / "copy" / "gemm_perf.parquet"
    gemm.parent.mkdir()
    pd.DataFrame({"device": ["NVIDIA H100 80GB HBM3"], "kernel_source": ["torch.nn.functional.linear"],
                  "gemm_dtype": ["bfloat16"], "m": [4096], "n": [4096], "k": [4096],
                  "latency": [0.166]}).to_parquet(gemm)
    t = import_source("aiconfigurator", gemm)
    assert t.hardware.tolist() == ["h100-sxm"] and t.measured_s.tolist() == [0.166e-3]


# --- vidur ------------------------------------------------------------------------------------------------

def test_vidur(vidur):
    _is_normalized(vidur)
    assert set(vidur.hardware) == {"a100-sxm-80gb", "h100-sxm"} and set(vidur.dtype) == {"fp16"}
    assert vidur.source.str.contains("GPU variant not stated").all()
    assert (vidur.groupby("op").size() / 2088).to_dict() == {
        "gemm": 4, "norm": 2, "elementwise": 3, "embedding": 1}  # 1044 rows per GPU file
    qkv = vidur[vidur.source.str.contains(":attn_pre_proj tp=")]
    tp = qkv.source.str.extract(r"tp=(\d+)")[0].astype(int)
    assert ((qkv.n * tp) == (32 + 2 * 32) * 128).all() and (qkv.k == 4096).all()
    up = vidur[vidur.source.str.contains(":mlp_up_proj tp=1 ")]
    assert (up.n == 2 * 11008).all()
    assert set(vidur[vidur.op == "norm"].variant) == {"rmsnorm"}
    assert set(vidur[vidur.op == "elementwise"].variant) == {"rope", "silu_mul", "add"}
    rate = _gemm_flops_rate(vidur)
    for hw, peak in PEAK_FLOPS.items():
        assert rate[vidur.loc[rate.index, "hardware"] == hw].max() < peak
    big = vidur[vidur.source.str.contains("a100/.*:attn_pre_proj tp=1 ") & (vidur.m == 4096)]
    assert 1e-3 < big.measured_s.min() < 3e-3  # ~1.9 ms in the file


# --- LLMCompass -------------------------------------------------------------------------------------------

def test_llmcompass(llmcompass):
    _is_normalized(llmcompass)
    t = llmcompass
    assert set(t.hardware) == {"a100-sxm-80gb"} and len(t) == 84
    assert t.groupby(["op", "variant"]).size().to_dict() == {
        ("elementwise", "gelu"): 20, ("elementwise", "softmax"): 22, ("gemm", ""): 20, ("norm", "layernorm"): 22}
    mm = t[(t.op == "gemm") & (t.m == 4096) & (t.n == 12288) & (t.k == 12288)]
    assert mm.measured_s.tolist() == pytest.approx([4.4576e-3])
    assert (t[t.op == "gemm"].dtype == "bf16").all() and (t[t.op != "gemm"].dtype == "fp16").all()
    ln = t[(t.variant == "layernorm") & (t.m == 4096) & (t.n == 4096)]
    assert ln.measured_s.iloc[0] == pytest.approx(4096 * 4096 / 211.31755008307508e9)
    gelu = t[t.variant == "gelu"]
    assert (gelu.m == 1).all() and gelu.n.max() == 2 ** 29
    assert t.measured_s.min() > 10e-6  # host timing: every number includes the launch overhead
    assert t.source.str.contains("launch overhead").all()
    assert _gemm_flops_rate(t).max() < PEAK_FLOPS["a100-sxm-80gb"]


def test_llmcompass_rejects_whole_layers():
    with pytest.raises(ValueError, match=r"transformer_A100\.csv: not a llmcompass file"):
        import_source("llmcompass", _dataset("llmcompass") / "transformer_A100.csv")


# --- LLMServingSim ----------------------------------------------------------------------------------------

def test_llmservingsim(servingsim):
    _is_normalized(servingsim)
    t = servingsim
    assert set(t.hardware) == {"h100-sxm"} and len(t) == 2 * 15 * 2048
    first = t[t.source.str.contains("tp1/layers.csv:embedding") & (t.m == 1)]
    assert first.measured_s.tolist() == [2915e-9]
    attn = t[t.op == "attention"]
    assert (attn.q_len == attn.kv_len).all() and (attn.batch == 1).all() and attn.causal.all()
    assert set(zip(attn.heads, attn.kv_heads)) == {(32, 8), (16, 4)}
    lm = t[t.source.str.contains(":lm_head tp=")]
    assert set(lm.n) == {128256, 64128} and (lm.k == 4096).all()
    down = t[t.source.str.contains(":down_proj tp=2")]
    assert (down.k == 7168).all() and (down.n == 4096).all()
    assert _gemm_flops_rate(t).max() < PEAK_FLOPS["h100-sxm"]


# --- ncu --------------------------------------------------------------------------------------------------

RAW = """==PROF== Connected to process 4242 (/usr/bin/python3)
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","gpu__time_duration.sum"
"","","","","","","","","","","","usecond"
"0","4242","python3","node","sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n","1","7","(384, 1, 1)","(132, 1, 1)","0","9.0","1,234.50"
"1","4242","python3","node","void at::native::vectorized_elementwise_kernel<4>","1","7","(128, 1, 1)","(64, 1, 1)","0","9.0","2.25"
"""
DETAILS = """"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","1","python3","node","flash_fwd_kernel","1","7","(128, 1, 1)","(64, 32, 1)","0","9.0","GPU Speed Of Light Throughput","DRAM Frequency","cycle/nsecond","2.62"
"0","1","python3","node","flash_fwd_kernel","1","7","(128, 1, 1)","(64, 32, 1)","0","9.0","GPU Speed Of Light Throughput","Duration","msecond","1.50"
"1","1","python3","node","rms_norm_kernel","1","7","(256, 1, 1)","(4096, 1, 1)","0","9.0","GPU Speed Of Light Throughput","Duration","nsecond","8,192"
"1","1","python3","node","rms_norm_kernel","1","7","(256, 1, 1)","(4096, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","8,000"
"""
SHAPES = """kernel,op,variant,m,n,batch,q_len,kv_len,heads,kv_heads,head_dim,causal
flash_fwd,attention,,,,2,4096,4096,32,8,128,true
rms_norm,norm,rmsnorm,4096,4096,,,,,,,
"""


@pytest.fixture
def ncu_files(tmp_path) -> dict[str, Path]:
    files = {"raw": tmp_path / "raw.csv", "details": tmp_path / "details.csv", "shapes": tmp_path / "shapes.csv"}
    files["raw"].write_text(RAW)
    files["details"].write_text(DETAILS)
    files["shapes"].write_text(SHAPES)
    return files


def test_ncu_raw_page_with_one_shape(ncu_files):
    t = import_source("ncu", ncu_files["raw"], op="gemm", m=4096, n=4096, k=4096, dtype="bf16",
                      hardware="h100-sxm", kernel="gemm")
    _is_normalized(t)
    assert len(t) == 1 and t.measured_s.iloc[0] == pytest.approx(1234.5e-6)
    assert t.source.iloc[0] == "ncu/raw.csv:sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n id=0"
    both = import_source("ncu", ncu_files["raw"], op="elementwise", variant="add", m=1, n=1 << 20, dtype="fp16",
                         hardware="h100-sxm")
    assert both.measured_s.tolist() == pytest.approx([1234.5e-6, 2.25e-6])


def test_ncu_details_page_with_shapes_csv(ncu_files):
    t = import_source("ncu", ncu_files["details"], shapes=ncu_files["shapes"], dtype="bf16", hardware="h100-sxm")
    _is_normalized(t)
    attn, norm = t.iloc[0], t.iloc[1]
    assert attn.op == "attention" and attn.batch == 2 and attn.kv_heads == 8 and bool(attn.causal)
    assert attn.measured_s == pytest.approx(1.5e-3)
    assert norm.variant == "rmsnorm" and norm.m == 4096
    assert norm.measured_s == pytest.approx(8000e-9)  # gpu__time_duration.sum preferred over Duration


def test_ncu_errors(ncu_files, tmp_path):
    with pytest.raises(ValueError, match="carry no op shapes"):
        import_source("ncu", ncu_files["raw"], dtype="bf16", hardware="h100-sxm")
    with pytest.raises(ValueError, match="no hardware"):
        import_source("ncu", ncu_files["raw"], op="gemm", m=1, n=1, k=1, dtype="bf16")
    with pytest.raises(ValueError, match=r"shapes\.csv: not an Nsight Compute CSV"):
        import_source("ncu", ncu_files["shapes"], op="gemm", m=1, n=1, k=1, dtype="bf16", hardware="h100-sxm")
    odd = tmp_path / "odd.csv"
    odd.write_text(RAW.replace('"usecond"', '"furlong"'))
    with pytest.raises(ValueError, match=r"odd\.csv: .*unit 'furlong'"):
        import_source("ncu", odd, op="gemm", m=1, n=1, k=1, dtype="bf16", hardware="h100-sxm")


# --- CLI --------------------------------------------------------------------------------------------------

def test_cli_import_aiconfigurator_end_to_end(tmp_path, capsys, aic):
    out = tmp_path / "aic.parquet"
    assert main(["import", "aiconfigurator", str(_dataset("aiconfigurator")), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert all(gpu in text for gpu in AIC_GPUS) and f"{len(aic)} rows written" in text
    pd.testing.assert_frame_equal(read_table(out), aic)


def test_cli_import_json_and_append(tmp_path, capsys, ncu_files):
    out = tmp_path / "t.csv"
    args = ["import", "ncu", str(ncu_files["details"]), "--shapes", str(ncu_files["shapes"]), "--dtype", "bf16",
            "--hardware", "h100-sxm", "-o", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 2 and {g["op"] for g in summary["groups"]} == {"attention", "norm"}
    assert main(args + ["--append"]) == 0
    capsys.readouterr()
    assert len(read_table(out)) == 4


def test_cli_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["import", "vidur", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o.csv")]) == 2
    assert "perfmodel: error:" in capsys.readouterr().err
    assert main(["import", "vidur", str(tmp_path), "-o", str(tmp_path / "o.txt")]) == 2
    assert "unknown table format '.txt'" in capsys.readouterr().err
    assert main(["import", "vidur", str(tmp_path), "--m", "4", "-o", str(tmp_path / "o.csv")]) == 2
    assert "--m is an ncu option" in capsys.readouterr().err
    bad = tmp_path / "mlp.csv"
    bad.write_text("num_tokens,time_stats.emb.median\n1,0.1\n")
    assert main(["import", "vidur", str(bad), "-o", str(tmp_path / "o.csv")]) == 2
    assert "mlp.csv: missing column 'n_head'" in capsys.readouterr().err


def test_cli_module_does_not_import_pandas_at_start():
    import subprocess
    import sys

    code = ("import argparse, sys, perfmodel.cli.import_cmd as c; "
            "c.register(argparse.ArgumentParser().add_subparsers()); print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unknown_source_is_a_value_error():
    with pytest.raises(ValueError, match="unknown measurement source 'nvprof'.*aiconfigurator"):
        import_source("nvprof", ".")
