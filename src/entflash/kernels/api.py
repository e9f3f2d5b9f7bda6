"""Launchers, torch.library custom ops and autograd for the Triton path.

Two custom ops, `entflash::attn_fwd` and `entflash::attn_bwd`, with fake
(meta) implementations and autograd registered on the forward op, so that
torch.compile(fullgraph=True) traces a call without a graph break. Neither
op synchronises with the host.

Layouts: dense q (B, H, Nq, D), k/v (B, Hkv, Nk, D); varlen q (total_q, H, D),
k/v (total_k, Hkv, D) with int32 cu_seqlens. Inputs may be strided views as
long as the head dim is contiguous; outputs and gradients are contiguous.
Per-row statistics (τ, support, δ) are (B, H, Nq) for dense inputs and
(H, total_q) for varlen inputs.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import triton

from . import config
from .backward import dkdv_kernel, dq_kernel
from .forward import output_kernel
from .stragglers import gather_rows_kernel, tau_gather_kernel
from .threshold import rowmax_kernel, tau_kernel

LN2 = math.log(2.0)
Tensor = torch.Tensor


def alpha_kind(alpha_t: Optional[Tensor], alpha_f: float) -> int:
    if alpha_t is not None:
        return config.KIND_GENERAL
    if alpha_f == 1.0:
        return config.KIND_SOFTMAX
    if alpha_f == 2.0:
        return config.KIND_SPARSEMAX
    if alpha_f == 1.5:
        return config.KIND_ENTMAX15
    return config.KIND_GENERAL


class _Geom:
    """Sizes, strides and launch settings shared by every kernel of one call."""

    def __init__(self, q, k, v, cu_q, max_q, max_k):
        self.varlen = cu_q is not None
        if self.varlen:
            self.B = cu_q.shape[0] - 1
            self.H, self.D = q.shape[1], q.shape[2]
            self.Hkv = k.shape[1]
            self.Nq, self.Nk = max_q, max_k  # used only for block counts
            self.total_q = q.shape[0]
        else:
            self.B, self.H, self.Nq, self.D = q.shape
            self.Hkv, self.Nk = k.shape[1], k.shape[2]
        self.G = self.H // self.Hkv
        self.launch = config.launch_config(self.D, q.dtype)
        self.BLOCK_D = config.block_d(self.D)
        self.n_qblk = max(1, triton.cdiv(self.Nq, self.launch.BLOCK_M))
        self.n_kblk = max(1, triton.cdiv(self.Nk, self.launch.BLOCK_N))
        self.n_qgrp = self.n_qblk * self.launch.n_groups  # rows of the tile map
        # float32 dots in full precision (the tolerance rule compares with float32 torch); half types: default
        self.prec = "ieee" if q.dtype == torch.float32 else None

    def strides(self, t):
        """(batch, head, row) strides of a dense (B, H, N, D) or varlen (T, H, D) tensor."""
        if self.varlen:
            return 0, t.stride(1), t.stride(0)
        return t.stride(0), t.stride(1), t.stride(2)

    def stat_shape(self):
        return (self.H, self.total_q) if self.varlen else (self.B, self.H, self.Nq)

    def stat_strides(self):
        if self.varlen:
            return 0, self.total_q
        return self.H * self.Nq, self.Nq

    def map_shapes(self):
        """Shapes of the tile map (per row group and key tile) and of τ_min (per row group)."""
        return (self.B * self.H, self.n_qgrp, self.n_kblk), (self.B * self.H, self.n_qgrp)

    def grid_q(self, split=1):
        """The grid of a query-block launch whose blocks run as `split` programs each (config.Launch.split)."""
        return (self.n_qblk * split, self.B * self.H)

    def bind(self, alpha_t, alpha_f, kpm, cu_q, cu_k, causal, device):
        """Set the per-call arguments every kernel of the forward and the backward takes."""
        self.kind = alpha_kind(alpha_t, alpha_f)
        self.alpha_buf = _alpha_buffer(alpha_t, alpha_f, self.H, device)
        self.kpm_t = kpm.view(torch.uint8) if kpm is not None else _dummy(device)
        self.skpm = kpm.stride(0) if kpm is not None else 0
        self.cq = cu_q if cu_q is not None else _dummy(device)
        self.ck = cu_k if cu_k is not None else _dummy(device)
        self.smb, self.smh = self.stat_strides()
        # dense lengths; varlen kernels read theirs from cu_seqlens
        self.Nq_arg = 0 if self.varlen else self.Nq
        self.Nk_arg = 0 if self.varlen else self.Nk
        L = self.launch
        self.meta = dict(D=self.D, BLOCK_D=self.BLOCK_D, BLOCK_M=L.BLOCK_M, BLOCK_N=L.BLOCK_N, KIND=self.kind,
                         CAUSAL=causal, HAS_KPM=kpm is not None, IS_VARLEN=self.varlen, PREC=self.prec,
                         RG=L.ROW_GROUP, num_warps=L.num_warps, num_stages=L.num_stages)
        return self


def _alpha_buffer(alpha_t: Optional[Tensor], alpha_f: float, H: int, device) -> Tensor:
    if alpha_t is not None:
        return alpha_t.detach().to(device=device, dtype=torch.float32).reshape(-1).expand(H).contiguous()
    return torch.full((H,), alpha_f, dtype=torch.float32, device=device)


def _new(shape, dtype, device):
    """An output buffer: uninitialized, or NaN-filled (-1 for ints) when config.POISON is set."""
    if config.POISON:
        fill = float("nan") if dtype.is_floating_point else -1
        return torch.full(shape, fill, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _dummy(device):
    return torch.empty(1, dtype=torch.int32, device=device)


def split_tau(geo, kind) -> bool:
    """Whether the τ pass runs as one launch per sweep (config.TAU_SPLIT)."""
    if kind == config.KIND_SOFTMAX or config.TAU_SPLIT == "never":
        return False
    if config.TAU_SPLIT == "always":
        return True
    return geo.B * geo.H * geo.n_qblk * geo.n_kblk >= config.SPLIT_MIN_TILES


def forward_buffers(geo, q, v, need_stats, split=False):
    """(out, m, tau, supp, tmax, taumin, lists, state, rows, rows_count) of one forward call; state: the split τ
    pass's per-row iteration state (4 planes), rows / rows_count: its gathered unfinished rows
    (config.TAU_GATHER_FROM); dummies otherwise."""
    dev = q.device
    out = _new(q.shape[:-1] + (v.shape[-1],), q.dtype, dev)
    m = _new(geo.stat_shape(), torch.float32, dev)
    tau = _new(geo.stat_shape(), torch.float32, dev)
    supp = _new(geo.stat_shape(), torch.int32, dev) if need_stats else _dummy(dev)
    # tiles no program writes (past the causal bound) must read as empty
    map_shape, taumin_shape = geo.map_shapes()
    tmax = torch.full(map_shape, float("-inf"), dtype=torch.bfloat16, device=dev)
    taumin = _new(taumin_shape, torch.float32, dev)
    # scratch tile lists: one per program of the τ and output passes (tau_split / output_split per block; the
    # gathered sweeps use one per block)
    lists = torch.empty((geo.B * geo.H, geo.n_qblk * max(geo.launch.tau_split, geo.launch.output_split),
                         geo.n_kblk), dtype=torch.int32, device=dev)
    state = _new((4,) + geo.stat_shape(), torch.float32, dev) if split else _dummy(dev)
    # the split pass's gathered unfinished rows (stragglers.py): indices per (batch, head) and their count
    gather = split and config.TAU_GATHER_FROM is not None
    rows = _new((geo.B * geo.H, geo.Nq), torch.int32, dev) if gather else _dummy(dev)
    rows_count = _new((geo.B * geo.H,), torch.int32, dev) if gather else _dummy(dev)
    return out, m, tau, supp, tmax, taumin, lists, state, rows, rows_count


def _stages(g, kernel):
    """g.meta with num_stages and num_warps replaced by the kernel's own (config.Launch.pipeline_stages,
    config.Launch.kernel_warps)."""
    return {**g.meta, "num_stages": g.launch.pipeline_stages(kernel), "num_warps": g.launch.kernel_warps(kernel)}


def _regcap(name, default=None):
    """The maxnreg launch option of kernel `name`: config.MAXNREG's entry (an experiment switch), else the
    launch configuration's default; none under the interpreter."""
    mx = config.MAXNREG.get(name, default)
    return {"maxnreg": mx} if mx and not config.interpreting() else {}


def forward_stages(q, k, v, g, scale, bufs, need_stats, max_iters=None):
    """The forward's three launches as callables, in the order they must run (pass 1, τ pass, output pass):
    _fwd_impl runs them, benchmarks/stage_times.py times them. g: a bound _Geom; bufs: forward_buffers()
    (with split=True when split_tau(g, g.kind): the τ pass then makes config.TAU_GATHER_FROM one-sweep launches,
    lists the unfinished rows, sweeps them gathered in one launch and writes τ from the state in a last one;
    with TAU_GATHER_FROM None, min(max_iters, SPLIT_SWEEPS) one-sweep launches and, if sweeps remain, one
    looping launch)."""
    out, m, tau, supp, tmax, taumin, lists, state, rows, rows_count = bufs
    L = g.launch
    sq, sk, sv, so = g.strides(q), g.strides(k), g.strides(v), g.strides(out)
    common = (*sq, *sk, g.skpm, g.smb, g.smh, g.H, g.G, g.Nq_arg, g.Nk_arg, g.n_qblk, g.n_kblk, float(scale))
    if max_iters is None:
        max_iters = config.MAX_ITERS_GENERAL if g.kind == config.KIND_GENERAL else config.MAX_ITERS_EXACT
    split = state.numel() > 1 and split_tau(g, g.kind)
    sst = state[0].numel() if split else 0

    def pass1():
        # pass 1 writes the τ pass's lower bound into tau (α = 1.5 / 2); the τ pass overwrites it
        rowmax_kernel[g.grid_q(L.rowmax_split)](
            q, k, g.kpm_t, g.cq, g.ck, g.alpha_buf, m, tau, tmax, *common, NEG_SCALE=scale < 0, SPLIT=L.rowmax_split,
            NSUB=L.bound_subsets, DEPTH=L.bound_depth, **_stages(g, "rowmax"),
            **_regcap("rowmax", L.rowmax_maxnreg))

    def tau_launch(first, n_loop, cap, kernel="tau"):
        tau_kernel[g.grid_q(L.tau_split)](
            q, k, g.kpm_t, g.cq, g.ck, g.alpha_buf, m, tmax, tau, taumin, lists, state, *common, sst,
            MAX_ITERS=max_iters, KCHUNK=config.KCHUNK, FIRST=first, STATE=split, N_LOOP=n_loop,
            W=config.sweep_margin(g.kind), SPLIT=L.tau_split, **_stages(g, kernel), **cap)

    def gather_launches(n_loop):
        """Gather the unfinished rows, sweep them (n_loop sweeps at most), then write τ and τ_min from the state
        with a τ launch that makes no sweep (stragglers.py)."""
        bh = g.B * g.H

        def gather():
            gather_rows_kernel[(bh,)](m, state, g.alpha_buf, g.cq, g.ck, rows, rows_count, g.H, g.Nq_arg, g.Nk_arg,
                                      g.smb, g.smh, float(scale), sst, g.Nq, KIND=g.kind, IS_VARLEN=g.varlen,
                                      CHUNK=config.GATHER_CHUNK, num_warps=4)

        def sweeps():
            tau_gather_kernel[g.grid_q()](
                q, k, g.kpm_t, g.cq, g.ck, g.alpha_buf, m, tmax, lists, state, rows, rows_count, *common, sst, g.Nq,
                N_LOOP=n_loop, KC=config.GATHER_KC, W=config.sweep_margin(g.kind), **g.meta, **_regcap("tau"))
        return [gather, sweeps, lambda: tau_launch(False, 0, cap)]

    if not split:
        tau_launches = [lambda: tau_launch(True, max_iters - 1, _regcap("tau"))]
    else:
        # the first sweeps one per launch (capped registers; sweep 0 is the one with FIRST); the rows left after
        # them finish over gathered rows (gather_launches) from sweep TAU_GATHER_FROM on, or else, after
        # SPLIT_SWEEPS one-sweep launches, in one launch with a loop over the remaining sweeps
        cap = _regcap("tau", L.split_maxnreg)
        gather_from = config.TAU_GATHER_FROM if rows.numel() > 1 else None  # rows: allocated only to gather
        gather = gather_from is not None and gather_from < max_iters
        n_one = max(gather_from, 1) if gather else min(max_iters, config.SPLIT_SWEEPS)
        tau_launches = [lambda it=it: tau_launch(it == 0, 0 if it == 0 else 1, cap, "split") for it in range(n_one)]
        if gather:
            tau_launches += gather_launches(max_iters - n_one)
        elif max_iters > n_one:
            tau_launches.append(lambda: tau_launch(False, max_iters - n_one, _regcap("tau")))

    def tau_pass():
        for launch in tau_launches:
            launch()
    tau_pass.launches = tau_launches  # one callable per launch (benchmarks/tau_launches.py times them)

    def output_pass():
        output_kernel[g.grid_q(L.output_split)](
            q, k, v, g.kpm_t, g.cq, g.ck, g.alpha_buf, tau, m, tmax, taumin, lists, out, supp,
            *sq, *sk, *sv, *so, g.skpm, g.smb, g.smh, g.H, g.G, g.Nq_arg, g.Nk_arg, g.n_qblk, g.n_kblk,
            float(scale), NEED_STATS=need_stats, KCHUNK=config.KCHUNK, SPLIT=L.output_split,
            **_stages(g, "output"), **_regcap("output", L.output_maxnreg),
        )
    return pass1, tau_pass, output_pass


def _fwd_impl(q, k, v, alpha_t, kpm, cu_q, cu_k, max_q, max_k, alpha_f, causal, scale, need_stats):
    geo = _Geom(q, k, v, cu_q, max_q, max_k)
    split = split_tau(geo, alpha_kind(alpha_t, alpha_f))
    bufs = forward_buffers(geo, q, v, need_stats, split)
    out, m, tau, supp, tmax, taumin = bufs[:6]
    if out.numel() == 0 or geo.B * geo.H == 0:
        return out, tau, m, supp, tmax, taumin
    g = geo.bind(alpha_t, alpha_f, kpm, cu_q, cu_k, causal, q.device)
    for launch in forward_stages(q, k, v, g, scale, bufs, need_stats):
        launch()
    return out, tau, m, supp, tmax, taumin


def backward_buffers(geo, q, k, v, need_dalpha):
    """(dq, dk, dv, delta, da_rows, lists_q, lists_k, tau_abs) of one backward call; tau_abs: τ in score units,
    written by the dq kernel for a dk/dv kernel without config.Launch.dkdv_relative (backward.py; a dummy
    otherwise)."""
    dev = q.device
    dq = _new(q.shape, q.dtype, dev)
    dk = _new(k.shape, k.dtype, dev)
    dv = _new(v.shape, v.dtype, dev)
    delta = _new(geo.stat_shape(), torch.float32, dev)
    da_rows = _new(geo.stat_shape(), torch.float32, dev) if need_dalpha else _dummy(dev)
    lists_q = torch.empty((geo.B * geo.H, geo.n_qblk * geo.launch.dq_split, geo.n_kblk), dtype=torch.int32,
                          device=dev)
    lists_k = torch.empty((geo.B * geo.Hkv, geo.n_kblk, geo.n_qblk), dtype=torch.int32, device=dev)
    tau_abs = _dummy(dev) if geo.launch.dkdv_relative else _new(geo.stat_shape(), torch.float32, dev)
    return dq, dk, dv, delta, da_rows, lists_q, lists_k, tau_abs


def backward_stages(do, q, k, v, tau, m, tmax, taumin, g, scale, bufs, need_dalpha, out):
    """The backward's two launches as callables, in order (dq with δ, then dk/dv, which reads δ): _bwd_impl
    runs them, benchmarks/stage_times.py times them. g: a bound _Geom; bufs: backward_buffers(); tau, m: the
    forward's τ - m and row maxima m; out: the forward's output (read by dq only with config.DQ_ONE_SWEEP)."""
    dq, dk, dv, delta, da_rows, lists_q, lists_k, tau_abs = bufs
    sq, sk, sv, sd = g.strides(q), g.strides(k), g.strides(v), g.strides(do)
    one = config.dq_one_sweep(need_dalpha)
    o = out if out.stride(-1) == 1 else out.contiguous()
    tail = (g.Nq_arg, g.Nk_arg, g.n_qblk, g.n_kblk, float(scale))

    L = g.launch

    def dq_pass():
        dq_kernel[g.grid_q(L.dq_split)](
            q, k, v, g.kpm_t, g.cq, g.ck, g.alpha_buf, tau, m, tmax, taumin, lists_q, do, delta, tau_abs, dq, da_rows,
            o, *sq, *sk, *sv, *sd, *g.strides(dq), *g.strides(o), g.skpm, g.smb, g.smh, g.H, g.G, *tail,
            ALPHA_GRAD=need_dalpha, KCHUNK=config.KCHUNK, ONE_SWEEP=one, SPLIT=L.dq_split,
            FULL_TILES=L.dq_full_tiles, WRITE_TABS=not L.dkdv_relative, **_stages(g, "dq"),
            **_regcap("dq", config.dq_maxnreg(L, need_dalpha)),
        )

    def dkdv_pass():
        dkdv_kernel[(triton.cdiv(g.n_kblk, L.dkdv_kpp), g.B * g.Hkv)](
            q, k, v, g.kpm_t, g.cq, g.ck, g.alpha_buf, tau if L.dkdv_relative else tau_abs, m, tmax, taumin, lists_k,
            do, delta, dk, dv, *sq, *sk, *sv, *sd, *g.strides(dk), g.skpm, g.smb, g.smh, g.Hkv, g.G, *tail,
            KCHUNK=config.KCHUNK, KPP=L.dkdv_kpp, QC=L.dkdv_qc or L.BLOCK_M, RELATIVE=L.dkdv_relative,
            **_stages(g, "dkdv"), **_regcap("dkdv"),
        )
    return dq_pass, dkdv_pass


def _bwd_impl(do, q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, cu_q, cu_k, max_q, max_k, alpha_f, causal, scale,
              need_dalpha):
    geo = _Geom(q, k, v, cu_q, max_q, max_k)
    dev = q.device
    bufs = backward_buffers(geo, q, k, v, need_dalpha)
    dq, dk, dv, _, da_rows = bufs[:5]
    dalpha = torch.zeros(alpha_t.shape if alpha_t is not None else (0,), dtype=torch.float32, device=dev)
    if q.numel() == 0 or k.numel() == 0 or geo.B * geo.H == 0:
        return dq.zero_(), dk.zero_(), dv.zero_(), dalpha
    g = geo.bind(alpha_t, alpha_f, kpm, cu_q, cu_k, causal, dev)
    do = do if do.stride(-1) == 1 else do.contiguous()
    for launch in backward_stages(do, q, k, v, tau, m, tmax, taumin, g, scale, bufs, need_dalpha, out):
        launch()
    if need_dalpha:
        per_head = da_rows.sum(dim=1) if geo.varlen else da_rows.sum(dim=(0, 2))
        dalpha = per_head.sum() if alpha_t.dim() == 0 else per_head
        dalpha = dalpha.reshape(alpha_t.shape).to(torch.float32)
    return dq, dk, dv, dalpha


# ----------------------------------------------------------------------------
# custom ops
# ----------------------------------------------------------------------------


@torch.library.custom_op("entflash::attn_fwd", mutates_args=())
def attn_fwd(
    q: Tensor, k: Tensor, v: Tensor, alpha_t: Optional[Tensor], kpm: Optional[Tensor], cu_q: Optional[Tensor],
    cu_k: Optional[Tensor], max_q: int, max_k: int, alpha_f: float, causal: bool, scale: float, need_stats: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(out, τ - m, m, support, tile map, τ_min): τ relative to the row maxima m (threshold.py), both kept for
    the backward; triton_entmax_attention reports τ itself."""
    return _fwd_impl(q, k, v, alpha_t, kpm, cu_q, cu_k, max_q, max_k, alpha_f, causal, scale, need_stats)


@attn_fwd.register_fake
def _attn_fwd_fake(q, k, v, alpha_t, kpm, cu_q, cu_k, max_q, max_k, alpha_f, causal, scale, need_stats):
    geo = _Geom(q, k, v, cu_q, max_q, max_k)
    out = q.new_empty(q.shape[:-1] + (v.shape[-1],))
    tau = q.new_empty(geo.stat_shape(), dtype=torch.float32)
    m = q.new_empty(geo.stat_shape(), dtype=torch.float32)
    supp = q.new_empty(geo.stat_shape() if need_stats else (1,), dtype=torch.int32)
    map_shape, taumin_shape = geo.map_shapes()
    tmax = q.new_empty(map_shape, dtype=torch.bfloat16)
    taumin = q.new_empty(taumin_shape, dtype=torch.float32)
    return out, tau, m, supp, tmax, taumin


@torch.library.custom_op("entflash::attn_bwd", mutates_args=())
def attn_bwd(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, tau: Tensor, m: Tensor, tmax: Tensor, taumin: Tensor,
    alpha_t: Optional[Tensor], kpm: Optional[Tensor], cu_q: Optional[Tensor], cu_k: Optional[Tensor], max_q: int,
    max_k: int, alpha_f: float, causal: bool, scale: float, need_dalpha: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _bwd_impl(do, q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, cu_q, cu_k, max_q, max_k, alpha_f, causal,
                     scale, need_dalpha)


@attn_bwd.register_fake
def _attn_bwd_fake(do, q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, cu_q, cu_k, max_q, max_k, alpha_f, causal,
                   scale, need_dalpha):
    dalpha = q.new_empty(alpha_t.shape if alpha_t is not None else (0,), dtype=torch.float32)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dalpha


def _setup_context(ctx, inputs, output):
    q, k, v, alpha_t, kpm, cu_q, cu_k, max_q, max_k, alpha_f, causal, scale, need_stats = inputs
    out, tau, m, supp, tmax, taumin = output
    ctx.save_for_backward(q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, cu_q, cu_k)
    ctx.args = (max_q, max_k, alpha_f, causal, scale)


def _backward(ctx, dout, _dtau, _dm, _dsupp, _dtmax, _dtaumin):
    q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, cu_q, cu_k = ctx.saved_tensors
    max_q, max_k, alpha_f, causal, scale = ctx.args
    need_dalpha = bool(alpha_t is not None and ctx.needs_input_grad[3])
    dq, dk, dv, dalpha = attn_bwd(dout, q, k, v, out, tau, m, tmax, taumin, alpha_t, kpm, cu_q, cu_k, max_q, max_k,
                                  alpha_f, causal, scale, need_dalpha)
    da = dalpha.to(alpha_t.dtype) if need_dalpha else None
    return dq, dk, dv, da, None, None, None, None, None, None, None, None, None


attn_fwd.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------
# entry points used by attention.py (inputs already validated there)
# ----------------------------------------------------------------------------


def _check_supported(q, k, v):
    if q.device.type != "cuda" and not config.interpreting():
        raise ValueError(f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1), got device {q.device}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(
            f"backend='triton' supports float16, bfloat16 and float32, got {q.dtype}; use backend='torch' for float64"
        )
    if v.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"backend='triton' needs value's head dim equal to query's, got {v.shape[-1]} and {q.shape[-1]}; "
            "use backend='torch' for a different value head dim"
        )
    if q.shape[-1] > 256:
        raise ValueError(f"backend='triton' supports head dims up to 256, got {q.shape[-1]}")


def _prep(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def triton_entmax_attention(q, k, v, *, alpha, causal, scale, key_padding_mask, return_stats):
    from ..reference import AttentionStats

    _check_supported(q, k, v)
    alpha_t = alpha if isinstance(alpha, Tensor) else None
    alpha_f = 0.0 if alpha_t is not None else float(alpha)
    kpm = key_padding_mask.contiguous() if key_padding_mask is not None else None
    q, k, v = _prep(q), _prep(k), _prep(v)
    out, tau, m, supp, _tmax, _taumin = attn_fwd(
        q, k, v, alpha_t, kpm, None, None, q.shape[2], k.shape[2], alpha_f, causal, scale, return_stats
    )
    if not return_stats:
        return out
    return AttentionStats(out, _user_tau(tau, m, alpha_t, alpha_f, q.shape[1], False), supp)


def triton_entmax_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, alpha, causal, scale):
    _check_supported(q, k, v)
    alpha_t = alpha if isinstance(alpha, Tensor) else None
    alpha_f = 0.0 if alpha_t is not None else float(alpha)
    q, k, v = _prep(q), _prep(k), _prep(v)
    out = attn_fwd(q, k, v, alpha_t, None, cu_q.contiguous(), cu_k.contiguous(), int(max_q), int(max_k), alpha_f,
                   causal, scale, False)[0]
    return out


def _user_tau(tau: Tensor, m: Tensor, alpha_t, alpha_f, H, varlen) -> Tensor:
    """τ in DESIGN.md's units from the kernels' τ - m and row maxima m (rows without a visible key: m = -inf,
    τ - m = +inf; NaN rows: τ - m NaN); softmax rows hold the log2-sum-exp, reported as the natural-log one."""
    tau = tau + torch.where(m > float("-inf"), m, 0.0)
    if alpha_t is None:
        return tau * LN2 if alpha_f == 1.0 else tau
    a = alpha_t.detach().to(tau.device, torch.float32).reshape(-1).expand(H)
    soft = (a == 1.0).view((-1, 1) if varlen else (1, -1, 1))
    return torch.where(soft, tau * LN2, tau)

