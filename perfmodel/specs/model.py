"""Model specs: the architecture fields of a Hugging Face config that decide cost.

A model spec is a decoder-only transformer written as its config file: layers, widths, heads and vocabulary.
Everything derived from them (parameter count, bytes of KV cache per token) is computed here, never typed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator

from perfmodel.shapes import heads_problem
from perfmodel.specs.base import Spec, catalog_names, load_spec

BYTES_PER_ELEMENT: dict[str, float] = {
    "fp64": 8, "fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5, "fp4": 0.5,
}


def bytes_per_element(dtype: str) -> float:
    try:
        return BYTES_PER_ELEMENT[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: expected one of {', '.join(BYTES_PER_ELEMENT)}") from None


class Model(Spec):
    """A decoder-only transformer architecture (the root of a model YAML file)."""

    name: str = Field(description="catalog name, e.g. llama-3.1-8b")
    hf_id: str = Field("", description="Hugging Face repository the config comes from")
    description: str = Field("", description="one line shown in listings")
    sources: dict[str, str] = Field(default_factory=dict, description="where the fields were read")
    hidden_size: PositiveInt = Field(description="model width (d_model)")
    num_hidden_layers: PositiveInt = Field(description="number of transformer blocks")
    num_attention_heads: PositiveInt = Field(description="query heads")
    num_key_value_heads: PositiveInt = Field(description="key/value heads (equal to query heads for MHA; fewer for GQA)")
    head_dim: PositiveInt | None = Field(None, description="width of one head (default hidden_size / num_attention_heads)")
    intermediate_size: PositiveInt = Field(description="MLP inner width")
    vocab_size: PositiveInt = Field(description="vocabulary size (embedding rows, LM-head columns)")
    gated_mlp: bool = Field(True, description="SwiGLU-style MLP with gate and up projections (3 matrices), else 2")
    tie_word_embeddings: bool = Field(False, description="LM head shares the embedding matrix")
    attention_mask: Literal["causal", "bidirectional"] = Field(
        "causal", description="causal for autoregressive models, bidirectional for diffusion LMs")
    qkv_bias: bool = Field(False, description="Q, K and V projections have biases (Qwen2)")
    qk_norm: bool = Field(False, description="RMSNorm on queries and keys per head (Qwen3)")
    max_position_embeddings: PositiveInt | None = Field(None, description="longest context the model supports")
    dtype: Literal["bf16", "fp16", "fp32", "fp8"] = Field("bf16", description="dtype the published weights are stored in")
    published_parameters: float | None = Field(None, gt=0, description="parameter count the publisher states (for checking)")

    @field_validator("num_attention_heads")
    @classmethod
    def _heads_divide_hidden(cls, heads: int, info: ValidationInfo) -> int:
        hidden = info.data.get("hidden_size")
        if hidden and hidden % heads:
            raise ValueError(f"a divisor of hidden_size ({hidden})")
        return heads

    @field_validator("num_key_value_heads")
    @classmethod
    def _kv_heads_divide_heads(cls, kv_heads: int, info: ValidationInfo) -> int:
        heads = info.data.get("num_attention_heads")
        if heads and heads_problem(heads, kv_heads):
            raise ValueError(f"a divisor of num_attention_heads ({heads})")
        return kv_heads

    # -- derived quantities -------------------------------------------------------------------------------
    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.d_head

    @property
    def kv_dim(self) -> int:
        """Width of K (and of V) per token: kv_heads · head_dim."""
        return self.num_key_value_heads * self.d_head

    @property
    def gqa_ratio(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.gated_mlp else 2

    @property
    def layer_parameters(self) -> int:
        """Parameters of one block: Q,K,V,O projections (+biases), MLP, two RMSNorms (+QK-norm weights)."""
        h = self.hidden_size
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        if self.qkv_bias:
            attn += self.q_dim + 2 * self.kv_dim
        if self.qk_norm:
            attn += 2 * self.d_head
        mlp = self.mlp_matrices * h * self.intermediate_size
        return attn + mlp + 2 * h

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_parameters(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def parameters(self) -> int:
        """Total parameters: embedding + blocks + final norm + LM head (if untied)."""
        return (self.embedding_parameters + self.num_hidden_layers * self.layer_parameters
                + self.hidden_size + self.lm_head_parameters)

    def kv_bytes_per_token(self, dtype: str = "bf16") -> float:
        """KV-cache bytes per token: 2 (K and V) · layers · kv_heads · head_dim · bytes per element."""
        return 2 * self.num_hidden_layers * self.kv_dim * bytes_per_element(dtype)

    def weight_bytes(self, dtype: str | None = None) -> float:
        return self.parameters * bytes_per_element(dtype or self.dtype)

    def derived(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "head_dim": self.d_head,
            "gqa_ratio": self.gqa_ratio,
            "kv_bytes_per_token_bf16": self.kv_bytes_per_token("bf16"),
            "weight_bytes_bf16": self.weight_bytes("bf16"),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameters": self.parameters,
            "num_hidden_layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "attention_mask": self.attention_mask,
            "kv_bytes_per_token": self.kv_bytes_per_token("bf16"),
        }


def load_model(name_or_path: str | Path | Model, overrides: dict[str, Any] | None = None) -> Model:
    """Load a model spec from a catalog name (``llama-3.1-8b``), a YAML path or a Hugging Face ``config.json``
    as published (perfmodel/specs/hf_config.py), with dotted-path overrides."""
    from perfmodel.specs.base import apply_overrides, validate

    if isinstance(name_or_path, Model):
        if not overrides:
            return name_or_path
        src = f"model {name_or_path.name} with overrides"
        return validate(Model, apply_overrides(name_or_path.to_dict(), overrides, src), src)
    from perfmodel.specs import hf_config

    if hf_config.is_config(name_or_path):
        data = hf_config.load_config(name_or_path)
        src = str(name_or_path) + (" with overrides" if overrides else "")
        return validate(Model, apply_overrides(data, overrides, src) if overrides else data, src)
    return load_spec(Model, "models", name_or_path, overrides)


def model_names() -> list[str]:
    return catalog_names("models")
