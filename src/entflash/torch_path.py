"""The pure-PyTorch attention path (backend="torch"): exact, chunked, any device.

It computes docs/design.md's semantics on the layout of attention.py. Inputs
arrive validated. q is viewed as (B, Hkv, G, Nq, D) with G = H // Hkv so GQA
needs no copy of k and v. Queries are processed in chunks with scores in
float32 (float64 for float64 input); a custom autograd Function keeps only q,
k, v and the per-row τ and recomputes each chunk's probabilities in the
backward, so peak memory is O(chunk × Nk) in both directions.
"""

from __future__ import annotations

import math

import torch

from .entmax import entmax_chunk_, entmax_grad_alpha, entmax_grad_input, entmax_probs
from .stats import AttentionStats

# Elements of one chunk's score tensor (B·H·chunk·Nk); about 16 MiB in float32.
CHUNK_ELEMENTS = 1 << 22


def _work_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def allowed_mask(i0, i1, Nq, Nk, causal, key_padding_mask, device):
    """Bool mask broadcastable to (B, 1, 1, i1-i0, Nk), True = key visible; None if all visible.

    Causal is bottom-right aligned: query i sees keys j <= i + Nk - Nq.
    """
    mask = None
    if causal:
        i = torch.arange(i0, i1, device=device)[:, None]
        j = torch.arange(Nk, device=device)[None, :]
        mask = (j <= i + (Nk - Nq))[None, None, None]
    if key_padding_mask is not None:
        kp = key_padding_mask[:, None, None, None, :]
        mask = kp if mask is None else (mask & kp)
    return mask


def _alpha5(alpha, B, Hkv, G, device, dtype):
    """α as a float or a (1, Hkv, G, 1, 1) tensor."""
    if isinstance(alpha, torch.Tensor):
        return alpha.to(dtype).reshape(-1).expand(Hkv * G).reshape(1, Hkv, G, 1, 1)
    return float(alpha)


def _chunk_rows(B, H, Nk):
    return max(1, min(1024, CHUNK_ELEMENTS // max(1, B * H * max(Nk, 1))))


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, alpha_t, alpha_f, causal, scale, key_padding_mask, chunk):
        B, H, Nq, D = q.shape
        Hkv, Nk, Dv = k.shape[1], k.shape[2], v.shape[-1]
        G = H // Hkv
        wd = _work_dtype(q.dtype)
        alpha = alpha_t.detach() if alpha_t is not None else alpha_f
        a5 = _alpha5(alpha, B, Hkv, G, q.device, wd)
        q5 = q.reshape(B, Hkv, G, Nq, D)
        kT = k.to(wd)[:, :, None].transpose(-1, -2)
        v5 = v.to(wd)[:, :, None]
        out = torch.empty(B, Hkv, G, Nq, Dv, dtype=q.dtype, device=q.device)
        tau = torch.empty(B, Hkv, G, Nq, dtype=wd, device=q.device)
        supp = torch.empty(B, Hkv, G, Nq, dtype=torch.int32, device=q.device)
        for i0 in range(0, Nq, chunk):
            i1 = min(Nq, i0 + chunk)
            s = torch.matmul(q5[:, :, :, i0:i1].to(wd), kT) * scale
            mask = allowed_mask(i0, i1, Nq, Nk, causal, key_padding_mask, q.device)
            if mask is not None:
                s.masked_fill_(~mask, -math.inf)
            p, t, n = entmax_chunk_(s, a5)
            tot = p.sum(-1, keepdim=True)
            o = torch.matmul(p, v5) / torch.where(tot > 0, tot, torch.ones_like(tot))
            out[:, :, :, i0:i1] = o.to(q.dtype)
            tau[:, :, :, i0:i1] = t
            supp[:, :, :, i0:i1] = n
        ctx.save_for_backward(q, k, v, tau, alpha_t if alpha_t is not None else q.new_empty(0), key_padding_mask if key_padding_mask is not None else q.new_empty(0, dtype=torch.bool))
        ctx.alpha_f = alpha_f
        ctx.has_alpha_t = alpha_t is not None
        ctx.has_kpm = key_padding_mask is not None
        ctx.causal, ctx.scale, ctx.chunk = causal, scale, chunk
        ctx.mark_non_differentiable(tau, supp)
        return out.reshape(B, H, Nq, Dv), tau.reshape(B, H, Nq), supp.reshape(B, H, Nq)

    @staticmethod
    def backward(ctx, dout, _dtau, _dsupp):
        q, k, v, tau, alpha_t, kpm = ctx.saved_tensors
        kpm = kpm if ctx.has_kpm else None
        causal, scale, chunk = ctx.causal, ctx.scale, ctx.chunk
        B, H, Nq, D = q.shape
        Hkv, Nk, Dv = k.shape[1], k.shape[2], v.shape[-1]
        G = H // Hkv
        wd = _work_dtype(q.dtype)
        alpha = alpha_t.detach() if ctx.has_alpha_t else ctx.alpha_f
        a5 = _alpha5(alpha, B, Hkv, G, q.device, wd)
        q5 = q.reshape(B, Hkv, G, Nq, D)
        do5 = dout.reshape(B, Hkv, G, Nq, Dv)
        kw = k.to(wd)[:, :, None]
        vw = v.to(wd)[:, :, None]
        dq = torch.empty(B, Hkv, G, Nq, D, dtype=wd, device=q.device)
        dk = torch.zeros(B, Hkv, Nk, D, dtype=wd, device=q.device)
        dv = torch.zeros(B, Hkv, Nk, Dv, dtype=wd, device=q.device)
        dalpha = torch.zeros(Hkv, G, dtype=torch.float64, device=q.device) if ctx.has_alpha_t else None
        for i0 in range(0, Nq, chunk):
            i1 = min(Nq, i0 + chunk)
            qc = q5[:, :, :, i0:i1].to(wd)
            doc = do5[:, :, :, i0:i1].to(wd)
            s = torch.matmul(qc, kw.transpose(-1, -2)) * scale
            mask = allowed_mask(i0, i1, Nq, Nk, causal, kpm, q.device)
            if mask is not None:
                s.masked_fill_(~mask, -math.inf)
            p = entmax_probs(s, tau[:, :, :, i0:i1, None], a5)
            g = torch.matmul(doc, vw.transpose(-1, -2))
            dz = entmax_grad_input(p, g, a5) * scale
            dq[:, :, :, i0:i1] = torch.matmul(dz, kw)
            dk += torch.matmul(dz.transpose(-1, -2), qc).sum(2)
            dv += torch.matmul(p.transpose(-1, -2), doc).sum(2)
            if dalpha is not None:
                dalpha += entmax_grad_alpha(p, g, a5).to(torch.float64).sum(dim=(0, 3, 4))
        dq = dq.reshape(B, H, Nq, D).to(q.dtype)
        da = None
        if dalpha is not None and ctx.needs_input_grad[3]:
            da = (dalpha.sum() if alpha_t.dim() == 0 else dalpha.reshape(alpha_t.shape)).to(alpha_t.dtype)
        return dq, dk.to(k.dtype), dv.to(v.dtype), da, None, None, None, None, None


def chunked_entmax_attention(q, k, v, *, alpha=1.5, causal=False, scale=None, key_padding_mask=None, return_stats=False, chunk=None):
    """The CPU path: exact, chunked over queries, O(chunk × Nk) memory in forward and backward."""
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    chunk = int(chunk) if chunk else _chunk_rows(B, H, Nk)
    alpha_t = alpha if isinstance(alpha, torch.Tensor) else None
    alpha_f = None if alpha_t is not None else float(alpha)
    out, tau, supp = _ChunkedAttention.apply(q, k, v, alpha_t, alpha_f, bool(causal), scale, key_padding_mask, chunk)
    if return_stats:
        return AttentionStats(out, tau.float(), supp)
    return out


def varlen_loop(fn, q, k, v, cu_q, cu_k, **kw):
    """Run a (B, H, N, D) attention function on each packed sequence.

    q (total_q, H, D), k/v (total_k, Hkv, D); cu_q/cu_k are Python lists of
    offsets. Returns (total_q, H, Dv)."""
    outs = []
    for b in range(len(cu_q) - 1):
        qb = q[cu_q[b] : cu_q[b + 1]].transpose(0, 1)[None]
        kb = k[cu_k[b] : cu_k[b + 1]].transpose(0, 1)[None]
        vb = v[cu_k[b] : cu_k[b + 1]].transpose(0, 1)[None]
        outs.append(fn(qb, kb, vb, **kw)[0].transpose(0, 1))  # (n_b, H, Dv)
    if not outs:
        return q.new_empty(0, q.shape[1], v.shape[-1])
    return torch.cat(outs, 0)
