"""The dense float64 oracle the tests compare every backend with.

`naive_entmax_attention` materialises all scores, masks them and runs autograd
through `entmax` (entmax.py): no chunking, no custom backward, nothing shared
with the code under test except the activation itself, which the tests check
against the entmax package. Run it in float64 for the reference, or in the
input dtype for the tolerance rule's "same reference in the input dtype"
(scores and p @ v in that dtype, entmax in float32).
"""

from __future__ import annotations

import math

import torch

from .entmax import entmax, entmax_threshold
from .stats import AttentionStats


def visible(Nq, Nk, causal, key_padding_mask, device, window=None, attn_mask=None):
    """Bool broadcastable to (B, H, Nq, Nk): True where query i may attend key j. Causal and window are
    bottom-right aligned: with d = i + Nk - Nq, causal keeps j <= d and window (left, right) keeps
    d - left <= j <= d + right (-1: unbounded)."""
    i = torch.arange(Nq, device=device)[:, None]
    j = torch.arange(Nk, device=device)[None, :]
    d = i + (Nk - Nq)
    vis = torch.ones(Nq, Nk, dtype=torch.bool, device=device)
    if causal:
        vis = vis & (j <= d)
    if window is not None:
        left, right = window
        if left >= 0:
            vis = vis & (j >= d - left)
        if right >= 0:
            vis = vis & (j <= d + right)
    vis = vis[None, None]
    if key_padding_mask is not None:
        vis = vis & key_padding_mask[:, None, None, :]
    if attn_mask is not None:
        am = attn_mask if attn_mask.dtype == torch.bool else attn_mask == 0
        vis = vis & am.reshape((1,) * (4 - am.dim()) + tuple(am.shape))
    return vis


def naive_entmax_attention(q, k, v, *, alpha=1.5, causal=False, scale=None, key_padding_mask=None, attn_mask=None,
                           window=None, dropout_p=0.0, dropout_mask=None, return_stats=False):
    """Dense α-entmax attention on the layout of docs/design.md (GQA by repeating k and v).

    Dropout takes the keep mask explicitly: dropout_mask, bool broadcastable to (B, H, Nq, Nk), True = kept;
    kept weights are scaled by 1 / (1 - dropout_p) (entflash.dropout.keep_mask gives the backends' mask)."""
    B, H, Nq, D = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    G = H // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    kr, vr = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
    s = torch.matmul(q, kr.transpose(-1, -2)) * scale
    wd = torch.float64 if q.dtype == torch.float64 else torch.float32
    vis = visible(Nq, Nk, causal, key_padding_mask, q.device, window, attn_mask)
    s = s.to(wd).masked_fill(~vis, -math.inf)
    a = alpha.to(wd).reshape(1, -1, 1, 1).expand(1, H, 1, 1) if isinstance(alpha, torch.Tensor) else float(alpha)
    p = entmax(s, a, dim=-1)
    w = p
    if dropout_mask is not None:
        w = torch.where(dropout_mask, p / (1.0 - dropout_p), torch.zeros_like(p))
    out = torch.matmul(w.to(v.dtype), vr)
    if not return_stats:
        return out
    with torch.no_grad():
        a_rows = a.detach().expand(B, H, Nq, 1).reshape(-1) if isinstance(a, torch.Tensor) else a
        tau, supp = entmax_threshold(s.detach().reshape(-1, Nk), a_rows)
    return AttentionStats(out, tau.float().reshape(B, H, Nq), supp.reshape(B, H, Nq))
