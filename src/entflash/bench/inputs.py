"""Benchmark inputs: "trained:<layer>" (q, k, v a small model learned: bench/trained.py), "random" (i.i.d. normal q, k, v: no 64x64 block is empty) and "clustered" (keys in
256-long segments around unit-direction centres of norm sqrt(D); each 64-query block attends to one segment,
an earlier or the current one when causal: 90-99% of the 64x64 blocks exactly zero)."""

from __future__ import annotations

import math

import torch


def make_inputs(kind: str, B: int, H: int, N: int, D: int, causal: bool, dtype=torch.bfloat16, device="cuda",
                seed: int = 0, seg: int = 256, qblock: int = 64):
    """q, k, v (B, H, N, D) of kind "random", "clustered" or "trained:<layer>" (bench/trained.py)."""
    if kind.startswith("trained"):
        from .trained import make_trained

        layer = int(kind.split(":", 1)[1]) if ":" in kind else 0
        return make_trained(layer, B, H, N, D, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32)

    v = randn(B, H, N, D)
    if kind == "random":
        q, k = randn(B, H, N, D), randn(B, H, N, D)
    elif kind == "clustered":
        nseg = math.ceil(N / seg)
        c = randn(B, H, nseg, D)
        c = c / c.norm(dim=-1, keepdim=True) * math.sqrt(D)  # unit-direction centres, |c| = sqrt(D)
        seg_of_key = torch.arange(N, device=device) // seg
        k = randn(B, H, N, D) + c[:, :, seg_of_key]
        nqb = math.ceil(N / qblock)
        start = torch.arange(nqb, device=device) * qblock
        # causal: an earlier (or the current) segment; otherwise any segment
        hi = (start // seg + 1) if causal else torch.full_like(start, nseg)
        u = torch.rand(B, H, nqb, generator=g, device=device)
        pick = (u * hi).long().clamp_max(nseg - 1)  # (B, H, nqb)
        seg_of_query = pick.repeat_interleave(qblock, dim=-1)[..., :N]
        q = randn(B, H, N, D) + torch.gather(c, 2, seg_of_query[..., None].expand(B, H, N, D))
    else:
        raise ValueError(f"inputs must be 'random', 'clustered' or 'trained:<layer>', got {kind!r}")
    return tuple(t.to(dtype).contiguous() for t in (q, k, v))
