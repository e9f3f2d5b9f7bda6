"""torch.library custom ops and autograd for the Triton path, and its entry points.

Custom ops `entflash::attn_fwd` and `entflash::attn_bwd`, with fake (meta)
implementations and autograd registered on the forward op, and the forward-only
`entflash::decode_fwd` (the decode path, taken by use_decode), so that
torch.compile(fullgraph=True) traces a call without a graph break. No op
synchronises with the host. The call's KernelOptions cross the ops as their
encoded string (configs.KernelOptions.encode).

Layouts: dense q (B, H, Nq, D), k/v (B, Hkv, Nk, D); varlen q (total_q, H, D),
k/v (total_k, Hkv, D) with int32 cu_seqlens. Inputs may be strided views as
long as the head dim is contiguous; outputs and gradients are contiguous.
Per-row statistics (τ, support, δ) are (B, H, Nq) for dense inputs and
(H, total_q) for varlen inputs. Inputs arrive validated (attention.py).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import configs
from .configs import KernelOptions
from .launch import (
    BackwardBuffers, Call, ForwardBuffers, Geometry, alpha_kind, backward_stages, decode_stages, forward_stages,
    user_tau,
)

Tensor = torch.Tensor


def _window(wl: int, wr: int):
    return None if wl == -1 and wr == -1 else (wl, wr)


def _forward(q, k, v, alpha_t, kpm, am, seed, cu_q, cu_k, max_q, max_k, alpha_f, causal, wl, wr, dropout_p, scale,
             need_stats, options):
    geo = Geometry(q, k, cu_q, max_q, max_k, KernelOptions.decode(options))
    split = geo.split_tau(alpha_kind(alpha_t, alpha_f))
    b = ForwardBuffers(geo, q, v, need_stats, split)
    if b.out.numel() and geo.B * geo.H:
        c = Call(geo, q, k, alpha_t, alpha_f, kpm, cu_q, cu_k, causal, scale, am, _window(wl, wr), dropout_p, seed)
        for _, launches in forward_stages(c, q, k, v, b, need_stats, split):
            for launch in launches:
                launch()
    return b.out, b.tau, b.m, b.supp, b.tmax, b.taumin


def _backward(do, q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, am, seed, cu_q, cu_k, max_q, max_k, alpha_f,
              causal, wl, wr, dropout_p, scale, need_dalpha, options):
    geo = Geometry(q, k, cu_q, max_q, max_k, KernelOptions.decode(options))
    b = BackwardBuffers(geo, q, k, v, need_dalpha)
    dalpha = torch.zeros(alpha_t.shape if alpha_t is not None else (0,), dtype=torch.float32, device=q.device)
    if q.numel() == 0 or k.numel() == 0 or geo.B * geo.H == 0:
        return b.dq.zero_(), b.dk.zero_(), b.dv.zero_(), dalpha
    c = Call(geo, q, k, alpha_t, alpha_f, kpm, cu_q, cu_k, causal, scale, am, _window(wl, wr), dropout_p, seed)
    do = do if do.stride(-1) == 1 else do.contiguous()
    for _, launches in backward_stages(c, do, q, k, v, out, tau, m, tmax, taumin, b, need_dalpha):
        for launch in launches:
            launch()
    if need_dalpha:
        per_head = b.da_rows.sum(dim=1) if geo.varlen else b.da_rows.sum(dim=(0, 2))
        dalpha = per_head.sum() if alpha_t.dim() == 0 else per_head
        dalpha = dalpha.reshape(alpha_t.shape).to(torch.float32)
    return b.dq, b.dk, b.dv, dalpha


@torch.library.custom_op("entflash::attn_fwd", mutates_args=())
def attn_fwd(
    q: Tensor, k: Tensor, v: Tensor, alpha_t: Optional[Tensor], kpm: Optional[Tensor], am: Optional[Tensor],
    seed: Optional[Tensor], cu_q: Optional[Tensor], cu_k: Optional[Tensor], max_q: int, max_k: int, alpha_f: float,
    causal: bool, wl: int, wr: int, dropout_p: float, scale: float, need_stats: bool, options: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(out, τ - m, m, support, tile map, τ_min): τ relative to the row maxima m (tau.py), both kept for the
    backward; the entry points report τ itself. am: the bool attn_mask (broadcast dims of size 1); wl, wr: the
    window (-1 unbounded on both: none); seed: dropout's (1,) int64 seed, None without dropout."""
    return _forward(q, k, v, alpha_t, kpm, am, seed, cu_q, cu_k, max_q, max_k, alpha_f, causal, wl, wr, dropout_p,
                    scale, need_stats, options)


@attn_fwd.register_fake
def _attn_fwd_fake(q, k, v, alpha_t, kpm, am, seed, cu_q, cu_k, max_q, max_k, alpha_f, causal, wl, wr, dropout_p, scale,
                   need_stats, options):
    geo = Geometry(q, k, cu_q, max_q, max_k, KernelOptions.decode(options))
    out = q.new_empty(q.shape[:-1] + (v.shape[-1],))
    tau = q.new_empty(geo.stat_shape(), dtype=torch.float32)
    m = q.new_empty(geo.stat_shape(), dtype=torch.float32)
    supp = q.new_empty(geo.stat_shape() if need_stats else (1,), dtype=torch.int32)
    map_shape, taumin_shape = geo.map_shapes()
    return out, tau, m, supp, q.new_empty(map_shape, dtype=torch.bfloat16), q.new_empty(taumin_shape,
                                                                                         dtype=torch.float32)


@torch.library.custom_op("entflash::attn_bwd", mutates_args=())
def attn_bwd(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, tau: Tensor, m: Tensor, tmax: Tensor, taumin: Tensor,
    alpha_t: Optional[Tensor], kpm: Optional[Tensor], am: Optional[Tensor], seed: Optional[Tensor],
    cu_q: Optional[Tensor], cu_k: Optional[Tensor], max_q: int, max_k: int, alpha_f: float, causal: bool, wl: int,
    wr: int, dropout_p: float, scale: float, need_dalpha: bool, options: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _backward(do, q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, am, seed, cu_q, cu_k, max_q, max_k, alpha_f,
                     causal, wl, wr, dropout_p, scale, need_dalpha, options)


@attn_bwd.register_fake
def _attn_bwd_fake(do, q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, am, seed, cu_q, cu_k, max_q, max_k, alpha_f,
                   causal, wl, wr, dropout_p, scale, need_dalpha, options):
    dalpha = q.new_empty(alpha_t.shape if alpha_t is not None else (0,), dtype=torch.float32)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dalpha


def _setup_context(ctx, inputs, output):
    (q, k, v, alpha_t, kpm, am, seed, cu_q, cu_k, max_q, max_k, alpha_f, causal, wl, wr, dropout_p, scale, need_stats,
     options) = inputs
    out, tau, m, supp, tmax, taumin = output
    ctx.save_for_backward(q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, am, seed, cu_q, cu_k)
    ctx.args = (max_q, max_k, alpha_f, causal, wl, wr, dropout_p, scale, options)


def _autograd_backward(ctx, dout, _dtau, _dm, _dsupp, _dtmax, _dtaumin):
    q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, am, seed, cu_q, cu_k = ctx.saved_tensors
    max_q, max_k, alpha_f, causal, wl, wr, dropout_p, scale, options = ctx.args
    need_dalpha = bool(alpha_t is not None and ctx.needs_input_grad[3])
    dq, dk, dv, dalpha = attn_bwd(dout, q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, am, seed, cu_q, cu_k, max_q,
                                  max_k, alpha_f, causal, wl, wr, dropout_p, scale, need_dalpha, options)
    da = dalpha.to(alpha_t.dtype) if need_dalpha else None
    return (dq, dk, dv, da) + (None,) * 15


attn_fwd.register_autograd(_autograd_backward, setup_context=_setup_context)


@torch.library.custom_op("entflash::decode_fwd", mutates_args=())
def decode_fwd(
    q: Tensor, k: Tensor, v: Tensor, alpha_t: Optional[Tensor], kpm: Optional[Tensor], cu_q: Optional[Tensor],
    cu_k: Optional[Tensor], max_q: int, max_k: int, alpha_f: float, causal: bool, wl: int, wr: int, scale: float,
    need_stats: bool, options: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    """The decode path (decode.py): (out, τ in the public units, support); forward only (no autograd)."""
    geo = Geometry(q, k, cu_q, max_q, max_k, KernelOptions.decode(options))
    stages, (out, tau, supp) = decode_stages(geo, q, k, v, alpha_t, alpha_f, kpm, cu_q, cu_k, causal,
                                             _window(wl, wr), scale, need_stats)
    if out.numel() and geo.B * geo.H:
        for _, launches in stages:
            for launch in launches:
                launch()
    return out, tau, supp


@decode_fwd.register_fake
def _decode_fwd_fake(q, k, v, alpha_t, kpm, cu_q, cu_k, max_q, max_k, alpha_f, causal, wl, wr, scale, need_stats,
                     options):
    geo = Geometry(q, k, cu_q, max_q, max_k, KernelOptions.decode(options))
    stat = geo.stat_shape() if need_stats else (1,)
    return (q.new_empty(q.shape[:-1] + (v.shape[-1],)), q.new_empty(stat, dtype=torch.float32),
            q.new_empty(stat, dtype=torch.int32))


def use_decode(q: Tensor, k: Tensor, v: Tensor, alpha_t: Optional[Tensor], rows: int, attn_mask, dropout_p: float,
               opts: KernelOptions) -> bool:
    """Whether a call runs the decode path: few query rows per KV head (KernelOptions.decode_rows), no attn_mask
    or dropout, and no gradient needed (the path has no backward)."""
    if rows > opts.decode_rows or attn_mask is not None or dropout_p > 0:
        return False
    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, alpha_t)))


# ----------------------------------------------------------------------------
# entry points (inputs validated by attention.py)
# ----------------------------------------------------------------------------


def resolve_options(q: Tensor, options: Optional[KernelOptions]) -> KernelOptions:
    """The caller's options, or the table's for this GPU, dtype and head dim (configs.select)."""
    return options if options is not None else configs.for_device(q.device, q.dtype, q.shape[-1])


def _contiguous_last(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _alpha_args(alpha):
    alpha_t = alpha if isinstance(alpha, Tensor) else None
    return alpha_t, (0.0 if alpha_t is not None else float(alpha))


def attention(q, k, v, *, alpha, causal, scale, key_padding_mask=None, attn_mask=None, window=None, dropout_p=0.0,
              seed=None, return_stats=False, options=None):
    """Dense attention on the kernels: out, or (out, τ, support) with return_stats. attn_mask: 4-D bool (size-1
    broadcast dims allowed); window: (left, right) or None; dropout_p with seed (entflash.dropout.draw_seed)."""
    from ..stats import AttentionStats

    alpha_t, alpha_f = _alpha_args(alpha)
    opts = resolve_options(q, options)
    kpm = key_padding_mask.contiguous() if key_padding_mask is not None else None
    q, k, v = _contiguous_last(q), _contiguous_last(k), _contiguous_last(v)
    wl, wr = window if window is not None else (-1, -1)
    G = q.shape[1] // k.shape[1]
    if use_decode(q, k, v, alpha_t, G * q.shape[2], attn_mask, dropout_p, opts):
        out, tau, supp = decode_fwd(q, k, v, alpha_t, kpm, None, None, q.shape[2], k.shape[2], alpha_f, causal, wl,
                                    wr, scale, return_stats, opts.encode())
        return AttentionStats(out, tau, supp) if return_stats else out
    out, tau, m, supp, _, _ = attn_fwd(q, k, v, alpha_t, kpm, attn_mask, seed if dropout_p > 0 else None, None, None,
                                       q.shape[2], k.shape[2], alpha_f, causal, wl, wr, float(dropout_p), scale,
                                       return_stats, opts.encode())
    if not return_stats:
        return out
    return AttentionStats(out, user_tau(tau, m, alpha_t, alpha_f, q.shape[1], False), supp)


def attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, alpha, causal, scale, window=None, dropout_p=0.0, seed=None,
                     return_stats=False, options=None):
    """Packed variable-length attention on the kernels: out (total_q, H, Dv), or (out, τ, support) with
    return_stats (τ and support (H, total_q))."""
    from ..stats import AttentionStats

    alpha_t, alpha_f = _alpha_args(alpha)
    opts = resolve_options(q, options)
    q, k, v = _contiguous_last(q), _contiguous_last(k), _contiguous_last(v)
    wl, wr = window if window is not None else (-1, -1)
    G = q.shape[1] // k.shape[1]
    if use_decode(q, k, v, alpha_t, G * int(max_q), None, dropout_p, opts):
        out, tau, supp = decode_fwd(q, k, v, alpha_t, None, cu_q.contiguous(), cu_k.contiguous(), int(max_q),
                                    int(max_k), alpha_f, causal, wl, wr, scale, return_stats, opts.encode())
        return AttentionStats(out, tau, supp) if return_stats else out
    out, tau, m, supp, _, _ = attn_fwd(q, k, v, alpha_t, None, None, seed if dropout_p > 0 else None,
                                       cu_q.contiguous(), cu_k.contiguous(), int(max_q), int(max_k), alpha_f, causal,
                                       wl, wr, float(dropout_p), scale, return_stats, opts.encode())
    if not return_stats:
        return out
    return AttentionStats(out, user_tau(tau, m, alpha_t, alpha_f, q.shape[1], True), supp)
