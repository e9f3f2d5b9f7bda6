"""The pure-PyTorch attention path (backend="torch"): exact, chunked, any device.

It computes docs/design.md's semantics on the layout of attention.py. Inputs
arrive validated. q is viewed as (B, Hkv, G, Nq, D) with G = H // Hkv so GQA
needs no copy of k and v. Queries are processed in chunks with scores in
float32 (float64 for float64 input); a custom autograd Function keeps only q,
k, v, the masks and the per-row τ, and recomputes each chunk's probabilities
in the backward (and its dropout mask, from the seed: dropout.py), so peak
memory is O(chunk × Nk) in both directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .dropout import keep_mask
from .entmax import entmax_chunk_, entmax_grad_alpha, entmax_grad_input, entmax_probs
from .stats import AttentionStats

# Elements of one chunk's score tensor (B·H·chunk·Nk); about 16 MiB in float32.
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Masking:
    """What a call hides and drops, besides the tensors themselves: causal, window (left, right) or None, and
    dropout (probability, batch offset b0 and the NQ, NK of the dropout coordinates: dropout.py)."""

    causal: bool = False
    window: Optional[Tuple[int, int]] = None
    dropout_p: float = 0.0
    b0: int = 0
    NQ: int = 0
    NK: int = 0


def _work_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def allowed_mask(i0, i1, Nq, Nk, spec: Masking, key_padding_mask, attn_mask, G, device):
    """Bool mask broadcastable to (B, Hkv, G, i1-i0, Nk), True = key visible; None if all visible. Causal and
    window are bottom-right aligned (d = i + Nk - Nq: causal keeps j <= d, window d - left <= j <= d + right)."""
    mask = None
    if spec.causal or spec.window is not None:
        i = torch.arange(i0, i1, device=device)[:, None]
        j = torch.arange(Nk, device=device)[None, :]
        d = i + (Nk - Nq)
        vis = torch.ones(i1 - i0, Nk, dtype=torch.bool, device=device)
        if spec.causal:
            vis = vis & (j <= d)
        if spec.window is not None:
            left, right = spec.window
            if left >= 0:
                vis = vis & (j >= d - left)
            if right >= 0:
                vis = vis & (j <= d + right)
        mask = vis[None, None, None]
    if key_padding_mask is not None:
        kp = key_padding_mask[:, None, None, None, :]
        mask = kp if mask is None else (mask & kp)
    if attn_mask is not None:
        am = attn_mask[:, :, i0:i1] if attn_mask.shape[2] > 1 else attn_mask
        am = am[:, :, None] if am.shape[1] == 1 else am.reshape(am.shape[0], -1, G, am.shape[2], am.shape[3])
        mask = am if mask is None else (mask & am)
    return mask


def _alpha5(alpha, Hkv, G, dtype):
    """α as a float or a (1, Hkv, G, 1, 1) tensor."""
    if isinstance(alpha, torch.Tensor):
        return alpha.to(dtype).reshape(-1).expand(Hkv * G).reshape(1, Hkv, G, 1, 1)
    return float(alpha)


def _chunk_rows(B, H, Nk):
    return max(1, min(1024, CHUNK_ELEMENTS // max(1, B * H * max(Nk, 1))))


def _keep(seed, spec: Masking, i0, i1, B, Hkv, G, Nk, device):
    """Dropout's keep mask of rows i0..i1, (B, Hkv, G, rows, Nk); None without dropout."""
    if spec.dropout_p == 0.0:
        return None
    rows = torch.arange(i0, i1, device=device)
    return keep_mask(seed, spec.dropout_p, spec.b0, B, Hkv * G, rows, torch.arange(Nk, device=device), spec.NQ,
                     spec.NK).view(B, Hkv, G, i1 - i0, Nk)


def _dropped(x, keep, spec: Masking):
    """x with dropout applied (kept entries scaled by 1 / (1 - dropout_p)); x itself without dropout."""
    if keep is None:
        return x
    return torch.where(keep, x * (1.0 / (1.0 - spec.dropout_p)), torch.zeros_like(x))


def _scores(q5, kT, i0, i1, scale, Nq, Nk, spec, kpm, am, G, wd):
    s = torch.matmul(q5[:, :, :, i0:i1].to(wd), kT) * scale
    mask = allowed_mask(i0, i1, Nq, Nk, spec, kpm, am, G, q5.device)
    if mask is not None:
        s.masked_fill_(~mask, -math.inf)
    return s


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, alpha_t, alpha_f, scale, kpm, am, seed, spec, chunk):
        B, H, Nq, D = q.shape
        Hkv, Nk, Dv = k.shape[1], k.shape[2], v.shape[-1]
        G = H // Hkv
        wd = _work_dtype(q.dtype)
        a5 = _alpha5(alpha_t.detach() if alpha_t is not None else alpha_f, Hkv, G, wd)
        q5 = q.reshape(B, Hkv, G, Nq, D)
        kT = k.to(wd)[:, :, None].transpose(-1, -2)
        v5 = v.to(wd)[:, :, None]
        out = torch.empty(B, Hkv, G, Nq, Dv, dtype=q.dtype, device=q.device)
        tau = torch.empty(B, Hkv, G, Nq, dtype=wd, device=q.device)
        supp = torch.empty(B, Hkv, G, Nq, dtype=torch.int32, device=q.device)
        for i0 in range(0, Nq, chunk):
            i1 = min(Nq, i0 + chunk)
            p, t, n = entmax_chunk_(_scores(q5, kT, i0, i1, scale, Nq, Nk, spec, kpm, am, G, wd), a5)
            tot = p.sum(-1, keepdim=True)
            w = _dropped(p, _keep(seed, spec, i0, i1, B, Hkv, G, Nk, q.device), spec)
            out[:, :, :, i0:i1] = (torch.matmul(w, v5) / torch.where(tot > 0, tot, torch.ones_like(tot))).to(q.dtype)
            tau[:, :, :, i0:i1] = t
            supp[:, :, :, i0:i1] = n
        ctx.save_for_backward(q, k, v, tau, alpha_t, kpm, am, seed)
        ctx.alpha_f, ctx.scale, ctx.spec, ctx.chunk = alpha_f, scale, spec, chunk
        ctx.mark_non_differentiable(tau, supp)
        return out.reshape(B, H, Nq, Dv), tau.reshape(B, H, Nq), supp.reshape(B, H, Nq)

    @staticmethod
    def backward(ctx, dout, _dtau, _dsupp):
        q, k, v, tau, alpha_t, kpm, am, seed = ctx.saved_tensors
        scale, spec, chunk = ctx.scale, ctx.spec, ctx.chunk
        B, H, Nq, D = q.shape
        Hkv, Nk, Dv = k.shape[1], k.shape[2], v.shape[-1]
        G = H // Hkv
        wd = _work_dtype(q.dtype)
        a5 = _alpha5(alpha_t.detach() if alpha_t is not None else ctx.alpha_f, Hkv, G, wd)
        q5 = q.reshape(B, Hkv, G, Nq, D)
        do5 = dout.reshape(B, Hkv, G, Nq, Dv)
        kw = k.to(wd)[:, :, None]
        vw = v.to(wd)[:, :, None]
        dq = torch.empty(B, Hkv, G, Nq, D, dtype=wd, device=q.device)
        dk = torch.zeros(B, Hkv, Nk, D, dtype=wd, device=q.device)
        dv = torch.zeros(B, Hkv, Nk, Dv, dtype=wd, device=q.device)
        dalpha = torch.zeros(Hkv, G, dtype=torch.float64, device=q.device) if alpha_t is not None else None
        for i0 in range(0, Nq, chunk):
            i1 = min(Nq, i0 + chunk)
            qc = q5[:, :, :, i0:i1].to(wd)
            doc = do5[:, :, :, i0:i1].to(wd)
            s = _scores(q5, kw.transpose(-1, -2), i0, i1, scale, Nq, Nk, spec, kpm, am, G, wd)
            p = entmax_probs(s, tau[:, :, :, i0:i1, None], a5)
            # dropout: dL/dp = keep · g / (1 - dropout_p), with g = dO·v
            keep = _keep(seed, spec, i0, i1, B, Hkv, G, Nk, q.device)
            g = _dropped(torch.matmul(doc, vw.transpose(-1, -2)), keep, spec)
            dz = entmax_grad_input(p, g, a5) * scale
            dq[:, :, :, i0:i1] = torch.matmul(dz, kw)
            dk += torch.matmul(dz.transpose(-1, -2), qc).sum(2)
            dv += torch.matmul(_dropped(p, keep, spec).transpose(-1, -2), doc).sum(2)
            if dalpha is not None:
                dalpha += entmax_grad_alpha(p, g, a5).to(torch.float64).sum(dim=(0, 3, 4))
        dq = dq.reshape(B, H, Nq, D).to(q.dtype)
        da = None
        if dalpha is not None and ctx.needs_input_grad[3]:
            da = (dalpha.sum() if alpha_t.dim() == 0 else dalpha.reshape(alpha_t.shape)).to(alpha_t.dtype)
        return dq, dk.to(k.dtype), dv.to(v.dtype), da, None, None, None, None, None, None, None


def chunked_entmax_attention(q, k, v, *, alpha=1.5, causal=False, scale=None, key_padding_mask=None,
                             attn_mask=None, window=None, dropout_p=0.0, seed=None, return_stats=False, chunk=None,
                             dropout_coords=None):
    """The torch path: exact, chunked over queries, O(chunk × Nk) memory in forward and backward.

    attn_mask: bool, 4-D with broadcast (size-1) dimensions allowed; window: (left, right) or None; dropout_p
    with seed (a (1,) int64 tensor: dropout.draw_seed); dropout_coords: (b0, NQ, NK) of dropout.py's coordinates
    (default (0, Nq, Nk))."""
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    chunk = int(chunk) if chunk else _chunk_rows(B, H, Nk)
    alpha_t = alpha if isinstance(alpha, torch.Tensor) else None
    alpha_f = None if alpha_t is not None else float(alpha)
    b0, NQ, NK = dropout_coords or (0, Nq, Nk)
    spec = Masking(bool(causal), window, float(dropout_p) if seed is not None else 0.0, b0, NQ, NK)
    out, tau, supp = _ChunkedAttention.apply(q, k, v, alpha_t, alpha_f, scale, key_padding_mask, attn_mask, seed,
                                             spec, chunk)
    if return_stats:
        return AttentionStats(out, tau.float(), supp)
    return out


def varlen_loop(fn, q, k, v, cu_q, cu_k, max_q, max_k, *, dropout_p=0.0, seed=None, return_stats=False, **kw):
    """Run a (B, H, N, D) attention function on each packed sequence, with the dropout coordinates of packed
    batches (dropout.py: sequence b, NQ = max_q, NK = max_k).

    q (total_q, H, D), k/v (total_k, Hkv, D); cu_q/cu_k are Python lists of offsets. Returns (total_q, H, Dv), or
    with return_stats (out, tau, support), tau and support (H, total_q)."""
    outs, taus, supps = [], [], []
    for b in range(len(cu_q) - 1):
        qb = q[cu_q[b] : cu_q[b + 1]].transpose(0, 1)[None]
        kb = k[cu_k[b] : cu_k[b + 1]].transpose(0, 1)[None]
        vb = v[cu_k[b] : cu_k[b + 1]].transpose(0, 1)[None]
        res = fn(qb, kb, vb, dropout_p=dropout_p, seed=seed, dropout_coords=(b, max_q, max_k),
                 return_stats=return_stats, **kw)
        out = res.out if return_stats else res
        outs.append(out[0].transpose(0, 1))  # (n_b, H, Dv)
        if return_stats:
            taus.append(res.tau[0])
            supps.append(res.support[0])
    H = q.shape[1]
    out = torch.cat(outs, 0) if outs else q.new_empty(0, H, v.shape[-1])
    if not return_stats:
        return out
    tau = torch.cat(taus, 1) if taus else torch.empty(H, 0, device=q.device)
    supp = torch.cat(supps, 1) if supps else torch.empty(H, 0, dtype=torch.int32, device=q.device)
    return AttentionStats(out, tau, supp)
