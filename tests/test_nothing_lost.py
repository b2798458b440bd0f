"""Nothing lost, nothing misplaced: atomic writes, a torn last line of an appended table, imports that read no
valid row, dropped rows counted by reason (the same NaN rule in every importer), file permissions, file names."""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import pandas as pd
import pytest

from perfmodel.cli.main import main
from perfmodel.files import inside, slug, write_atomic
from perfmodel.validation.importers import SkippedInput, import_source
from perfmodel.validation.table import TornLine, append_rows, read_table, write_table


def _row(m: int, source: str = "perfmodel-measure:cpu rot=4") -> dict:
    return {"hardware": "cpu-generic", "op": "gemm", "dtype": "fp32", "m": m, "n": 64, "k": 64,
            "measured_s": 1e-5 * m, "source": source}


# -- atomic writes, permissions, paths ----------------------------------------------------------------------------
def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("previous")

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(path, crash)
    assert path.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_tables_get_the_users_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_table(pd.DataFrame([_row(8)]), tmp_path / "t.csv")
        write_table(pd.DataFrame([_row(8)]), tmp_path / "t.parquet")
    finally:
        os.umask(old)
    for name in ("t.csv", "t.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask


def test_slug_keeps_safe_names_and_separates_unsafe_ones():
    assert slug("roofline-h100-sxm") == "roofline-h100-sxm"
    for name in ("/../../x/ESCAPED", "..", "a/b", "<script>", "", "x" * 500, "💥"):
        s = slug(name)
        assert s and "/" not in s and not s.startswith(".") and len(s) <= 80
    assert slug("a/b") != slug("a-b") and slug("a/b") == slug("a/b")


def test_inside_refuses_paths_out_of_the_folder(tmp_path):
    assert inside(tmp_path, "figures/a.png") == (tmp_path / "figures" / "a.png").resolve()
    for bad in ("../x", "figures/../../x", "/etc/passwd"):
        with pytest.raises(ValueError, match="outside the output folder"):
            inside(tmp_path, bad)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(ValueError, match="outside the output folder"):
        inside(tmp_path, "link/escaped.png")


# -- a torn last line ------------------------------------------------------------------------------------------------
def _torn_table(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    append_rows(path, [_row(8), _row(16)])
    data = path.read_bytes()
    path.write_bytes(data[:-12])  # a crash while the second row was written: its source is cut off
    return path


def test_a_torn_last_line_is_left_out_when_reading(tmp_path):
    path = _torn_table(tmp_path)
    with pytest.warns(TornLine, match="incomplete"):
        table = read_table(path)
    assert list(table.m) == [8]


def test_a_torn_last_line_is_replaced_when_appending(tmp_path):
    path = _torn_table(tmp_path)
    with pytest.warns(TornLine):
        append_rows(path, [_row(16)])
    table = read_table(path)
    assert list(table.m) == [8, 16] and (table.source == "perfmodel-measure:cpu rot=4").all()


def test_a_resumed_measurement_measures_the_torn_row_again(tmp_path):
    from perfmodel.validation.measure import existing_keys

    path = _torn_table(tmp_path)
    with pytest.warns(TornLine):
        keys = existing_keys(path)
    assert len(keys) == 1 and 8 in next(iter(keys))


def test_a_complete_last_row_without_newline_is_kept(tmp_path):
    path = tmp_path / "hand.csv"
    write_table(pd.DataFrame([_row(8), _row(16)]), path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # an editor that drops the final newline
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornLine)
        assert list(read_table(path).m) == [8, 16]
        append_rows(path, [_row(32)])
    assert list(read_table(path).m) == [8, 16, 32]


# -- imports -----------------------------------------------------------------------------------------------------
VIDUR_HEAD = ("n_head,n_kv_head,n_embd,n_expanded_embd,use_gated_mlp,num_tokens,num_tensor_parallel_workers,"
              "time_stats.add.median,time_stats.emb.median\n")


def _vidur(tmp_path: Path, rows: str) -> Path:
    folder = tmp_path / "vidur" / "h100" / "m"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mlp.csv").write_text(VIDUR_HEAD + rows)
    return folder / "mlp.csv"


def test_an_import_without_a_valid_row_fails_and_keeps_the_output(tmp_path, capsys):
    out = tmp_path / "out.csv"
    write_table(pd.DataFrame([_row(8)]), out)
    before = out.read_bytes()
    path = _vidur(tmp_path, "32,8,4096,14336,true,16,1,,\n32,8,4096,14336,true,32,1,nan,0\n")
    assert main(["import", "vidur", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no valid row" in err and "Traceback" not in err
    assert out.read_bytes() == before
    assert main(["import", "vidur", str(path), "-o", str(out), "--append"]) == 2
    assert out.read_bytes() == before


def test_dropped_rows_are_counted_by_reason(tmp_path):
    path = _vidur(tmp_path, "32,8,4096,14336,true,16,1,0.01,0.02\n"
                            "32,8,4096,14336,true,32,1,,0.02\n"
                            "32,8,4096,14336,true,48,1,-1,0.02\n"
                            "32,8,4096,14336,true,x,1,0.01,0.02\n")
    with pytest.warns(SkippedInput) as caught:
        table = import_source("vidur", path)
    assert len(table) == 4  # 4 token counts x 2 ops = 8 rows: one blank time, one negative, two without tokens
    message = " ".join(str(w.message) for w in caught)
    assert "4 of 8 rows dropped" in message
    assert "column 'measured_s' is empty (no time) in 1 row" in message
    assert "column 'measured_s' is zero or negative in 1 row" in message
    assert "column 'm' is empty in elementwise rows in 1 row" in message
    assert "column 'm' is empty in embedding rows in 1 row" in message


@pytest.mark.parametrize("dataset", ["vidur", "llmcompass", "llmservingsim", "ncu"])
def test_every_importer_drops_a_row_without_a_time_the_same_way(tmp_path, dataset):
    if dataset == "vidur":
        path = _vidur(tmp_path, "32,8,4096,14336,true,16,1,0.01,0.02\n32,8,4096,14336,true,32,1,nan,0.02\n")
        options, rows = {}, 3
    elif dataset == "llmcompass":
        path = tmp_path / "softmax_A100.csv"
        path.write_text("1024, 4096, 12.5\n2048, 4096, nan\n")
        options, rows = {}, 1
    elif dataset == "llmservingsim":
        folder = tmp_path / "H100" / "Llama-3.1-8B" / "tp1"
        folder.mkdir(parents=True)
        path = folder / "layers.csv"
        path.write_text("layer_name,input,kv_cache,tp_size,latency(ns)\nq_proj,16,0,1,12000\nq_proj,32,0,1,\n")
        options, rows = {}, 1
    else:
        path = tmp_path / "raw.csv"
        path.write_text('"ID","Kernel Name","gpu__time_duration.sum"\n"","","usecond"\n"0","gemm","12.5"\n'
                        '"1","gemm","n/a"\n')
        options, rows = {"op": "gemm", "m": 8, "n": 8, "k": 8, "dtype": "bf16", "hardware": "h100-sxm"}, 1
    with pytest.warns(SkippedInput, match=r"column 'measured_s' is empty \(no time\) in 1 row"):
        table = import_source(dataset, path, **options)
    assert len(table) == rows and table.measured_s.gt(0).all()
