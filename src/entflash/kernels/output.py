"""The sparse output pass: out = Σ_j p_j v_j / Σ_j p_j over the tiles that hold a nonzero.

A tile (i, j) is visited only if, for some row group of query block i, the
group's tile map entry (row-relative after the τ pass) exceeds the group's
τ_min; the visited tiles are first gathered into a compact list so that the
loop pipelines its loads. The division by Σ p is a
rounding-level correction (Σ p = 1 up to the float32 error of τ) that makes
every row sum to 1. With NEED_STATS it counts the support (softmax: the
visible keys). Nothing else is written: the backward recomputes what it needs.
"""

import triton
import triton.language as tl

from .tiles import (
    dropout_keep, fold_sum, head_alpha, load_rows, probs, query_block, query_program, row_offset, score_tile,
    visited_tiles,
)


@triton.jit
def output_kernel(
    Q, K, V, KPM, AM, CU_Q, CU_K, ALPHA, TAU, M, TMAX, TAUMIN, LISTS, OUT, SUPP, SEED,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, skpm, sam_b, sam_h, sam_q, sam_k, wl, wr, smb, smh,
    H, G, Nq, Nk, n_qblk, n_kblk, scale, drop_thresh, drop_scale, NQd, NKd,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, RG: tl.constexpr, NEED_STATS: tl.constexpr, KCHUNK: tl.constexpr,
    SPLIT: tl.constexpr, DROPOUT: tl.constexpr,
):
    """The output pass: o = Σ p v / Σ p over the block's listed tiles (visited_tiles), and the support sizes.
    SPLIT > 1: a program owns BLOCK_M // SPLIT rows of a tile-map block and its own row groups' tile list.
    DROPOUT: the weights that multiply v are p · keep · drop_scale (tiles.dropout_keep); Σ p is not dropped."""
    BM: tl.constexpr = BLOCK_M // SPLIT
    pid_m, sub, pid_bh, b, h, hk, qs, Lq, ks, Lk, start_m = query_program(H, G, CU_Q, CU_K, Nq, Nk, n_qblk, BM,
                                                                          SPLIT, CAUSAL, IS_VARLEN)
    if start_m < Lq:
        qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
        offs_m, offs_n0, offs_d, q_base, k_base, kpm_row, am_row, _lo, hi = query_block(
            Q, K, KPM, AM, b, h, hk, qs, ks, start_m, Lq, Lk, sqb, sqh, sqn, skb, skh, skn, skpm, sam_b, sam_h, wl, wr,
            BM, BLOCK_N, BLOCK_D, CAUSAL, WINDOW)
        v_base = V + row_offset(b, hk, ks, svb, svh, svn)
        stat_off = row_offset(b, h, qs, smb, smh, 1)
        rmask = offs_m < Lq
        q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
        tau, m, tlist, count = visited_tiles(TAU, M, TMAX, TAUMIN, LISTS, stat_off, offs_m, rmask, pid_bh, pid_m,
                                             n_qblk, n_kblk, hi, BLOCK_M, BLOCK_N, RG, KCHUNK, SPLIT, sub)
        acc = tl.zeros([BM, BLOCK_D], tl.float32)
        lsum = tl.zeros([BM], tl.float32)
        # Σp per row in a quarter tile, reduced once after the loop (fold_sum), where registers allow (D <= 64:
        # at D128 this kernel already spills)
        FOLD: tl.constexpr = BLOCK_D <= 64
        lsum_h = tl.zeros([BM, BLOCK_N // 4], tl.float32)
        if NEED_STATS:
            cnt = tl.zeros([BM], tl.int32)
        for i in range(0, count):
            start_n = tl.load(tlist + i) * BLOCK_N
            offs_n = start_n + offs_n0
            _, x = score_tile(q, k_base, start_m, start_n, offs_m, offs_n, offs_d, Lq, Lk, skn, qk_scale, m, kpm_row,
                              am_row, sam_q, sam_k, wl, wr, D, BM, BLOCK_N, CAUSAL, HAS_KPM, HAS_MASK, WINDOW, PREC)
            p = probs(x, tau, inv_a, is_soft, KIND)
            v = load_rows(v_base, offs_n, offs_d, Lk, svn, D)
            if DROPOUT:
                keep = dropout_keep(SEED, pid_bh, offs_m[:, None], offs_n[None, :], NQd, NKd, drop_thresh)
                acc += tl.dot(tl.where(keep, p * drop_scale, 0.0).to(v.dtype), v, input_precision=PREC)
            else:
                acc += tl.dot(p.to(v.dtype), v, input_precision=PREC)
            if FOLD:
                lsum_h += fold_sum(p, BM, BLOCK_N)
            else:
                lsum += tl.sum(p, 1)
            if NEED_STATS:
                if KIND == 0:
                    cnt += tl.sum((x > float("-inf")).to(tl.int32), 1)
                elif KIND == 3:
                    cnt += tl.sum(tl.where(is_soft, x > float("-inf"), x > tau[:, None]).to(tl.int32), 1)
                else:
                    cnt += tl.sum((x > tau[:, None]).to(tl.int32), 1)
        if FOLD:
            lsum = tl.sum(lsum_h, 1)
        out = acc / tl.where(lsum > 0, lsum, 1.0)[:, None]
        out = tl.where((tau != tau)[:, None], float("nan"), out)
        o_ptrs = OUT + row_offset(b, h, qs, sob, soh, son) + offs_m[:, None].to(tl.int64) * son + offs_d[None, :]
        tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=rmask[:, None] & (offs_d[None, :] < D))
        if NEED_STATS:
            tl.store(SUPP + stat_off + offs_m, cnt, mask=rmask)
