"""Group-wise asymmetric integer quantisation and bit packing, shared by the KV-cache and X-cache quantisers.

Picture a ruler made for each group of numbers: its zero mark at the group's minimum and its ticks spaced so that
2^bits − 1 ticks reach the maximum. Each number is stored as the index of its nearest tick (a code); reading it
back is code · step + zero, at most half a step from the original.

- Groups are ``group_size`` consecutive elements of the last dimension (callers transpose to group elsewhere).
- ``zero`` and ``scale`` (the step) are stored in fp16, 4 bytes per group together. They are rounded to fp16
  *before* the codes are computed, zero downwards and the step upwards, so that every element of the group
  still lies within [zero, zero + (2^bits − 1)·step]: the round trip error is at most step/2 for every element
  (plus fp32 rounding), with no clipping.
- Codes of ``bits`` bits (1–8) are packed little-endian into a byte stream per row: element c occupies bits
  [c·bits, (c+1)·bits) of its row, so 4-bit codes are two per byte (even element in the low nibble) and 3-bit
  codes straddle bytes. A row of n codes takes ceil(n·bits/8) bytes.

The Triton decoders unpack with the same rule (:func:`load_code_tile`): 8-, 4- and 2-bit codes by splitting
whole bytes, other widths by reading byte (c·bits) >> 3 at shift (c·bits) & 7, and the next byte when the
code straddles two.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from perfmodel.kernels._common import FLOAT_DTYPES, check_tensor, jit, tl

FP16_MAX = 65504.0


# ---------------------------------------------------------------------------------------------------------------
# Triton: unpacking codes inside a kernel
@jit
def unpack_code(row_ptrs, col, row_bytes, mask, BITS: tl.constexpr):
    """The ``BITS``-bit code at column ``col`` of packed rows starting at ``row_ptrs`` (int32), one load per code.

    The code's first bit is bit (col·BITS) & 7 of byte (col·BITS) >> 3; when BITS does not divide 8 a code can
    straddle two bytes, so the next byte (if the row has one) supplies its high bits.
    """
    bit = col * BITS
    byte = bit >> 3
    word = tl.load(row_ptrs + byte, mask=mask & (byte < row_bytes), other=0).to(tl.int32)
    if 8 % BITS != 0:
        nxt = tl.load(row_ptrs + byte + 1, mask=mask & (byte + 1 < row_bytes), other=0).to(tl.int32)
        word = word | (nxt << 8)
    return (word >> (bit & 7)) & ((1 << BITS) - 1)


@jit
def load_code_tile(row_ptrs, row_mask, col0, row_bytes, COLS: tl.constexpr, BITS: tl.constexpr):
    """Codes [rows, COLS] of columns col0 .. col0 + COLS − 1 of packed rows (``row_ptrs`` [rows, 1]).

    8, 4 and 2 bits (col0·BITS a multiple of 8) load whole bytes, COLS·BITS/8 per row, contiguous along the
    row, and split each byte into its 8/BITS codes in registers; ``tl.join`` + ``tl.reshape`` put the pieces
    back in column order (code 2j is byte j's low nibble, 2j + 1 its high one). Other widths, whose codes
    straddle bytes, fall back to one load per code. Bytes past ``row_bytes`` read as code 0.
    """
    if BITS == 8:
        cols = col0 + tl.arange(0, COLS)
        return tl.load(row_ptrs + cols[None, :], mask=row_mask & (cols[None, :] < row_bytes), other=0).to(tl.int32)
    elif BITS == 4:
        b = col0 // 2 + tl.arange(0, COLS // 2)
        byte = tl.load(row_ptrs + b[None, :], mask=row_mask & (b[None, :] < row_bytes), other=0).to(tl.int32)
        return tl.reshape(tl.join(byte & 15, byte >> 4), (byte.shape[0], COLS))
    elif BITS == 2:
        b = col0 // 4 + tl.arange(0, COLS // 4)
        byte = tl.load(row_ptrs + b[None, :], mask=row_mask & (b[None, :] < row_bytes), other=0).to(tl.int32)
        # join(join(c0, c2), join(c1, c3))[j, t, s] = c_(2t+s): column 4j + 2t + s, as packed.
        pairs = tl.join(tl.join(byte & 3, (byte >> 4) & 3), tl.join((byte >> 2) & 3, byte >> 6))
        return tl.reshape(pairs, (byte.shape[0], COLS))
    else:
        cols = col0 + tl.arange(0, COLS)
        return unpack_code(row_ptrs, cols[None, :], row_bytes, row_mask, BITS)


# ---------------------------------------------------------------------------------------------------------------
# Packing and quantisation in torch
def packed_width(n: int, bits: int) -> int:
    """Bytes per packed row of ``n`` codes."""
    return -(-n * bits // 8)


def check_bits(bits: int, allowed: tuple[int, ...] = tuple(range(1, 9))) -> int:
    if not isinstance(bits, int) or bits not in allowed:
        raise ValueError(f"bits={bits!r}: expected one of {', '.join(map(str, allowed))}")
    return bits


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes [..., n] (each < 2^bits) into uint8 [..., ceil(n·bits/8)], little-endian bit stream.

    Eight codes of b bits fill exactly b bytes: they are summed into one 64-bit word (code i shifted by i·b)
    whose b low bytes are the packed bytes.
    """
    check_bits(bits)
    if bits == 8:
        return codes.to(torch.uint8).contiguous()
    *lead, n = codes.shape
    n8 = -(-n // 8) * 8
    c = F.pad(codes.to(torch.int64), (0, n8 - n)).reshape(*lead, n8 // 8, 8)
    word = (c << (bits * torch.arange(8, device=codes.device))).sum(-1)
    packed = (word[..., None] >> (8 * torch.arange(bits, device=codes.device))) & 255
    return packed.reshape(*lead, n8 // 8 * bits)[..., : packed_width(n, bits)].to(torch.uint8).contiguous()


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The inverse of :func:`pack_codes`: uint8 [..., bytes] → int32 codes [..., n]."""
    check_bits(bits)
    if bits == 8:
        return packed[..., :n].to(torch.int32)
    if bits in (4, 2, 1):
        # Whole bytes hold 8/bits codes: shift each byte by 0, bits, 2·bits, ... (code i of byte j is element
        # j·8/bits + i), no widening to 64-bit words.
        shifts = torch.arange(0, 8, bits, device=packed.device, dtype=torch.uint8)
        codes = (packed[..., None] >> shifts) & ((1 << bits) - 1)
        return codes.reshape(*packed.shape[:-1], packed.shape[-1] * (8 // bits))[..., :n].to(torch.int32)
    *lead, width = packed.shape
    n8 = -(-n // 8) * 8
    p = F.pad(packed.to(torch.int64), (0, n8 // 8 * bits - width)).reshape(*lead, n8 // 8, bits)
    word = (p << (8 * torch.arange(bits, device=packed.device))).sum(-1)
    codes = (word[..., None] >> (bits * torch.arange(8, device=packed.device))) & ((1 << bits) - 1)
    return codes.reshape(*lead, n8)[..., :n].to(torch.int32)


def _fp16_round(x: torch.Tensor, direction: float) -> torch.Tensor:
    """Round fp32 ``x`` to an fp16 value on the side of ``direction`` (−inf: ≤ x; +inf: ≥ x)."""
    h = x.clamp(-FP16_MAX, FP16_MAX).to(torch.float16)
    wrong = h.float() > x if direction < 0 else h.float() < x
    return torch.where(wrong, torch.nextafter(h, torch.full_like(h, direction)), h)


@dataclass(frozen=True)
class GroupQuant:
    """Packed codes [..., ceil(n·bits/8)] uint8 and per-group ``scale``/``zero`` [..., n / group_size] fp16."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group_size: int
    n: int

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.codes, self.scale, self.zero


def quantize_groups(x: torch.Tensor, bits: int, group_size: int) -> GroupQuant:
    """Asymmetric quantisation of ``x`` [..., n] in groups of ``group_size`` along the last dimension."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    check_bits(bits)
    n = x.shape[-1]
    if not isinstance(group_size, int) or group_size < 1 or n % group_size:
        raise ValueError(f"group_size={group_size!r}: expected a positive int dividing the quantised "
                         f"dimension {n}")
    qmax = (1 << bits) - 1
    g = x.float().reshape(*x.shape[:-1], n // group_size, group_size)
    lo, hi = torch.aminmax(g, dim=-1)
    zero = _fp16_round(lo, float("-inf"))
    # Smallest normal fp16 step keeps the division finite for a constant group (its codes are then all 0).
    step = ((hi - zero.float()) / qmax).clamp_min(2.0 ** -14)
    scale = _fp16_round(step, float("inf"))
    codes = torch.round((g - zero.float()[..., None]) / scale.float()[..., None]).clamp_(0, qmax)
    codes = codes.reshape(*x.shape[:-1], n).to(torch.uint8)
    return GroupQuant(pack_codes(codes, bits), scale, zero, bits, group_size, n)


def dequantize_groups(q: GroupQuant, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x̂ = code·scale + zero, computed in fp32 (fp64 when ``dtype`` is fp64), returned in ``dtype``."""
    cd = torch.float64 if dtype == torch.float64 else torch.float32
    codes = unpack_codes(q.codes, q.bits, q.n).to(cd)
    *lead, n = codes.shape
    g = codes.reshape(*lead, n // q.group_size, q.group_size)
    x = g * q.scale.to(cd)[..., None] + q.zero.to(cd)[..., None]
    return x.reshape(*lead, n).to(dtype)

