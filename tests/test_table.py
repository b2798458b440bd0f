"""The measurement-table schema: normalization, validation messages, CSV / Parquet round trips, appending."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfmodel.validation.table import (
    ALL_COLUMNS, COLUMNS, append_rows, empty_table, normalize, read_table, summarize, write_table,
)


def _rows() -> list[dict]:
    return [
        {"hardware": "h100-sxm", "op": "gemm", "dtype": "bfloat16", "m": 4096, "n": 4096, "k": 4096,
         "measured_s": 1.66e-4, "source": "test:gemm"},
        {"hardware": "h100-sxm", "op": "attention", "dtype": "bf16", "batch": 8, "q_len": 1, "kv_len": 4095,
         "heads": 32, "kv_heads": 8, "head_dim": 128, "causal": True, "measured_s": 3.1e-5,
         "source": "test:decode"},
        {"hardware": "a100-sxm-80gb", "op": "norm", "variant": "rmsnorm", "dtype": "torch.float16", "m": 2048,
         "n": 4096, "measured_s": 2e-5, "source": "test:norm"},
    ]


def test_empty_table_has_the_schema():
    t = empty_table()
    assert tuple(t.columns) == ALL_COLUMNS and ALL_COLUMNS[:15] == COLUMNS and len(t) == 0
    assert str(t["m"].dtype) == "Int64" and str(t["causal"].dtype) == "boolean"
    assert t["measured_s"].dtype == "float64" and t["source"].dtype == "string"


def test_normalize_coerces_types_and_fills_unused_columns():
    t = normalize(pd.DataFrame(_rows()))
    assert list(t["dtype"]) == ["bf16", "bf16", "fp16"]
    assert list(t["variant"]) == ["", "", "rmsnorm"]
    assert t.loc[0, "k"] == 4096 and pd.isna(t.loc[0, "batch"]) and pd.isna(t.loc[0, "causal"])
    assert t.loc[1, "q_len"] == 1 and t.loc[1, "kv_len"] == 4095 and bool(t.loc[1, "causal"]) is True
    assert pd.isna(t.loc[2, "k"])


def test_normalize_accepts_strings_as_written_by_csv():
    raw = pd.DataFrame([{"hardware": "h100-sxm", "op": "Attention", "dtype": "fp16", "batch": "2", "q_len": "16",
                         "kv_len": "16", "heads": "4", "kv_heads": "4", "head_dim": "64", "causal": "false",
                         "measured_s": "1.5e-05", "source": "x", "m": ""}])
    t = normalize(raw)
    assert t.loc[0, "op"] == "attention" and bool(t.loc[0, "causal"]) is False
    assert t.loc[0, "batch"] == 2 and t.loc[0, "measured_s"] == 1.5e-5 and pd.isna(t.loc[0, "m"])


def test_normalize_rejects_a_missing_column_by_name():
    df = pd.DataFrame(_rows()).drop(columns=["measured_s"])
    with pytest.raises(ValueError, match=r"my\.csv: missing column 'measured_s'"):
        normalize(df, where="my.csv")


@pytest.mark.parametrize("column, value, message", [
    ("op", "matmul", r"column 'op' names an unknown op in 1 row .*got 'matmul'.*expected one of gemm, attention"),
    ("dtype", "int4", r"column 'dtype' .*got 'int4'.*expected one of bf16, fp16, fp8, fp32"),
    ("measured_s", 0.0, r"column 'measured_s' is zero or negative.*expected a finite time in seconds > 0"),
    ("measured_s", float("nan"), r"column 'measured_s' is empty \(no time\)"),
    ("measured_s", "fast", r"column 'measured_s' is not a number"),
    ("m", "12.5", r"column 'm' is not a valid size.*got '12.5'.*whole number from 1 to 2,147,483,647"),
    ("m", -3, r"column 'm' is not a valid size"),
    ("m", "99999999999999999999", r"column 'm' is not a valid size"),
    ("hardware", "", r"column 'hardware' is empty"),
])
def test_normalize_rejects_bad_values_naming_the_column(column, value, message):
    rows = _rows()
    rows[0][column] = value
    with pytest.raises(ValueError, match=message):
        normalize(pd.DataFrame(rows))


def test_table_rows_follow_the_shape_rules_of_specs():
    # The same rules as `perfmodel predict`: kv_heads divides heads, sizes fit the range (no int64 wrap-around).
    rows = _rows()
    rows[1]["kv_heads"] = 7
    with pytest.raises(ValueError, match=r"column 'kv_heads' does not divide heads in 1 row \(first at row\(s\) 1"):
        normalize(pd.DataFrame(rows))
    rows = _rows()
    rows[0]["m"] = 99999999999999999999
    with pytest.raises(ValueError, match=r"column 'm' is not a valid size"):
        normalize(pd.DataFrame(rows))


def test_every_broken_rule_is_counted_in_one_message():
    rows = _rows() * 2
    rows = [dict(r) for r in rows]
    rows[0]["measured_s"] = float("nan")
    rows[3]["measured_s"] = float("nan")
    rows[1]["op"] = "matmul"
    with pytest.raises(ValueError) as info:
        normalize(pd.DataFrame(rows), where="t.csv")
    text = str(info.value)
    assert text.startswith("t.csv: 3 of 6 rows invalid: ")
    assert "column 'measured_s' is empty (no time) in 2 rows (first at row(s) 0, 3)" in text
    assert "column 'op' names an unknown op in 1 row" in text


def test_normalize_requires_the_shape_of_each_op_kind():
    rows = _rows()
    del rows[0]["k"]
    with pytest.raises(ValueError, match=r"column 'k' is empty in gemm rows in 1 row.*gemm rows need m, n, k"):
        normalize(pd.DataFrame(rows))
    rows = _rows()
    del rows[1]["causal"]
    with pytest.raises(ValueError, match=r"column 'causal' is empty in attention rows in 1 row"):
        normalize(pd.DataFrame(rows))


def test_extra_columns_are_kept_after_the_standard_ones():
    df = pd.DataFrame(_rows()).assign(spread_pct=[1.0, 2.0, 3.0])
    t = normalize(df)
    assert list(t.columns) == list(ALL_COLUMNS) + ["spread_pct"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_preserves_the_table(tmp_path, suffix):
    t = normalize(pd.DataFrame(_rows()))
    path = tmp_path / f"t{suffix}"
    write_table(t, path)
    pd.testing.assert_frame_equal(read_table(path), t)


def test_read_table_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.csv: no such file"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"t\.txt: unknown table format '\.txt'"):
        read_table(tmp_path / "t.txt")
    bad = tmp_path / "bad.csv"
    bad.write_text("hardware,op,dtype,source\nh100-sxm,gemm,bf16,x\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column 'measured_s'"):
        read_table(bad)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(ValueError, match=r"junk\.parquet: not a readable parquet table"):
        read_table(junk)


def test_append_rows_csv_writes_the_header_once(tmp_path):
    path = tmp_path / "runs" / "m.csv"
    rows = _rows()
    assert append_rows(path, rows[0]) == 1
    assert append_rows(path, rows[1:]) == 2
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and lines[0].split(",") == list(ALL_COLUMNS)
    pd.testing.assert_frame_equal(read_table(path), normalize(pd.DataFrame(rows)))


def test_append_rows_csv_rejects_other_columns(tmp_path):
    path = tmp_path / "m.csv"
    append_rows(path, _rows()[:1])
    with pytest.raises(ValueError, match="existing header"):
        append_rows(path, pd.DataFrame(_rows()[1:]).assign(extra=1))


def test_append_rows_parquet_extends_the_file(tmp_path):
    path = tmp_path / "m.parquet"
    rows = _rows()
    append_rows(path, rows[:2])
    append_rows(path, pd.DataFrame(rows[2:]))
    pd.testing.assert_frame_equal(read_table(path), normalize(pd.DataFrame(rows)))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_summarize_groups_rows():
    groups = summarize(normalize(pd.DataFrame(_rows() + [_rows()[0]])))
    gemm = next(g for g in groups if g["op"] == "gemm")
    assert gemm["rows"] == 2 and gemm["hardware"] == "h100-sxm" and math.isclose(gemm["median_s"], 1.66e-4)


_dims = st.integers(min_value=1, max_value=1 << 20)
_times = st.floats(min_value=1e-9, max_value=10.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.one_of(
    st.builds(lambda m, n, k, t: {"hardware": "h100-sxm", "op": "gemm", "dtype": "bf16", "m": m, "n": n, "k": k,
                                  "measured_s": t, "source": "h"}, _dims, _dims, _dims, _times),
    st.builds(lambda b, q, kv, c, t: {"hardware": "b200-sxm", "op": "attention", "dtype": "fp8", "batch": b,
                                      "q_len": q, "kv_len": kv, "heads": 8, "kv_heads": 1, "head_dim": 64,
                                      "causal": c, "measured_s": t, "source": "h, with \"quotes\""},
              _dims, _dims, _dims, st.booleans(), _times),
), min_size=1, max_size=8))
def test_csv_round_trip_is_exact(tmp_path, rows):
    t = normalize(pd.DataFrame(rows))
    path = tmp_path / "prop.csv"
    write_table(t, path)
    pd.testing.assert_frame_equal(read_table(path), t)
