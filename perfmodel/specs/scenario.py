"""Scenario specs: a decoding method and its parameters.

A scenario is the recipe a serving system follows: how many sequences at once, how long the prompt and the
answer are, which decoding method produces the answer (autoregressive, vanilla diffusion, block-wise diffusion
with a cache, Fast-dLLM caches), how the cache is stored and which attention variant reads it. Every field has a
default and a one-line description; the CLI help is built from these descriptions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, model_validator

from perfmodel.specs.base import Spec, catalog_names, load_spec

Method = Literal["arm", "dlm", "block-dlm", "fast-dllm-prefix", "fast-dllm-dual"]
METHODS: tuple[str, ...] = ("arm", "dlm", "block-dlm", "fast-dllm-prefix", "fast-dllm-dual")
CacheFormat = Literal["fp16", "bf16", "fp8", "int8", "int4", "xquant", "xquant-cl"]

# Bits per cached element when `kv_cache.bits` is left empty.
DEFAULT_BITS = {"fp16": 16, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4, "xquant": 4, "xquant-cl": 3}


class KVCache(Spec):
    """How the attention cache is stored."""

    format: CacheFormat = Field(
        "fp16", description="fp16/bf16/fp8 KV; int8/int4 group-quantised KV; xquant caches the quantised layer "
                            "input X and rematerialises K,V; xquant-cl stores quantised deltas of X between layers")
    bits: PositiveInt | None = Field(None, le=16, description="bits per cached element (default: 16, 8, 4, 4 xquant, 3 xquant-cl)")
    group_size: PositiveInt = Field(128, description="elements sharing one scale and zero point (quantised formats)")
    scale_bytes: float = Field(4.0, ge=0, description="bytes of scale + zero point per group (fp16 each)")
    residual_window: int = Field(128, ge=0, description="most recent tokens kept in full precision (quantised formats)")
    latent: Literal["auto", "x", "svd"] = Field(
        "auto", description="xquant: cache X (MHA) or its projection on the SVD bases of Wk and Wv (GQA); auto picks by model")
    remat: Literal["fused", "unfused"] = Field(
        "fused", description="xquant: fused (K and V rematerialised inside the attention kernel, never written) or "
                             "unfused (a GEMM writes K and V, then dense attention reads them)")

    @property
    def effective_bits(self) -> int:
        return self.bits if self.bits is not None else DEFAULT_BITS[self.format]

    @property
    def quantised(self) -> bool:
        return self.format not in ("fp16", "bf16", "fp8")


class Attention(Spec):
    """Which attention variant reads the cache."""

    kind: Literal["dense", "squeezed", "multipole"] = Field(
        "dense", description="dense attention; squeezed (centroid lookup + top-k clusters); multipole (plus centroid approximation of the rest)")
    token_budget: float = Field(0.1, gt=0, le=1, description="fraction of the context whose keys are attended exactly")
    centroid_ratio: float = Field(0.05, gt=0, le=1, description="k-means centroids per cached key (clusters / tokens)")
    hierarchical: bool = Field(False, description="two-level centroids: coarse lookup first, making the lookup ~sqrt(clusters)")
    update_clusters: bool = Field(True, description="assign each new token to its nearest centroid every decode step")


class Scenario(Spec):
    """A decoding method with its parameters (the root of a scenario YAML file)."""

    name: str = Field("custom", description="catalog name")
    description: str = Field("", description="one line shown in listings")
    method: Method = Field("arm", description="arm | dlm | block-dlm | fast-dllm-prefix | fast-dllm-dual")
    batch: PositiveInt = Field(1, description="sequences decoded together")
    prompt_len: PositiveInt = Field(512, description="prompt tokens per sequence")
    gen_len: PositiveInt = Field(256, description="generated tokens per sequence")
    steps: PositiveInt | None = Field(None, description="dlm: denoising steps over the whole answer (default gen_len)")
    semi_autoregressive: bool = Field(
        False, description="dlm: unmask block by block without a cache (LLaDA's generate.py: every step still runs "
                           "the whole prompt + answer)")
    truncate_suffix: bool = Field(
        False, description="dlm semi-autoregressive: each step runs only prompt + finished blocks + current block "
                           "(drops the masked suffix; cheaper than LLaDA's reference)")
    block_size: PositiveInt = Field(32, description="block-wise methods: tokens per block")
    steps_per_block: PositiveInt | None = Field(
        None, description="block-wise methods: denoising steps per block (default block_size / tokens_per_step)")
    tokens_per_step: PositiveInt = Field(1, description="block-wise methods: tokens finalised per step on average (parallel decoding)")
    commit_pass: bool = Field(
        True, description="block-dlm: one extra pass over each finished block to write its keys and values to the cache")
    weight_dtype: Literal["bf16", "fp16", "fp8", "int8", "int4"] = Field("bf16", description="dtype weights are stored in")
    compute_dtype: Literal["bf16", "fp16", "fp8", "fp32"] = Field("bf16", description="dtype of matmuls and activations")
    kv_cache: KVCache = Field(default_factory=KVCache, description="cache storage")
    attention: Attention = Field(default_factory=Attention, description="attention variant")
    tensor_parallel: PositiveInt = Field(1, description="GPUs the model is split across (tensor parallelism)")
    prefill_chunk: PositiveInt = Field(
        8192, description="prefill runs in chunks of this many tokens (whole batch): bounds its activations, not its time")

    @model_validator(mode="after")
    def _check(self) -> "Scenario":
        if self.kv_cache.format in ("xquant", "xquant-cl") and self.method != "arm":
            raise ValueError(f"kv_cache.format {self.kv_cache.format!r} with method 'arm' (XQuant is defined for "
                             f"autoregressive decoding), not {self.method!r}")
        # Sparse attention is modelled for autoregressive decode steps (one query against a clustered cache).
        if self.attention.kind != "dense":
            if self.method != "arm":
                raise ValueError(f"attention.kind {self.attention.kind!r} with method 'arm' (sparse attention is "
                                 f"modelled for autoregressive decode steps only), not {self.method!r}; use "
                                 "attention.kind 'dense' for diffusion methods")
            if self.kv_cache.format in ("xquant", "xquant-cl"):
                raise ValueError(f"attention.kind {self.attention.kind!r} with kv_cache.format "
                                 f"{self.kv_cache.format!r}: expected a K/V cache format (fp16, bf16, fp8, int8, "
                                 "int4); an XQuant cache holds no keys to select from")
        if self.truncate_suffix and not (self.method == "dlm" and self.semi_autoregressive):
            raise ValueError(f"truncate_suffix true with method {self.method!r} and semi_autoregressive "
                             f"{self.semi_autoregressive}: expected method 'dlm' with semi_autoregressive true")
        return self

    # -- derived ------------------------------------------------------------------------------------------
    @property
    def denoise_steps(self) -> int:
        return self.steps if self.steps is not None else self.gen_len

    @property
    def block_steps(self) -> int:
        if self.steps_per_block is not None:
            return self.steps_per_block
        return -(-self.block_size // self.tokens_per_step)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "method": self.method, "batch": self.batch, "prompt_len": self.prompt_len,
            "gen_len": self.gen_len, "kv_cache.format": self.kv_cache.format, "attention.kind": self.attention.kind,
            "description": self.description,
        }


def load_scenario(name_or_path: str | Path | Scenario, overrides: dict[str, Any] | None = None) -> Scenario:
    """Load a scenario from a catalog name (``arm``) or a YAML path, with dotted-path overrides (``kv_cache.bits``)."""
    if isinstance(name_or_path, Scenario):
        if not overrides:
            return name_or_path
        from perfmodel.specs.base import apply_overrides, validate

        src = f"scenario {name_or_path.name} with overrides"
        return validate(Scenario, apply_overrides(name_or_path.model_dump(mode="json"), overrides, src), src)
    return load_spec(Scenario, "scenarios", name_or_path, overrides)


def scenario_names() -> list[str]:
    return catalog_names("scenarios")


def field_help(model: type[Spec] = Scenario, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every field, nested groups flattened: the CLI's help text."""
    rows = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, Spec):
            rows += field_help(ann, f"{prefix}{name}.")
            continue
        default = info.get_default(call_default_factory=True)
        rows.append((f"{prefix}{name}", repr(default), info.description or ""))
    return rows
