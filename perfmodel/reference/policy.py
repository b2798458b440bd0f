"""The decoding policy: what a method does with the logits of a pass.

A referee who, after each round, decides which answers become final. Autoregressive decoding keeps the most
likely next token (greedy) and feeds it to the next pass. Diffusion decoding starts from an answer of mask
tokens and, after each pass, unmasks the most confident positions of the current block (LLaDA's
low-confidence remasking, Nie et al., arXiv:2502.09992; the first block that still holds a mask), a fixed
number per step. Which passes run is the workload builder's business (:mod:`perfmodel.workload.passes`); the
policy only chooses token values, so it changes no cost. It is host-side bookkeeping on [batch, positions]
tensors, outside the op list (the recorder lists it apart).
"""
from __future__ import annotations

import math

import torch

from perfmodel.reference.step import Step
from perfmodel.workload.params import Params, Structure


class Policy:
    """Token ids [batch, capacity] of the run and the rule that fills them."""

    def __init__(self, s: Structure, p: Params, capacity: int, vocab: int, batch: int, device, seed: int = 0):
        self.method = s.method
        self.prompt = int(p.prompt_len)
        self.mask_id = vocab - 1
        gen = torch.Generator().manual_seed(seed)
        ids = torch.full((batch, capacity), self.mask_id, dtype=torch.int64)
        ids[:, :self.prompt] = torch.randint(0, vocab - 1, (batch, self.prompt), generator=gen)
        self.ids = ids.to(device)
        gen_len, block = int(p.gen_len), int(p.block_size)
        if s.method == "dlm":
            self.block = block if s.semi_autoregressive else gen_len
            steps_per_block = float(p.steps) / math.ceil(gen_len / self.block)
        else:
            self.block = block
            steps_per_block = float(p.block_steps)
        self.per_step = max(1, math.ceil(self.block / max(steps_per_block, 1.0)))
        self.end = self.prompt + gen_len

    def inputs(self, step: Step) -> torch.Tensor:
        """Token ids of the pass's computed positions, [batch, tokens] (a view)."""
        return self.ids[:, step.start:step.end]

    def update(self, step: Step, token: torch.Tensor, confidence: torch.Tensor) -> None:
        """Apply the logits of the pass's last ``step.logits`` positions (token and confidence [batch, logits])."""
        if self.method == "arm":
            # The last position's prediction is the next token.
            if step.end < self.ids.shape[1]:
                self.ids[:, step.end] = token[:, -1]
            return
        first = step.end - step.logits
        ids = self.ids[:, first:step.end]
        masked = ids == self.mask_id
        remaining = (self.ids[:, self.prompt:self.end] == self.mask_id).nonzero()
        if remaining.numel() == 0:
            return
        block_start = self.prompt + int(remaining[:, 1].min()) // self.block * self.block
        pos = torch.arange(first, step.end, device=ids.device)
        eligible = masked & (pos >= block_start) & (pos < min(block_start + self.block, self.end))
        score = torch.where(eligible, confidence, torch.full_like(confidence, -1.0))
        k = min(self.per_step, score.shape[1])
        top = torch.topk(score, k, dim=-1).indices
        take = eligible.gather(-1, top)
        rows = ids.gather(-1, top)
        ids.scatter_(-1, top, torch.where(take, token.gather(-1, top), rows))
