"""Hugging Face config.json files as --model, and `perfmodel models import`.

The published config.json files of the six catalog models could not be obtained verbatim here, so these configs
are written in the layout each family publishes (Llama/Qwen/Mistral field names; OLMo names for LLaDA) from the
fields the catalog YAMLs cite (their `sources.config` URLs), plus fields that do not change cost and must be
ignored. They are not copies of the published files.
"""
from __future__ import annotations

import json

import pytest
import yaml

from perfmodel.api import predict
from perfmodel.cli.main import main
from perfmodel.specs.model import load_model

COST_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
               "vocab_size", "gated_mlp", "tie_word_embeddings", "attention_mask", "qkv_bias", "qk_norm", "dtype")
#: catalog name -> (model_type, architectures, Hugging Face repository) of the family's published configs
FAMILY = {"llama-3.1-8b": ("llama", "LlamaForCausalLM", "meta-llama/Llama-3.1-8B"),
          "llama-3.1-70b": ("llama", "LlamaForCausalLM", "meta-llama/Llama-3.1-70B"),
          "qwen2.5-7b": ("qwen2", "Qwen2ForCausalLM", "Qwen/Qwen2.5-7B"),
          "qwen3-8b": ("qwen3", "Qwen3ForCausalLM", "Qwen/Qwen3-8B"),
          "llada-8b": ("llada", "LLaDAModelLM", "GSAI-ML/LLaDA-8B-Base"),
          "dream-7b": ("Dream", "DreamModel", "Dream-org/Dream-v0-Base-7B")}
IGNORED = {"rope_theta": 500000.0, "rms_norm_eps": 1e-05, "bos_token_id": 1, "eos_token_id": 2, "use_cache": True,
           "initializer_range": 0.02, "transformers_version": "4.45.0"}


def hf_config(name: str) -> dict:
    """A config in the family's published layout carrying the catalog entry's (cited) fields."""
    m = load_model(name)
    model_type, arch, repo = FAMILY[name]
    base = {"_name_or_path": repo, "architectures": [arch], "model_type": model_type, **IGNORED}
    if model_type == "llada":
        return {**base, "d_model": m.hidden_size, "n_layers": m.num_hidden_layers, "n_heads": m.num_attention_heads,
                "n_kv_heads": m.num_key_value_heads, "mlp_hidden_size": m.intermediate_size,
                "vocab_size": m.vocab_size, "embedding_size": m.vocab_size, "weight_tying": m.tie_word_embeddings,
                "max_sequence_length": m.max_position_embeddings, "include_bias": False, "activation_type": "silu",
                "block_type": "llama", "mask_token_id": 126336}
    out = {**base, "hidden_size": m.hidden_size, "num_hidden_layers": m.num_hidden_layers,
           "num_attention_heads": m.num_attention_heads, "num_key_value_heads": m.num_key_value_heads,
           "intermediate_size": m.intermediate_size, "vocab_size": m.vocab_size, "hidden_act": "silu",
           "tie_word_embeddings": m.tie_word_embeddings, "max_position_embeddings": m.max_position_embeddings,
           "torch_dtype": "bfloat16"}
    if model_type == "qwen3":
        out.update(head_dim=m.d_head, attention_bias=False)
    if model_type in ("llama",):
        out.update(attention_bias=False, mlp_bias=False, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    return out


@pytest.mark.parametrize("name", list(FAMILY))
def test_predict_takes_a_config_json_of_each_catalog_model(tmp_path, capsys, name):
    path = tmp_path / name / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(hf_config(name), indent=2))
    scenario = "dlm" if name in ("llada-8b", "dream-7b") else "arm"
    assert main(["predict", "--model", str(path), "--scenario", scenario, "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    catalog = predict("h100-sxm", name, scenario)
    assert data["latency_s"] == pytest.approx(catalog["latency_s"], rel=1e-12)
    assert "were ignored: " in err and "rope_theta" in err and err.count("perfmodel: note:") == 1
    loaded, cat = load_model(str(path)), load_model(name)
    assert {f: getattr(loaded, f) for f in COST_FIELDS} == {f: getattr(cat, f) for f in COST_FIELDS}
    assert loaded.parameters == cat.parameters and loaded.d_head == cat.d_head
    assert loaded.hf_id == FAMILY[name][2] and loaded.name == FAMILY[name][2].split("/")[1].lower()


def test_models_import_writes_a_catalog_yaml_with_its_sources(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(hf_config("qwen2.5-7b")))
    out = tmp_path / "qwen.yaml"
    assert main(["models", "import", str(config), "-o", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert data["name"] == "qwen2.5-7b" and data["hf_id"] == "Qwen/Qwen2.5-7B" and data["qkv_bias"] is True
    assert "https://huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json" in data["sources"]["config"]
    assert "perfmodel models import" in data["sources"]["imported"]
    assert "rope_theta" not in data
    assert load_model(out).parameters == load_model("qwen2.5-7b").parameters
    assert capsys.readouterr().err.count("perfmodel: note:") == 1
    assert main(["models", "import", str(config)]) == 0  # without -o: printed
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "qwen2.5-7b"


def test_a_config_missing_fields_names_each_of_them(tmp_path, capsys):
    data = hf_config("llama-3.1-8b")
    del data["hidden_size"], data["vocab_size"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert main(["predict", "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "'hidden_size'" in err and "'vocab_size'" in err and "Traceback" not in err


def test_a_config_that_is_not_json_is_one_message(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    assert main(["predict", "--model", str(path)]) == 2
    assert "valid JSON" in capsys.readouterr().err


def test_name_from_the_folder_without_name_or_path(tmp_path):
    data = hf_config("llama-3.1-8b")
    del data["_name_or_path"]
    path = tmp_path / "My-Model" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    model = load_model(str(path))
    assert model.name == "my-model" and model.hf_id == ""


def test_mistral_and_families_without_model_type():
    from perfmodel.specs.hf_config import convert, family

    mistral = {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 4096,
               "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
               "intermediate_size": 14336, "vocab_size": 32768, "sliding_window": None, "torch_dtype": "bfloat16"}
    data, ignored = convert(mistral, "config.json")
    assert data["attention_mask"] == "causal" and not data["qkv_bias"] and not data["qk_norm"]
    assert data["head_dim"] == 128 and ignored == ["sliding_window"]
    assert family({"architectures": ["Qwen3ForCausalLM"]}) == "qwen3"
    assert family({"architectures": ["LLaDAModelLM"]}) == "llada"
