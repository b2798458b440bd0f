"""Random weights of a Llama-style (or LLaDA-style) transformer in the layouts the kernels read.

A stage set built to the exact measurements of the real one, with painted backdrops: every matrix has the shape
and dtype of the model config (so every kernel moves the real bytes and does the real FLOPs), filled with
seeded normal values scaled by 1/√fan_in so activations stay of order one through the layers. Layouts:
``torch.nn.Linear`` ([out_features, in_features]); Q, K and V fused into one [q_dim + 2·kv_dim, hidden]
matrix (rows: Q, then K, then V), gate and up into one [2·intermediate, hidden] (gate rows first). The rotary
tables hold cos and sin of every position up to the longest sequence, [positions, head_dim / 2].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from perfmodel.specs.model import Model

ROPE_THETA = 10000.0


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    q_norm: torch.Tensor | None
    o: torch.Tensor
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


@dataclass(frozen=True)
class Weights:
    embed: torch.Tensor
    layers: tuple[LayerWeights, ...]
    final_norm: torch.Tensor
    lm_head: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.device


def _normal(gen: torch.Generator, shape: tuple[int, ...], scale: float, dtype, device) -> torch.Tensor:
    # Drawn on the device itself, in its dtype, from a seeded generator of that device (an 8B model's weights
    # made on a host CPU in fp32 would take minutes and twice the memory).
    return torch.randn(*shape, generator=gen, device=device, dtype=dtype).mul_(scale)


def rope_tables(positions: int, head_dim: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [positions, head_dim / 2] of angle p·θ^(−2i/d) (Su et al., RoFormer; rotate-half layout)."""
    inv_freq = ROPE_THETA ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype)


def random_weights(model: Model, *, positions: int, dtype: torch.dtype = torch.bfloat16,
                   device: str | torch.device = "cpu", seed: int = 0) -> Weights:
    """Weights of ``model`` (all its ``num_hidden_layers``) with rotary tables for ``positions`` positions."""
    if not model.gated_mlp:
        raise ValueError(f"model {model.name}: gated_mlp false; expected a gated (SwiGLU) MLP, the only one the "
                         "reference implements")
    gen = torch.Generator(device=device).manual_seed(seed)
    h, q_dim, kv_dim, inter = model.hidden_size, model.q_dim, model.kv_dim, model.intermediate_size

    def mat(rows: int, cols: int) -> torch.Tensor:
        return _normal(gen, (rows, cols), cols ** -0.5, dtype, device)

    def norm(width: int) -> torch.Tensor:
        return _normal(gen, (width,), 0.1, dtype, device).add_(1.0)

    layers = []
    for _ in range(model.num_hidden_layers):
        layers.append(LayerWeights(
            attn_norm=norm(h), qkv=mat(q_dim + 2 * kv_dim, h),
            qkv_bias=_normal(gen, (q_dim + 2 * kv_dim,), 0.02, dtype, device) if model.qkv_bias else None,
            q_norm=norm(model.d_head) if model.qk_norm else None,
            o=mat(h, q_dim), mlp_norm=norm(h), gate_up=mat(2 * inter, h), down=mat(h, inter)))
    embed = _normal(gen, (model.vocab_size, h), 1.0, dtype, device)
    lm_head = embed if model.tie_word_embeddings else mat(model.vocab_size, h)
    cos, sin = rope_tables(positions, model.d_head, dtype, device)
    return Weights(embed, tuple(layers), norm(h), lm_head, cos, sin)
