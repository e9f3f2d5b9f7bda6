"""Context parallelism: keys sharded across ranks, the threshold τ solved across them.

    out = context_parallel_attention(q, k, v, group=group, causal=True, layout="zigzag")

Each rank holds q, k, v of the same positions (layout.py: "contiguous" or "zigzag"), q (B, H, n, D) and k, v
(B, Hkv, n, D), and never more keys than its own: memory per rank is O(N / world) for K and V. For this when
the heads are too few to shard (sequence.py needs world | Hkv).

The rows of one rank at a time (in chunks of `chunk` rows) are broadcast to every rank; each scores them against
its own keys and the rows' threshold is solved on per-row partial sums combined with all-reduce:

* the row maximum m (all-reduce MAX); τ starts at its lower bound (α-1)·m - 1;
* per iteration, the sums over each rank's keys of y_+ = (z - τ)_+ (z = (α-1)·x): count, Σ y, Σ y² and min y
  over y > 0 for α = 1.5 / 2, Σ y^s and Σ y^(s-1) (s = 1 / (α-1)) otherwise (all-reduce SUM / MIN). Every rank
  then takes the same step, exactly as the decode kernels do (kernels/decode.py): Newton's method from below
  (f(τ) = Σ y_+^s - 1 is convex and decreasing, so it never overshoots), and for α = 1.5 / 2 the closed form on
  the current support, accepted when no member leaves it. All ranks see the same sums, so they stop together;
* the output Σ_j p_j v_j over each rank's keys is summed onto the row's owner (reduce).

Softmax rows (α = 1) take τ = m + log Σ exp(x - m) the same way. The backward recomputes p from the saved τ and
combines δ = Σ u g / Σ u (u = p^(2-α), g = dO·v) and dα's sums the same way; dq is reduced onto the owner, dk
and dv stay on the rank that holds the keys.

Communication per chunk: a broadcast of the rows, one all-reduce of a few per-row sums per τ iteration (2-6) and
a reduce of the output. This runs on torch operations (any device); a chunk's scores against a rank's keys,
(B, H, chunk, n), are the peak memory. A per-head α tensor's gradient follows the convention of a replicated
parameter: each rank holds the part computed from its keys (DDP's gradient averaging, or an all-reduce, sums
them). Not supported (raises): attn_mask and dropout.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.distributed as dist

from ..stats import AttentionStats
from ..validation import check_alpha, check_key_padding_mask, check_qkv, check_scale, check_window
from .layout import check_layout, positions

NEG_INF = float("-inf")


def _visible(pq, pk, causal, window, kpm_local):
    """(B or 1, 1, rows, keys) bool: which of this rank's keys each row sees (global positions pq, pk)."""
    vis = torch.ones(pq.shape[0], pk.shape[0], dtype=torch.bool, device=pq.device)
    d = pq[:, None]
    j = pk[None, :]
    if causal:
        vis &= j <= d
    if window is not None:
        left, right = window
        if left >= 0:
            vis &= j >= d - left
        if right >= 0:
            vis &= j <= d + right
    vis = vis[None, None]
    if kpm_local is not None:
        vis = vis & kpm_local[:, None, None, :]
    return vis


def _visible_keys(pq, pk, causal, window, kpm_local):
    """The visibility of this rank's keys for a chunk of rows, restricted to the keys some row sees: (vis, cols).
    Keys no row of the chunk sees (under a causal mask, a rank's keys after the chunk) cost nothing; this is
    what makes the zig-zag layout balance the work (layout.py). At least one column is kept, masked, so that
    every rank joins the collectives with well-formed sums."""
    vis = _visible(pq, pk, causal, window, kpm_local)
    cols = torch.nonzero(vis.any(dim=(0, 1, 2))).flatten()
    if cols.numel() == 0:
        cols = torch.zeros(1, dtype=torch.long, device=pk.device)
        return torch.zeros_like(vis[..., :1]), cols
    return vis.index_select(-1, cols), cols


def _scores(qc, k, scale, vis):
    """x = scale · q kᵀ for the chunk's rows against this rank's keys, GQA by head groups, masked to -inf."""
    B, H, r, D = qc.shape
    Hkv = k.shape[1]
    x = torch.matmul(qc.reshape(B, Hkv, (H // Hkv) * r, D), k.transpose(-1, -2)).reshape(B, H, r, -1) * scale
    return x.masked_fill(~vis, NEG_INF)


def _pv(p, v):
    """Σ_j p_j v_j over this rank's keys: (B, H, r, Dv)."""
    B, H, r, n = p.shape
    Hkv = v.shape[1]
    return torch.matmul(p.reshape(B, Hkv, (H // Hkv) * r, n), v).reshape(B, H, r, -1)


def _all_reduce(t, op, group):
    dist.all_reduce(t, op=op, group=group)
    return t


def _weights(y, a, soft):
    """p from y = z - τ: y_+^(1/a) for entmax heads, exp(y) for softmax heads (a = 0)."""
    pos = y > 0
    a_safe = torch.where(soft, 1.0, a)
    p = torch.where(pos, torch.where(pos, y, 1.0) ** (1.0 / a_safe), 0.0)
    return torch.where(soft, torch.exp(y), p)


def _solve_tau(x, a, soft, group, max_iters):
    """τ (B, H, r) of the chunk's rows from this rank's scores x and the other ranks' (module docstring)."""
    m = _all_reduce(x.amax(-1), dist.ReduceOp.MAX, group)
    empty = m == NEG_INF
    m_safe = torch.where(empty, 0.0, m)
    # softmax rows: one all-reduce of Σ exp(x - m)
    se = _all_reduce(torch.exp(x - m_safe[..., None]).sum(-1), dist.ReduceOp.SUM, group)
    tau_soft = m_safe + torch.log(se.clamp_min(1e-300))
    tau = a * m_safe - 1.0
    done = empty | soft
    # the Newton steps stop at the sums' rounding level
    tol = 1e-13 if x.dtype == torch.float64 else 2e-7
    exact15, exact2 = a == 0.5, a == 1.0
    inv_a = 1.0 / torch.where(soft, 1.0, a)
    z = x * torch.where(soft, 1.0, a)[..., None]
    for _ in range(max_iters):
        y = z - tau[..., None]
        pos = y > 0
        yp = torch.where(pos, y, 1.0)
        ys = torch.where(pos, yp ** inv_a[..., None], 0.0)
        sums = torch.stack([pos.sum(-1).to(x.dtype), torch.where(pos, y, 0.0).sum(-1),
                            torch.where(pos, y * y, 0.0).sum(-1), ys.sum(-1), (ys / yp).sum(-1)])
        sums = _all_reduce(sums, dist.ReduceOp.SUM, group)
        ymin = _all_reduce(torch.where(pos, y, math.inf).amin(-1), dist.ReduceOp.MIN, group)
        cnt, s1, s2, ss, ss1 = sums
        c = cnt.clamp_min(1.0)
        # α = 2: Michelot's closed form; α = 1.5: the quadratic's root on the support; accepted when no member
        # leaves the support (t <= min y); otherwise Newton from below
        t2 = (s1 - 1.0) / c
        mean = s1 / c
        t15 = mean - torch.sqrt(((1.0 - (s2 - s1 * mean)) / c).clamp_min(0.0))
        newton = a * (ss - 1.0) / ss1.clamp_min(1e-300)
        acc2 = exact2 & (t2 <= ymin)
        acc15 = exact15 & (t15 >= 0) & (t15 <= ymin)
        step = torch.where(exact2, t2, torch.where(acc15, t15, newton))
        fin = acc2 | acc15 | (step.abs() <= tol * tau.abs().clamp_min(1.0))
        tau = torch.where(done, tau, tau + step)
        done = done | fin
        if bool(done.all()):
            break
    tau = torch.where(soft, tau_soft, tau)
    return torch.where(empty, math.inf, tau)


def _work_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _alpha_rows(alpha, H, like):
    """(α - 1) per head as (1, H, 1), and the softmax heads."""
    a = alpha.detach().to(like).reshape(-1).expand(H) if isinstance(alpha, torch.Tensor) else \
        torch.full((H,), float(alpha), dtype=like.dtype, device=like.device)
    a = (a - 1.0).reshape(1, H, 1)
    return a, a == 0


class _ContextParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_in, k_in, v_in, alpha_t, alpha, kpm, causal, window, scale, layout, chunk, group, max_iters):
        W, rank = dist.get_world_size(group), dist.get_rank(group)
        q, k, v = (t.to(_work_dtype(q_in.dtype)) for t in (q_in, k_in, v_in))
        B, H, n, D = q.shape
        N = n * W
        a, soft = _alpha_rows(alpha_t if alpha_t is not None else alpha, H, q)
        pk = positions(N, W, rank, layout, q.device)
        kpm_local = kpm.index_select(1, pk) if kpm is not None else None
        out = torch.empty(B, H, n, v.shape[-1], dtype=q.dtype, device=q.device)
        tau = torch.empty(B, H, n, dtype=q.dtype, device=q.device)
        supp = torch.empty(B, H, n, dtype=torch.int64, device=q.device)
        for src in range(W):
            pq_all = positions(N, W, src, layout, q.device)
            for c0 in range(0, n, chunk):
                r = min(chunk, n - c0)
                qc = q[:, :, c0:c0 + r].contiguous() if src == rank else q.new_empty(B, H, r, D)
                dst = dist.get_global_rank(group, src)
                dist.broadcast(qc, dst, group=group)
                vis, cols = _visible_keys(pq_all[c0:c0 + r], pk, causal, window, kpm_local)
                ks, vs = k.index_select(2, cols), v.index_select(2, cols)
                x = _scores(qc, ks, scale, vis)
                t = _solve_tau(x, a, soft, group, max_iters)
                z = x * torch.where(soft, 1.0, a)[..., None]
                p = _weights(z - torch.where(torch.isinf(t), 0.0, t)[..., None], a[..., None], soft[..., None])
                p = p.masked_fill(~vis, 0.0)
                o = _pv(p, vs)
                cnt = torch.where(soft[..., None], vis.expand_as(p), p > 0).sum(-1)
                dist.reduce(o, dst, group=group)
                dist.reduce(cnt, dst, group=group)
                if src == rank:
                    out[:, :, c0:c0 + r] = o
                    tau[:, :, c0:c0 + r] = t
                    supp[:, :, c0:c0 + r] = cnt
        ctx.save_for_backward(q_in, k_in, v_in, tau, alpha_t if alpha_t is not None else q.new_empty(0),
                              kpm if kpm is not None else q.new_empty(0, dtype=torch.bool))
        ctx.args = (alpha, alpha_t is not None, kpm is not None, causal, window, scale, layout, chunk, group)
        supp = supp.to(torch.int32)
        ctx.mark_non_differentiable(tau, supp)
        return out.to(q_in.dtype), tau, supp

    @staticmethod
    def backward(ctx, dout, _dtau, _dsupp):
        q_in, k_in, v_in, tau_own, alpha_t, kpm = ctx.saved_tensors
        q, k, v = (t.to(_work_dtype(q_in.dtype)) for t in (q_in, k_in, v_in))
        alpha, has_alpha_t, has_kpm, causal, window, scale, layout, chunk, group = ctx.args
        alpha_t = alpha_t if has_alpha_t else None
        kpm = kpm if has_kpm else None
        W, rank = dist.get_world_size(group), dist.get_rank(group)
        B, H, n, D = q.shape
        Hkv, G, N = k.shape[1], H // k.shape[1], n * W
        a, soft = _alpha_rows(alpha_t if alpha_t is not None else alpha, H, q)
        pk = positions(N, W, rank, layout, q.device)
        kpm_local = kpm.index_select(1, pk) if kpm is not None else None
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        dalpha = torch.zeros(H, dtype=torch.float64, device=q.device)
        dout = dout.to(q.dtype).contiguous()
        for src in range(W):
            pq_all = positions(N, W, src, layout, q.device)
            dst = dist.get_global_rank(group, src)
            for c0 in range(0, n, chunk):
                r = min(chunk, n - c0)
                mine = src == rank
                qc = q[:, :, c0:c0 + r].contiguous() if mine else q.new_empty(B, H, r, D)
                doc = dout[:, :, c0:c0 + r].contiguous() if mine else dout.new_empty(B, H, r, dout.shape[-1])
                tc = tau_own[:, :, c0:c0 + r].contiguous() if mine else q.new_empty(B, H, r)
                for t in (qc, doc, tc):
                    dist.broadcast(t, dst, group=group)
                vis, cols = _visible_keys(pq_all[c0:c0 + r], pk, causal, window, kpm_local)
                ks, vs = k.index_select(2, cols), v.index_select(2, cols)
                x = _scores(qc, ks, scale, vis)
                z = x * torch.where(soft, 1.0, a)[..., None]
                t = torch.where(torch.isinf(tc), 0.0, tc)
                p = _weights(z - t[..., None], a[..., None], soft[..., None]).masked_fill(~vis, 0.0)
                # u = p^(2-α) on the support (p for softmax rows), g = dO·v
                y = (z - t[..., None]).clamp_min(0.0)
                a_safe = torch.where(soft, 1.0, a)[..., None]
                u = torch.where(soft[..., None], p, torch.where(p > 0, y.clamp_min(1e-300) ** ((1.0 - a_safe) / a_safe),
                                                                0.0))
                g = torch.matmul(doc.reshape(B, Hkv, G * r, -1), vs.transpose(-1, -2)).reshape(B, H, r, -1)
                logp = torch.where(p > 0, torch.log(torch.where(p > 0, p, 1.0)), 0.0)
                plogp = p * logp
                l2 = plogp * logp
                sums = torch.stack([u.sum(-1), (u * g).sum(-1), (p * g).sum(-1), (plogp * g).sum(-1), plogp.sum(-1),
                                    l2.sum(-1), (l2 * g).sum(-1)])
                su, sug, spg, splg, hs, sl2, sl2g = _all_reduce(sums, dist.ReduceOp.SUM, group)
                delta = sug / torch.where(su > 0, su, 1.0)
                dz = u * (g - delta[..., None])
                dqc = torch.matmul(dz.reshape(B, Hkv, G * r, -1), ks).reshape(B, H, r, D) * scale
                dist.reduce(dqc, dst, group=group)
                if mine:
                    dq[:, :, c0:c0 + r] = dqc
                dk.index_add_(2, cols, torch.matmul(dz.reshape(B, Hkv, G * r, -1).transpose(-1, -2),
                                                    qc.reshape(B, Hkv, G * r, D)) * scale)
                dv.index_add_(2, cols, torch.matmul(p.reshape(B, Hkv, G * r, -1).transpose(-1, -2),
                                                    doc.reshape(B, Hkv, G * r, -1)))
                if alpha_t is not None and ctx.needs_input_grad[3] and mine:
                    # dα per row (entmax.entmax_grad_alpha) from the combined sums; the row's owner adds it
                    aa = a.expand(B, H, r)
                    a1 = torch.where(aa == 0, 1.0, aa)
                    ut_g = delta
                    gen = (spg - ut_g) / (a1 * a1) - (splg - ut_g * hs) / a1
                    lim = 0.5 * (sl2 * spg - sl2g)
                    dalpha += torch.where(aa == 0, lim, gen).to(torch.float64).sum(dim=(0, 2))
        da = None
        if alpha_t is not None and ctx.needs_input_grad[3]:
            da = (dalpha.sum() if alpha_t.dim() == 0 else dalpha.reshape(alpha_t.shape)).to(alpha_t.dtype)
        return dq.to(q_in.dtype), dk.to(k_in.dtype), dv.to(v_in.dtype), da, None, None, None, None, None, None, None, None, None


def context_parallel_attention(q, k, v, *, group=None, mesh=None, mesh_dim=None, alpha=1.5, causal: bool = False,
                               scale: Optional[float] = None, key_padding_mask=None,
                               window: Optional[Tuple[int, int]] = None, layout: str = "contiguous",
                               return_stats: bool = False, chunk: int = 4096, max_iters: int = 64, attn_mask=None,
                               dropout_p: float = 0.0):
    """Entmax attention of a sequence whose keys are sharded across ranks (module docstring).

    q (B, H, n, D), k, v (B, Hkv, n, D): this rank's positions under `layout`; alpha: a float or an (H,) tensor (the
    same on every rank); key_padding_mask: (B, N), the whole sequence; causal and window on global positions
    (N = n · world). Returns this rank's (B, H, n, Dv) output, or with return_stats an AttentionStats of it, τ and
    the support (B, H, n)."""
    from .sequence import _group

    g = _group(group, mesh, mesh_dim)
    if attn_mask is not None:
        raise NotImplementedError("context_parallel_attention does not take attn_mask (use key_padding_mask, causal "
                                  "and window, or sequence_parallel_attention)")
    if dropout_p:
        raise NotImplementedError("context_parallel_attention does not support dropout")
    check_layout(layout)
    check_qkv(q, k, v, 4, "(batch, heads, seq, head_dim)")
    if k.shape[2] != q.shape[2] or v.shape[2] != q.shape[2]:
        raise ValueError(f"context_parallel_attention: q, k and v must hold the same positions, but got "
                         f"{q.shape[2]}, {k.shape[2]} and {v.shape[2]} rows")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"Expected chunk to be an int >= 1, but got {chunk!r}")
    H = q.shape[1]
    alpha = check_alpha(alpha, H, q.device)
    scale = check_scale(scale, q.shape[-1])
    window = check_window(window)
    N = q.shape[2] * dist.get_world_size(g)
    check_key_padding_mask(key_padding_mask, q.shape[0], N, q.device)
    alpha_t = alpha if isinstance(alpha, torch.Tensor) else None
    out, tau, supp = _ContextParallel.apply(q, k, v, alpha_t, alpha if alpha_t is None else None, key_padding_mask,
                                            bool(causal), window, scale, layout, chunk, g, max_iters)
    if not return_stats:
        return out
    return AttentionStats(out, tau.float(), supp)


__all__ = ["context_parallel_attention"]
