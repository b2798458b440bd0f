"""Hugging Face ``config.json`` files read as model specs, as they are published.

A published config is a form filled in by another office: the boxes perfmodel needs are there under their own
names (``hidden_size`` or, in OLMo-style LLaDA configs, ``d_model``), some facts are implied by the architecture
rather than written (Qwen2 projects Q, K and V with biases; Qwen3 normalises queries and keys; LLaDA and Dream
attend bidirectionally), and many boxes do not matter for cost (token ids, RoPE settings, initialisation). This
module copies the boxes that matter into a :class:`~perfmodel.specs.model.Model`, fills the implied ones from the
``model_type`` (or ``architectures``), and names everything it ignored in one note.

Families: ``llama``, ``mistral``, ``qwen2``, ``qwen3``, ``llada`` (GSAI-ML LLaDA, OLMo field names) and ``dream``
(Dream-org, Qwen2 field names). A config of another ``model_type`` is read with the Llama field names, and is
refused with every missing field named when they are not there.

The name comes from the file's ``name`` or ``_name_or_path`` (its last path part, lower-cased), else from the
folder the file is in; ``hf_id`` is ``_name_or_path`` when it has the ``owner/name`` form.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from perfmodel.errors import MISSING, Problem, SpecError, Summary
from perfmodel.specs.yamlio import MAX_FILE_BYTES

#: field names of the two layouts: perfmodel field -> config key
LLAMA_KEYS = {"hidden_size": "hidden_size", "num_hidden_layers": "num_hidden_layers",
              "num_attention_heads": "num_attention_heads", "num_key_value_heads": "num_key_value_heads",
              "head_dim": "head_dim", "intermediate_size": "intermediate_size", "vocab_size": "vocab_size",
              "tie_word_embeddings": "tie_word_embeddings", "max_position_embeddings": "max_position_embeddings"}
OLMO_KEYS = {"hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
             "num_key_value_heads": "n_kv_heads", "intermediate_size": "mlp_hidden_size",
             "vocab_size": "embedding_size", "tie_word_embeddings": "weight_tying",
             "max_position_embeddings": "max_sequence_length"}
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
          "float8_e4m3fn": "fp8"}
FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "llada", "dream")
#: config keys read besides the layout's own
READ = {"_name_or_path", "name", "model_type", "architectures", "torch_dtype", "dtype", "attention_bias",
        "hidden_act", "activation_type", "include_bias", "include_qkv_bias", "vocab_size"}


class ConfigNote(UserWarning):
    """A note on a converted config: the fields it ignored (shown once by the CLI)."""


def is_config(name_or_path: Any) -> bool:
    """Whether a ``--model`` value names a Hugging Face config (a .json file) rather than a catalog entry or YAML."""
    return str(name_or_path).lower().endswith(".json")


def family(data: dict[str, Any]) -> str:
    """The family of a config from ``model_type``, else ``architectures`` ("llama" when neither says)."""
    kind = str(data.get("model_type") or "").lower()
    archs = " ".join(str(a) for a in data.get("architectures") or []).lower()
    for name in FAMILIES:
        if kind == name or kind.startswith(name) or name in archs:
            return name
    return "llama"


def _name(data: dict[str, Any], path: Path) -> tuple[str, str]:
    """(name, hf_id) of the model a config describes."""
    given = data.get("name") or data.get("_name_or_path")
    hf_id = ""
    if isinstance(given, str) and given.strip():
        given = given.strip().rstrip("/")
        if re.fullmatch(r"[\w.-]+/[\w.-]+", given):
            hf_id = given
        stem = given.split("/")[-1]
    else:
        stem = path.parent.name if path.stem == "config" and path.parent.name else path.stem
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-") or "model", hf_id


def convert(data: Any, source: str, path: Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """A config's data as model-spec data, and the config keys ignored. Missing required fields are one
    SpecError naming each (under the config's own key)."""
    if not isinstance(data, dict):
        raise SpecError(source, "<root>", data, "a JSON object of config fields (a Hugging Face config.json)")
    fam = family(data)
    keys = OLMO_KEYS if fam == "llada" else LLAMA_KEYS
    out: dict[str, Any] = {}
    missing = []
    for field, key in keys.items():
        value = data.get(key)
        if fam == "llada" and field == "vocab_size" and value is None:
            value = data.get("vocab_size")
        if value is None:
            if field in REQUIRED:
                missing.append(Problem(key, MISSING, f"a value (the {fam} config field for {field})"))
            continue
        out[field] = value
    if missing:
        raise SpecError.from_problems(source, missing)
    out.setdefault("num_key_value_heads", out["num_attention_heads"])
    name, hf_id = _name(data, path or Path(source))
    out = {"name": name, **({"hf_id": hf_id} if hf_id else {}), **out}
    dtype = data.get("torch_dtype") or data.get("dtype")
    if isinstance(dtype, str) and dtype in DTYPES:
        out["dtype"] = DTYPES[dtype]
    act = str(data.get("hidden_act") or data.get("activation_type") or "silu").lower()
    out["gated_mlp"] = act in ("silu", "swiglu", "swish")
    if fam in ("qwen2", "dream"):
        out["qkv_bias"] = True  # Qwen2 projects Q, K and V with biases (not a config field)
    elif fam == "llada":
        out["qkv_bias"] = bool(data.get("include_qkv_bias") or data.get("include_bias"))
    else:
        out["qkv_bias"] = bool(data.get("attention_bias", False))
    out["qk_norm"] = fam == "qwen3"  # Qwen3 RMS-normalises queries and keys per head
    out["attention_mask"] = "bidirectional" if fam in ("llada", "dream") else "causal"
    out.setdefault("tie_word_embeddings", False)
    used = set(keys.values()) | READ
    ignored = [k for k in data if k not in used]
    return out, ignored


def read_config(path: str | Path) -> Any:
    """The JSON data of a config file, within the spec reader's size limit; a SpecError names what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes() if path.stat().st_size <= MAX_FILE_BYTES else None
    except OSError as exc:
        raise SpecError(str(path), "<file>", str(path), f"a readable config.json ({exc.strerror or exc})") from None
    if raw is None:
        raise SpecError(str(path), "<file>", Summary("a file over the size limit"),
                        f"a config.json of at most {MAX_FILE_BYTES:,} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SpecError(str(path), "<json>", Summary("text that does not parse"),
                        f"valid JSON ({' '.join(str(exc).split())[:200]})") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """Model-spec data from a config.json, with a :class:`ConfigNote` naming the ignored fields; the spec's
    ``sources`` cite the file."""
    path = Path(path)
    raw = read_config(path)
    data, ignored = convert(raw, str(path), path)
    url = (f"https://huggingface.co/{data['hf_id']}/blob/main/config.json, read from {path}" if data.get("hf_id")
           else str(path))
    data["sources"] = {"config": url}
    data.setdefault("description", f"{data['name']} (from a Hugging Face config.json, {family(raw)} layout)")
    if ignored:
        shown = ", ".join(ignored[:12]) + (f" and {len(ignored) - 12} more" if len(ignored) > 12 else "")
        warnings.warn(f"{path}: {len(ignored)} config field(s) do not change the cost model and were ignored: {shown}",
                      ConfigNote, stacklevel=2)
    return data
