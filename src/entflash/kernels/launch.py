"""Launch planning: the geometry of a call, its buffers and the sequence of kernel launches.

A forward is three stages, each one or more launches: pass 1 (pass1.py), the
τ pass (tau.py, and on large inputs gather.py for the last sweeps), the output
pass (output.py); a forward-only call with few query rows per KV head is two
launches of the decode path instead (decode.py, decode_stages). A backward is two: dq (dq.py, which also writes δ) and dk/dv
(dkdv.py, which reads it). `forward_stages` / `backward_stages` return the
stages as named lists of callables, in the order they must run: ops.py runs
them, benchmarks/stage_times.py times them one by one.

Every kernel argument is passed by keyword, and every launch setting comes
from the call's KernelOptions (configs.py).
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch
import triton

from ..dropout import keep_threshold
from . import configs
from .configs import KIND_ENTMAX15, KIND_GENERAL, KIND_SOFTMAX, KIND_SPARSEMAX, KernelOptions
from .decode import decode_apply_kernel, decode_finish_kernel, decode_scores_kernel, decode_tau_kernel
from .dkdv import dkdv_kernel
from .dq import dq_kernel
from .gather import gather_rows_kernel, tau_gather_kernel
from .output import output_kernel
from .pass1 import pass1_kernel
from .tau import tau_kernel

LN2 = math.log(2.0)
Tensor = torch.Tensor
Stage = Tuple[str, List[Callable[[], None]]]


def alpha_kind(alpha_t: Optional[Tensor], alpha_f: float) -> int:
    """The kernels' KIND for a per-head α tensor (always general) or a float α."""
    if alpha_t is not None:
        return KIND_GENERAL
    return {1.0: KIND_SOFTMAX, 2.0: KIND_SPARSEMAX, 1.5: KIND_ENTMAX15}.get(alpha_f, KIND_GENERAL)


class Geometry:
    """Sizes and strides of one call (dense (B, H, N, D) or packed varlen (T, H, D) inputs) under its options."""

    def __init__(self, q: Tensor, k: Tensor, cu_q: Optional[Tensor], max_q: int, max_k: int, opts: KernelOptions):
        self.varlen = cu_q is not None
        if self.varlen:
            self.B = cu_q.shape[0] - 1
            self.H, self.D = q.shape[1], q.shape[2]
            self.Hkv = k.shape[1]
            self.Nq, self.Nk = max_q, max_k  # for block counts only; the kernels read lengths from cu_seqlens
            self.total_q = q.shape[0]
        else:
            self.B, self.H, self.Nq, self.D = q.shape
            self.Hkv, self.Nk = k.shape[1], k.shape[2]
        self.G = self.H // self.Hkv
        self.opts = opts
        self.BLOCK_D = configs.block_d(self.D)
        self.n_qblk = max(1, triton.cdiv(self.Nq, opts.block_m))
        self.n_kblk = max(1, triton.cdiv(self.Nk, opts.block_n))
        self.n_qgrp = self.n_qblk * opts.n_groups  # rows of the tile map

    def strides(self, t: Tensor) -> Tuple[int, int, int]:
        """(batch, head, row) strides of a dense (B, H, N, D) or varlen (T, H, D) tensor."""
        if self.varlen:
            return 0, t.stride(1), t.stride(0)
        return t.stride(0), t.stride(1), t.stride(2)

    def stat_shape(self) -> Tuple[int, ...]:
        """Per-row statistics (τ, m, support, δ): (B, H, Nq) dense, (H, total_q) varlen."""
        return (self.H, self.total_q) if self.varlen else (self.B, self.H, self.Nq)

    def stat_strides(self) -> Tuple[int, int]:
        return (0, self.total_q) if self.varlen else (self.H * self.Nq, self.Nq)

    def map_shapes(self):
        """Shapes of the tile map (per row group and key tile) and of τ_min (per row group)."""
        return (self.B * self.H, self.n_qgrp, self.n_kblk), (self.B * self.H, self.n_qgrp)

    def grid_q(self, split: int = 1):
        """The grid of a query-block launch whose blocks run as `split` programs each."""
        return (self.n_qblk * split, self.B * self.H)

    def split_tau(self, kind: int) -> bool:
        """Whether the τ pass runs as one launch per sweep (KernelOptions.tau_split_min_tiles); softmax never
        splits (one sweep)."""
        tiles = self.B * self.H * self.n_qblk * self.n_kblk
        return kind != KIND_SOFTMAX and tiles >= self.opts.tau_split_min_tiles


UNBOUNDED = 1 << 30  # a window side without a bound, as the kernels take it


class Call:
    """The per-call arguments every kernel of a forward or backward takes, keyed by kernel parameter name.

    attn_mask: bool (B or 1, H or 1, Nq or 1, Nk or 1), True = attend; window: (left, right), -1 unbounded, or
    None; dropout_p with seed (a (1,) int64 tensor) for the kernels that apply dropout (self.dropout)."""

    def __init__(self, geo: Geometry, q: Tensor, k: Tensor, alpha_t: Optional[Tensor], alpha_f: float,
                 kpm: Optional[Tensor], cu_q: Optional[Tensor], cu_k: Optional[Tensor], causal: bool, scale: float,
                 attn_mask: Optional[Tensor] = None, window: Optional[Tuple[int, int]] = None, dropout_p: float = 0.0,
                 seed: Optional[Tensor] = None):
        dev = q.device
        self.geo = geo
        self.kind = alpha_kind(alpha_t, alpha_f)
        self.scale = float(scale)
        smb, smh = geo.stat_strides()
        self.kpm = kpm.view(torch.uint8) if kpm is not None else dummy(dev)
        self.cu_q = cu_q if cu_q is not None else dummy(dev)
        self.cu_k = cu_k if cu_k is not None else dummy(dev)
        self.alpha = alpha_buffer(alpha_t, alpha_f, geo.H, dev)
        am = attn_mask.view(torch.uint8) if attn_mask is not None else dummy(dev)
        am_strides = [am.stride(i) if attn_mask is not None and am.shape[i] > 1 else 0 for i in range(4)]
        wl, wr = window if window is not None else (-1, -1)
        # arguments and constexprs shared by every kernel
        self.shared = dict(
            KPM=self.kpm, AM=am, CU_Q=self.cu_q, CU_K=self.cu_k, ALPHA=self.alpha,
            skpm=kpm.stride(0) if kpm is not None else 0, sam_b=am_strides[0], sam_h=am_strides[1],
            sam_q=am_strides[2], sam_k=am_strides[3], wl=wl if wl >= 0 else UNBOUNDED,
            wr=wr if wr >= 0 else UNBOUNDED, smb=smb, smh=smh, G=geo.G,
            # dense lengths; varlen kernels read theirs from cu_seqlens
            Nq=0 if geo.varlen else geo.Nq, Nk=0 if geo.varlen else geo.Nk,
            n_qblk=geo.n_qblk, n_kblk=geo.n_kblk, scale=self.scale,
            D=geo.D, BLOCK_D=geo.BLOCK_D, BLOCK_M=geo.opts.block_m, BLOCK_N=geo.opts.block_n, KIND=self.kind,
            CAUSAL=causal, HAS_KPM=kpm is not None, HAS_MASK=attn_mask is not None, WINDOW=window is not None,
            IS_VARLEN=geo.varlen,
            # float32 dots in full precision (the tolerance rule compares with float32 torch); half types: default
            PREC="ieee" if q.dtype == torch.float32 else None, RG=geo.opts.row_group,
        )
        # dropout (output pass, dq, dk/dv): the keep test of entflash/dropout.py at coordinates over (Nq, Nk), the
        # maximum lengths for packed batches
        on = dropout_p > 0.0 and seed is not None
        # the register caps of pass 1 and dq are tuned for the kernels without a mask or dropout: with them the
        # capped kernels spill (sm_90 offline: 344 / 336 bytes of stack), so those variants run uncapped
        self.capped = attn_mask is None and not on
        self.dropout = dict(
            SEED=seed if on else dummy(dev), drop_thresh=keep_threshold(dropout_p) if on else 0,
            drop_scale=1.0 / (1.0 - dropout_p) if on else 1.0, NQd=geo.Nq, NKd=geo.Nk, DROPOUT=on)

    def qk(self, q: Tensor, k: Tensor) -> dict:
        """Q, K and their strides, as the query-block kernels name them."""
        g = self.geo
        return dict(Q=q, K=k, **_strides("q", g.strides(q)), **_strides("k", g.strides(k)))


def _strides(prefix: str, st: Tuple[int, int, int]) -> dict:
    return {f"s{prefix}b": st[0], f"s{prefix}h": st[1], f"s{prefix}n": st[2]}


def _launch(opts: KernelOptions, warps: int, stages: Optional[int] = None, maxnreg: Optional[int] = None) -> dict:
    """Launch settings: warps, pipeline stages and a register cap (none under the interpreter)."""
    kw = dict(num_warps=max(1, warps), num_stages=stages or opts.num_stages)
    if maxnreg and not configs.interpreting():
        kw["maxnreg"] = maxnreg
    return kw


def alpha_buffer(alpha_t: Optional[Tensor], alpha_f: float, H: int, device) -> Tensor:
    """α per query head as the kernels read it (float32, (H,))."""
    if alpha_t is not None:
        return alpha_t.detach().to(device=device, dtype=torch.float32).reshape(-1).expand(H).contiguous()
    return torch.full((H,), alpha_f, dtype=torch.float32, device=device)


def new_buffer(shape, dtype, device, opts: KernelOptions) -> Tensor:
    """An output buffer: uninitialized, or NaN-filled (-1 for integers) with KernelOptions.poison."""
    if opts.poison:
        fill = float("nan") if dtype.is_floating_point else -1
        return torch.full(shape, fill, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def dummy(device) -> Tensor:
    """A placeholder for a pointer argument the launch does not read."""
    return torch.empty(1, dtype=torch.int32, device=device)


# ----------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------


class ForwardBuffers:
    """The forward's outputs and scratch: out, m (row maxima), tau (τ - m), supp (support sizes), tmax (tile map),
    taumin (τ_min per row group), lists (tile lists), and for a split τ pass its per-row iteration state (4
    planes) and gathered unfinished rows (rows, rows_count)."""

    def __init__(self, geo: Geometry, q: Tensor, v: Tensor, need_stats: bool, split: bool):
        dev, o = q.device, geo.opts
        self.out = new_buffer(q.shape[:-1] + (v.shape[-1],), q.dtype, dev, o)
        self.m = new_buffer(geo.stat_shape(), torch.float32, dev, o)
        self.tau = new_buffer(geo.stat_shape(), torch.float32, dev, o)
        self.supp = new_buffer(geo.stat_shape(), torch.int32, dev, o) if need_stats else dummy(dev)
        map_shape, taumin_shape = geo.map_shapes()
        # tiles no program writes (past the causal bound) must read as empty
        self.tmax = torch.full(map_shape, float("-inf"), dtype=torch.bfloat16, device=dev)
        self.taumin = new_buffer(taumin_shape, torch.float32, dev, o)
        # one tile list per program of the τ and output passes (the gathered sweeps use one per block)
        self.lists = torch.empty((geo.B * geo.H, geo.n_qblk * max(o.tau_split, o.output_split), geo.n_kblk),
                                 dtype=torch.int32, device=dev)
        self.state = new_buffer((4,) + geo.stat_shape(), torch.float32, dev, o) if split else dummy(dev)
        self.rows = new_buffer((geo.B * geo.H, geo.Nq), torch.int32, dev, o) if split else dummy(dev)
        self.rows_count = new_buffer((geo.B * geo.H,), torch.int32, dev, o) if split else dummy(dev)


def forward_stages(c: Call, q: Tensor, k: Tensor, v: Tensor, bufs: ForwardBuffers, need_stats: bool,
                   split: bool) -> List[Stage]:
    """[("pass1", [launch]), ("tau", [launches]), ("output", [launch])] of one forward call.

    The τ pass: one launch that loops over its sweeps; or, when split (Geometry.split_tau), one launch per sweep
    for the first tau_gather_from sweeps, then, up to sweep tau_gather_until, launches that each follow a count of
    the unfinished rows and sweep only the (batch, head)s with many left, then the rows still unfinished gathered
    (gather_rows_kernel), swept in tiles of gathered rows (tau_gather_kernel) and τ written from the state by a
    last τ launch without sweeps."""
    g, o, b = c.geo, c.geo.opts, bufs
    qk = c.qk(q, k)
    max_iters = o.max_iters(c.kind)
    W = configs.sweep_margin(c.kind)
    sst = b.state[0].numel() if split else 0

    def pass1():
        pass1_kernel[g.grid_q()](
            **qk, **c.shared, M=b.m, TAU0=b.tau, TMAX=b.tmax, H=g.H, NEG_SCALE=c.scale < 0,
            **_launch(o, o.num_warps, o.pass1_stages, o.pass1_maxnreg if c.capped else None))

    def tau_launch(first: bool, n_loop: int, maxnreg: Optional[int], adapt: bool = False):
        tau_kernel[g.grid_q(o.tau_split)](
            **qk, **c.shared, M=b.m, TMAX=b.tmax, TAU=b.tau, TAUMIN=b.taumin, LISTS=b.lists, ST=b.state,
            COUNT=b.rows_count, H=g.H, sst=sst, share=o.tau_gather_share, KCHUNK=o.kchunk, FIRST=first, STATE=split,
            N_LOOP=n_loop, W=W, SPLIT=o.tau_split, ADAPT=adapt, FAST_LOG2=o.fast_log2,
            **_launch(o, o.num_warps // o.tau_split, maxnreg=maxnreg))

    def gather_rows():
        gather_rows_kernel[(g.B * g.H,)](
            M=b.m, ST=b.state, ALPHA=c.alpha, CU_Q=c.cu_q, CU_K=c.cu_k, ROWS=b.rows, COUNT=b.rows_count, H=g.H,
            Nq=c.shared["Nq"], Nk=c.shared["Nk"], smb=c.shared["smb"], smh=c.shared["smh"], scale=c.scale, sst=sst,
            nrow=g.Nq, KIND=c.kind, IS_VARLEN=g.varlen, CHUNK=o.gather_chunk, num_warps=4)

    def gathered_sweeps(n_loop: int):
        tau_gather_kernel[g.grid_q()](
            **qk, **c.shared, M=b.m, TMAX=b.tmax, LISTS=b.lists, ST=b.state, ROWS=b.rows, COUNT=b.rows_count, H=g.H,
            sst=sst, nrow=g.Nq, N_LOOP=n_loop, KC=o.gather_kc, W=W, FAST_LOG2=o.fast_log2, **_launch(o, o.num_warps))

    if not split:
        tau = [lambda: tau_launch(True, max_iters - 1, None)]
    else:
        # one sweep per launch (capped registers: two programs per SM); sweep 0 is the launch with FIRST
        n_one = min(o.tau_gather_from, max_iters)
        tau = [lambda it=it: tau_launch(it == 0, 0 if it == 0 else 1, o.tau_sweep_maxnreg) for it in range(n_one)]
        # sweeps by blocks only for the (batch, head)s that still have many unfinished rows (counted by
        # gather_rows; KernelOptions.tau_gather_until)
        for _ in range(n_one, min(o.tau_gather_until, max_iters)):
            tau += [gather_rows, lambda: tau_launch(False, 1, o.tau_sweep_maxnreg, adapt=True)]
        if max_iters > n_one:
            tau += [gather_rows, lambda: gathered_sweeps(max_iters - n_one),
                    lambda: tau_launch(False, 0, o.tau_sweep_maxnreg)]

    def output():
        output_kernel[g.grid_q(o.output_split)](
            **qk, **c.shared, V=v, **_strides("v", g.strides(v)), OUT=b.out, **_strides("o", g.strides(b.out)),
            TAU=b.tau, M=b.m, TMAX=b.tmax, TAUMIN=b.taumin, LISTS=b.lists, SUPP=b.supp, H=g.H, **c.dropout,
            NEED_STATS=need_stats, KCHUNK=o.kchunk, SPLIT=o.output_split,
            **_launch(o, o.num_warps // o.output_split, maxnreg=o.output_maxnreg))

    return [("pass1", [pass1]), ("tau", tau), ("output", [output])]


# ----------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------


class BackwardBuffers:
    """dq, dk, dv, delta (δ per row), da_rows (dα per row, for a per-head α's gradient), the dq and dk/dv tile
    lists, and tau_abs (τ in score units, written by dq for a dk/dv kernel without dkdv_relative)."""

    def __init__(self, geo: Geometry, q: Tensor, k: Tensor, v: Tensor, need_dalpha: bool):
        dev, o = q.device, geo.opts
        self.dq = new_buffer(q.shape, q.dtype, dev, o)
        self.dk = new_buffer(k.shape, k.dtype, dev, o)
        self.dv = new_buffer(v.shape, v.dtype, dev, o)
        self.delta = new_buffer(geo.stat_shape(), torch.float32, dev, o)
        self.da_rows = new_buffer(geo.stat_shape(), torch.float32, dev, o) if need_dalpha else dummy(dev)
        self.lists_q = torch.empty((geo.B * geo.H, geo.n_qblk * o.dq_split, geo.n_kblk), dtype=torch.int32,
                                   device=dev)
        self.lists_k = torch.empty((geo.B * geo.Hkv, geo.n_kblk, geo.n_qblk), dtype=torch.int32, device=dev)
        self.tau_abs = dummy(dev) if o.dkdv_relative else new_buffer(geo.stat_shape(), torch.float32, dev, o)


def backward_stages(c: Call, do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, tau: Tensor, m: Tensor,
                    tmax: Tensor, taumin: Tensor, bufs: BackwardBuffers, need_dalpha: bool) -> List[Stage]:
    """[("dq", [launch]), ("dkdv", [launch])]: dq with δ first, then dk/dv, which reads δ. tau, m: the forward's
    τ - m and row maxima; out: its output (the dq kernel's δ̂ = dO·o)."""
    g, o, b = c.geo, c.geo.opts, bufs
    qk = c.qk(q, k)
    o_c = out if out.stride(-1) == 1 else out.contiguous()
    sv, sd = _strides("v", g.strides(v)), _strides("d", g.strides(do))

    def dq():
        dq_kernel[g.grid_q(o.dq_split)](
            **qk, **c.shared, V=v, **sv, TAU=tau, M=m, TMAX=tmax, TAUMIN=taumin, LISTS=b.lists_q, DO=do, **sd,
            DELTA=b.delta, TABS=b.tau_abs, DQ=b.dq, **_strides("g", g.strides(b.dq)), DALPHA=b.da_rows, O=o_c,
            **_strides("o", g.strides(o_c)), H=g.H, **c.dropout, da_inv_max=o.dalpha_inv_max(),
            ALPHA_GRAD=need_dalpha, KCHUNK=o.kchunk,
            SPLIT=o.dq_split,
            FULL_TILES=o.dq_full_tiles, WRITE_TABS=not o.dkdv_relative,
            # a per-head α's gradient keeps more sums live: it spills under the cap and fits without it
            **_launch(o, o.num_warps // o.dq_split, maxnreg=o.dq_maxnreg if c.capped and not need_dalpha else None))

    def dkdv():
        dkdv_kernel[(g.n_kblk, g.B * g.Hkv)](
            **qk, **c.shared, V=v, **sv, TABS=tau if o.dkdv_relative else b.tau_abs, M=m, TMAX=tmax, TAUMIN=taumin,
            LISTS=b.lists_k, DO=do, **sd, DELTA=b.delta, DK=b.dk, DV=b.dv, **_strides("g", g.strides(b.dk)),
            Hkv=g.Hkv, **c.dropout, KCHUNK=o.kchunk, QC=o.dkdv_rows(), RELATIVE=o.dkdv_relative,
            **_launch(o, o.dkdv_warps or o.num_warps))

    return [("dq", [dq]), ("dkdv", [dkdv])]


def user_tau(tau: Tensor, m: Tensor, alpha_t: Optional[Tensor], alpha_f: float, H: int, varlen: bool) -> Tensor:
    """τ in the public units (docs/design.md) from the kernels' τ - m and row maxima m (rows without a visible key:
    m = -inf, τ - m = +inf; NaN rows: NaN); softmax rows hold the log2-sum-exp, reported as the natural-log one."""
    tau = tau + torch.where(m > float("-inf"), m, 0.0)
    if alpha_t is None:
        return tau * LN2 if alpha_f == 1.0 else tau
    a = alpha_t.detach().to(tau.device, torch.float32).reshape(-1).expand(H)
    soft = (a == 1.0).view((-1, 1) if varlen else (1, -1, 1))
    return torch.where(soft, tau * LN2, tau)


# ----------------------------------------------------------------------------
# decode path (decode.py)
# ----------------------------------------------------------------------------


def decode_rows(geo: Geometry) -> int:
    """Query rows per KV head (G · Nq): what KernelOptions.decode_rows bounds."""
    return geo.G * geo.Nq


def decode_stages(geo: Geometry, q: Tensor, k: Tensor, v: Tensor, alpha_t: Optional[Tensor], alpha_f: float,
                  kpm: Optional[Tensor], cu_q: Optional[Tensor], cu_k: Optional[Tensor], causal: bool,
                  window: Optional[Tuple[int, int]], scale: float, need_stats: bool) -> Tuple[List[Stage], tuple]:
    """The decode path's four launches (scores; τ; the weighted sums of V per key span; the spans added) and its
    outputs (out, tau, supp): τ already in the public units ((α-1)·x; natural-log log-sum-exp for softmax rows)."""
    o, dev = geo.opts, q.device
    BN = o.decode_block_n
    NQ, NK = geo.Nq, geo.Nk
    nch = max(1, triton.cdiv(NK, BN))
    span = o.decode_span * BN
    nspan = max(1, triton.cdiv(NK, span))
    rows = geo.B * geo.H * NQ
    out = new_buffer(q.shape[:-1] + (v.shape[-1],), q.dtype, dev, o)
    tau = new_buffer(geo.stat_shape(), torch.float32, dev, o) if need_stats else dummy(dev)
    supp = new_buffer(geo.stat_shape(), torch.int32, dev, o) if need_stats else dummy(dev)
    x = torch.empty((rows, nch * BN), dtype=torch.float32, device=dev)
    cmax = torch.empty((rows, nch), dtype=torch.float32, device=dev)
    lists = torch.empty((rows, nch), dtype=torch.int32, device=dev)
    tau_rows = torch.empty((rows,), dtype=torch.float32, device=dev)
    acc = torch.empty((nspan, rows, geo.BLOCK_D), dtype=torch.float32, device=dev)
    psum = torch.empty((nspan, rows), dtype=torch.float32, device=dev)
    psupp = torch.empty((nspan, rows), dtype=torch.int32, device=dev)
    wl, wr = window if window is not None else (-1, -1)
    cu_q_ = cu_q if cu_q is not None else dummy(dev)
    cu_k_ = cu_k if cu_k is not None else dummy(dev)
    common = dict(CU_Q=cu_q_, CU_K=cu_k_, H=geo.H, NQ=NQ, NK=NK, IS_VARLEN=geo.varlen)
    sq, sk, sv, so = geo.strides(q), geo.strides(k), geo.strides(v), geo.strides(out)
    stb, sth = geo.stat_strides()
    alpha = alpha_buffer(alpha_t, alpha_f, geo.H, dev) if alpha_t is not None else dummy(dev)
    block_r = max(16, triton.next_power_of_2(decode_rows(geo)))
    prec = "ieee" if q.dtype == torch.float32 else None

    def scores():
        decode_scores_kernel[(nspan, geo.B * geo.Hkv)](
            Q=q, K=k, X=x, CMAX=cmax, KPM=kpm.view(torch.uint8) if kpm is not None else dummy(dev),
            **_strides("q", sq), **_strides("k", sk), skpm=kpm.stride(0) if kpm is not None else 0,
            NKP=nch * BN, NCH=nch, G=geo.G, D=geo.D, BLOCK_D=geo.BLOCK_D,
            scale=float(scale), wl=wl if wl >= 0 else UNBOUNDED, wr=wr if wr >= 0 else UNBOUNDED,
            BLOCK_R=block_r, BLOCK_N=BN, SPAN_TILES=o.decode_span,
            CAUSAL=causal, HAS_KPM=kpm is not None, WINDOW=window is not None,
            PREC=prec, **common, num_warps=4, num_stages=o.num_stages)

    def solve():
        decode_tau_kernel[(NQ, geo.B * geo.H)](
            X=x, CMAX=cmax, LIST=lists, TAUR=tau_rows, TAU=tau, ALPHA=alpha, stb=stb, sth=sth,
            NKP=nch * BN, NCH=nch, G=geo.G, alpha_f=float(alpha_f), max_iters=o.decode_max_iters, BLOCK_N=BN,
            CB=o.decode_chunks, ALPHA_T=alpha_t is not None, NEED_STATS=need_stats, **common, num_warps=4)

    def apply():
        decode_apply_kernel[(nspan, geo.B * geo.Hkv)](
            X=x, CMAX=cmax, TAUR=tau_rows, V=v, ACC=acc, PSUM=psum, PSUPP=psupp, ALPHA=alpha, **_strides("v", sv),
            NKP=nch * BN, NCH=nch, G=geo.G, ROWS=rows, alpha_f=float(alpha_f), D=geo.D, BLOCK_D=geo.BLOCK_D,
            BLOCK_R=block_r, BLOCK_N=BN, SPAN_TILES=o.decode_span, ALPHA_T=alpha_t is not None, PREC=prec,
            **common, num_warps=4, num_stages=o.num_stages)

    def finish():
        decode_finish_kernel[(NQ, geo.B * geo.H)](
            ACC=acc, PSUM=psum, PSUPP=psupp, TAUR=tau_rows, O=out, SUPP=supp, **_strides("o", so), stb=stb, sth=sth,
            ROWS=rows, SPAN_KEYS=span, D=geo.D, BLOCK_D=geo.BLOCK_D, NEED_STATS=need_stats, **common, num_warps=1)

    return ([("decode scores", [scores]), ("decode tau", [solve]), ("decode output", [apply, finish])],
            (out, tau, supp))
