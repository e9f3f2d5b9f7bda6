"""Attention dropout shared by every backend: counter-based random bits, never materialised by the kernels.

Dropout acts on the attention weights after entmax: each weight p_ij is kept with probability 1 - dropout_p and
scaled by 1 / (1 - dropout_p), or set to 0. Whether (b, h, i, j) is kept is a pure function of a 64-bit seed
and the score's coordinate

    offset = ((b · H + h) · NQ + i) · NK + j

(h: the query head; i, j: the query and key index within their sequence; NQ, NK: Nq and Nk, or max_seqlen_q /
max_seqlen_k for packed batches): the Philox-4x32 generator with 10 rounds, counter (offset mod 2^32,
offset div 2^32, 0, 0) and key (seed mod 2^32, seed div 2^32); the weight is kept when the first output word,
an unsigned 32-bit integer, is at least round(dropout_p · 2^32). The Triton kernels evaluate the same function
(kernels/tiles.py: philox_keep) where they need it, in the forward and again in the backward, and the torch
path evaluates it here, so both backends drop the same weights for the same seed.

The seed of a call is drawn from `generator` (or the default generator of the inputs' device) as a (1,) int64
tensor on the inputs' device: no host synchronisation.
"""

from __future__ import annotations

from typing import Optional

import torch

_M32 = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10


def draw_seed(generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """A (1,) int64 seed in [0, 2^62) from `generator` (default: the device's default generator), on `device`."""
    gen_device = generator.device if generator is not None else device
    seed = torch.randint(0, 1 << 62, (1,), generator=generator, device=gen_device, dtype=torch.int64)
    return seed.to(device)


def keep_threshold(p: float) -> int:
    """The uint32 threshold: a weight is kept when its random word is >= this."""
    return min(_M32, int(round(p * 2.0 ** 32)))


def _mul_hi_lo(a: torch.Tensor, b: int):
    """(high, low) 32-bit words of a · b for uint32 values held in int64 (no int64 overflow)."""
    b_hi, b_lo = b >> 16, b & 0xFFFF
    x = a * b_hi  # < 2^48
    y = a * b_lo  # < 2^48
    hi = (x + (y >> 16)) >> 16
    lo = ((x & 0xFFFF) << 16) + y
    return hi & _M32, lo & _M32


def philox_word(seed: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The first output word (uint32, held in int64) of Philox-4x32-10 at counter (offset, 0, 0) and key seed.

    On the CPU the offsets go through in pieces of 16k: the rounds' int64 temporaries then stay in cache (6x
    faster than whole (B, H, rows, keys) tensors on two cores)."""
    if offset.device.type == "cpu" and offset.numel() > _PIECE:
        flat = offset.reshape(-1)
        out = torch.empty_like(flat)
        for i in range(0, flat.numel(), _PIECE):
            out[i:i + _PIECE] = _philox_word(seed, flat[i:i + _PIECE])
        return out.view(offset.shape)
    return _philox_word(seed, offset)


_PIECE = 1 << 14


def _philox_word(seed: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    s = seed.to(torch.int64).reshape(())
    k0 = s & _M32
    k1 = (s >> 32) & _M32
    c0 = offset & _M32
    c1 = (offset >> 32) & _M32
    c2 = torch.zeros_like(offset)
    c3 = torch.zeros_like(offset)
    for _ in range(ROUNDS):
        hi_b, lo_b = _mul_hi_lo(c2, _ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _M32
        k1 = (k1 + _KEY_B) & _M32
    return c0


def keep_mask(seed: torch.Tensor, p: float, b0: int, B: int, H: int, rows: torch.Tensor, cols: torch.Tensor, NQ: int,
              NK: int) -> torch.Tensor:
    """Bool (B, H, len(rows), len(cols)): which weights of batch entries b0..b0+B-1 are kept (module docstring)."""
    dev = rows.device
    b = torch.arange(b0, b0 + B, device=dev, dtype=torch.int64).view(B, 1, 1, 1)
    h = torch.arange(H, device=dev, dtype=torch.int64).view(1, H, 1, 1)
    off = ((b * H + h) * NQ + rows.to(torch.int64).view(1, 1, -1, 1)) * NK + cols.to(torch.int64).view(1, 1, 1, -1)
    return philox_word(seed.to(dev), off) >= keep_threshold(p)
