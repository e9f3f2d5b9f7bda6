"""The sparse output pass: out = Σ_j p_j v_j / Σ_j p_j over the tiles that hold a nonzero.

A tile (i, j) is visited only if its maximum score (tile map, pass 1) exceeds
τ_min of query block i; the visited tiles are first gathered into a compact
list so that the loop pipelines its loads. The division by Σ p is a
rounding-level correction (Σ p = 1 up to the float32 error of τ) that makes
every row sum to 1. With NEED_STATS it counts the support (softmax: the
visible keys). Nothing else is written: the backward recomputes what it needs.
"""

import triton
import triton.language as tl

from .common import causal_hi, head_alpha, load_cols, load_rows, mask_scores, probs, seq_bounds, tile_list


@triton.jit
def output_kernel(
    Q, K, V, KPM, CU_Q, CU_K, ALPHA, TAU, TMAX, TAUMIN, LISTS, OUT, SUPP,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, skpm, smb, smh,
    H, G, Nq, Nk, n_qblk, n_kblk, scale,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, NEED_STATS: tl.constexpr, KCHUNK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // G
    qs, Lq, ks, Lk = seq_bounds(b, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    start_m = pid_m * BLOCK_M
    if start_m < Lq:
        qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n0 = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        q_base = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh + qs.to(tl.int64) * sqn
        k_base = K + b.to(tl.int64) * skb + hk.to(tl.int64) * skh + ks.to(tl.int64) * skn
        v_base = V + b.to(tl.int64) * svb + hk.to(tl.int64) * svh + ks.to(tl.int64) * svn
        kpm_row = KPM + b.to(tl.int64) * skpm
        stat_off = b.to(tl.int64) * smb + h.to(tl.int64) * smh + qs.to(tl.int64)
        rmask = offs_m < Lq
        tau = tl.load(TAU + stat_off + offs_m, mask=rmask, other=float("inf"))
        thr = tl.load(TAUMIN + pid_bh.to(tl.int64) * n_qblk + pid_m)
        q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        lsum = tl.zeros([BLOCK_M], tl.float32)
        if NEED_STATS:
            cnt = tl.zeros([BLOCK_M], tl.int32)
        hi = causal_hi(start_m, Lq, Lk, BLOCK_M, CAUSAL)
        tmax_row = TMAX + (pid_bh.to(tl.int64) * n_qblk + pid_m) * n_kblk
        tlist = LISTS + (pid_bh.to(tl.int64) * n_qblk + pid_m) * n_kblk
        count = tile_list(tmax_row, 1, tmax_row, 0, thr, tl.cdiv(hi, BLOCK_N), tlist, KCHUNK, False)
        for i in range(0, count):
            offs_n = tl.load(tlist + i) * BLOCK_N + offs_n0
            kT = load_cols(k_base, offs_n, offs_d, Lk, skn, D)
            s = tl.dot(q, kT, input_precision=PREC) * qk_scale
            x = mask_scores(s, offs_m, offs_n, Lq, Lk, kpm_row, CAUSAL, HAS_KPM)
            p = probs(x, tau, inv_a, is_soft, KIND)
            v = load_rows(v_base, offs_n, offs_d, Lk, svn, D)
            acc += tl.dot(p.to(v.dtype), v, input_precision=PREC)
            lsum += tl.sum(p, 1)
            if NEED_STATS:
                if KIND == 0:
                    cnt += tl.sum((x > float("-inf")).to(tl.int32), 1)
                elif KIND == 3:
                    cnt += tl.sum(tl.where(is_soft, x > float("-inf"), x > tau[:, None]).to(tl.int32), 1)
                else:
                    cnt += tl.sum((x > tau[:, None]).to(tl.int32), 1)
        out = acc / tl.where(lsum > 0, lsum, 1.0)[:, None]
        out = tl.where((tau != tau)[:, None], float("nan"), out)
        o_base = OUT + b.to(tl.int64) * sob + h.to(tl.int64) * soh + qs.to(tl.int64) * son
        o_ptrs = o_base + offs_m[:, None].to(tl.int64) * son + offs_d[None, :]
        tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=rmask[:, None] & (offs_d[None, :] < D))
        if NEED_STATS:
            tl.store(SUPP + stat_off + offs_m, cnt, mask=rmask)
