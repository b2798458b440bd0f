"""Every documented user mistake, run through the CLI: a non-zero exit, one paragraph on stderr that names what
is wrong (the field, option or file), and no traceback.

The mistakes (each one a case below): a misspelled catalog name; a missing spec file; a misspelled field, also a
required one; a field of the wrong type, sign or unit (percent, a frequency for a bandwidth); an efficiency of 0
or a typo inside ``efficiency.memory``; a ``--set`` without '=', with an unknown or absurdly deep key; ``--trace``
into a missing folder; a YAML alias bomb, a deeply nested or over-long document, a 5,000-digit integer, a file that
is not UTF-8 or not YAML; a measurement table with only a header, an impossible shape or an overflowing size; an
import that yields no valid row; a report into a folder of other files, or from a review with a typo; ``op`` with
kv_heads that do not divide heads or a zero size; a missing grid file.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from perfmodel.cli.main import main
from perfmodel.specs.base import catalog_dir

HEADER = "hardware,op,dtype,m,n,k,batch,q_len,kv_len,heads,kv_heads,head_dim,causal,measured_s,source\n"
REVIEW = ("title: t\nhardware: [h100-sxm]\nmethods: [{label: ARM, model: llama-3.1-8b, scenario: arm}]\n"
          "sections: [breakdown]\ndpi: 40\n")


def _model(tmp: Path, **changes) -> str:
    data = yaml.safe_load((catalog_dir("models") / "llama-3.1-8b.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path = tmp / "model.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _text(tmp: Path, name: str, text: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def _laughs(tmp: Path) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return _text(tmp, "laughs.yaml", "\n".join(lines) + "\nname: *a9\n")


def _folder_with_other_files(tmp: Path) -> str:
    out = tmp / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_bytes(b"mine")
    return str(out)


def _vidur_all_blank(tmp: Path) -> str:
    folder = tmp / "vidur" / "h100" / "llama"
    folder.mkdir(parents=True)
    (folder / "mlp.csv").write_text(
        "n_head,n_kv_head,n_embd,n_expanded_embd,use_gated_mlp,num_tokens,num_tensor_parallel_workers,"
        "time_stats.add.median\n32,8,4096,14336,true,16,1,\n32,8,4096,14336,true,32,1,nan\n")
    return str(folder / "mlp.csv")


MISTAKES = {
    "unknown hardware name": (lambda t: ["predict", "--hardware", "h100"], "did you mean h100-sxm"),
    "missing spec file": (lambda t: ["predict", "--model", str(t / "nope.yaml")], "nope.yaml"),
    "misspelled field": (lambda t: ["predict", "--model", _model(t, hiden_size=4096)], "did you mean hidden_size"),
    "misspelled required field": (lambda t: ["predict", "--model", _model(t, hidden_size=None, hiden_size=4096)],
                                  "hidden_size is required"),
    "negative value": (lambda t: ["predict", "--set", "batch=-1"], "'batch'"),
    "wrong type": (lambda t: ["predict", "--set", "batch=many"], "'batch'"),
    "frequency as a bandwidth": (lambda t: ["predict", "--set", "hardware.memory.hbm.bandwidth_bytes_per_s=3.35 Hz"],
                                 "unit of frequency"),
    "percent as a size": (lambda t: ["predict", "--set", "hardware.memory.hbm.capacity_bytes=100 %"],
                          "memory.hbm.capacity_bytes"),
    "power tower as a size": (lambda t: ["predict", "--set", "hardware.memory.hbm.capacity_bytes=9**9**9 B"],
                              "memory.hbm.capacity_bytes"),
    "zero efficiency": (lambda t: ["predict", "--set", "hardware.efficiency.memory.hbm=0"], "efficiency.memory.hbm"),
    "typo in efficiency.memory": (lambda t: ["predict", "--set", "hardware.efficiency.memory.hmb=0.9"],
                                  "efficiency.memory.hmb"),
    "set without =": (lambda t: ["predict", "--set", "batch"], "KEY=VALUE"),
    "unknown set key": (lambda t: ["predict", "--set", "bacth=4"], "did you mean batch"),
    "set key 1,500 levels deep": (lambda t: ["predict", "--set", ".".join(["a"] * 1500) + "=1"], "at most 32 parts"),
    "trace into a missing folder": (lambda t: ["predict", "--trace", str(t / "no" / "such" / "t.json")], "--trace"),
    "alias bomb": (lambda t: ["predict", "--model", _laughs(t)], "expands to more than"),
    "deep nesting": (lambda t: ["predict", "--model", _text(t, "d.yaml", "name: " + "[" * 1500 + "]" * 1500)],
                     "nesting deeper than"),
    "5,000-digit integer": (lambda t: ["predict", "--model", _text(t, "i.yaml", "hidden_size: " + "9" * 5000)],
                            "5,000 digits"),
    "not UTF-8": (lambda t: ["predict", "--model", _text(t, "b.yaml", b"name: \xff\xfe\n")], "UTF-8"),
    "not YAML": (lambda t: ["predict", "--model", _text(t, "s.yaml", "name: [unclosed\n")], "valid YAML"),
    "header-only table": (lambda t: ["validate", _text(t, "h.csv", HEADER)], "no measured rows"),
    "impossible attention shape": (
        lambda t: ["validate", _text(t, "kv.csv", HEADER + "h100-sxm,attention,bf16,,,,1,1,4096,32,7,128,true,"
                                                           "1e-5,test\n")], "kv_heads"),
    "overflowing size": (lambda t: ["validate", _text(t, "m.csv", HEADER + "h100-sxm,gemm,bf16,99999999999999999999,"
                                                                 "4096,4096,,,,,,,,1e-4,test\n")], "column 'm'"),
    "import with no valid row": (lambda t: ["import", "vidur", _vidur_all_blank(t), "-o", str(t / "o.csv")],
                                 "no valid row"),
    "report into a folder of other files": (
        lambda t: ["report", _text(t, "r.yaml", REVIEW), "-o", _folder_with_other_files(t)], "--force"),
    "typo in a review": (lambda t: ["report", _text(t, "r.yaml", REVIEW.replace("sections", "sectons")),
                                    "-o", str(t / "o")], "did you mean sections"),
    "kv_heads not dividing heads": (lambda t: ["op", "attention", "--batch", "1", "--q-len", "1", "--kv-len", "64",
                                               "--heads", "32", "--kv-heads", "7", "--head-dim", "128"], "kv_heads"),
    "zero size": (lambda t: ["op", "gemm", "--m", "0", "--n", "8", "--k", "8"], "'m'"),
    "bad set in compare": (lambda t: ["compare", "--scenario", "arm", "--set", "kv_cache.format=int5"],
                           "kv_cache.format"),
    "missing grid file": (lambda t: ["sweep", str(t / "grid.yaml")], "grid.yaml"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_user_mistake_is_one_clean_paragraph(name, tmp_path, capsys):
    make_args, must_name = MISTAKES[name]
    args = make_args(tmp_path)
    code = main(args)
    captured = capsys.readouterr()
    err = captured.err
    assert code != 0, f"{name}: exit status 0"
    assert "Traceback" not in err and "Traceback" not in captured.out
    message = err[err.index("perfmodel: error:"):].rstrip("\n")
    assert "\n\n" not in message, f"{name}: more than one paragraph:\n{message}"
    assert must_name in message, f"{name}: {must_name!r} not in:\n{message}"
    for pydantic_words in ("Input should", "Value error,", "Extra inputs are not permitted", "Field required"):
        assert pydantic_words not in message
