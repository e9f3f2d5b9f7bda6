"""The backward's dq pass (and δ, and a per-head α's gradient), per query block.

With u = p^(2-α) on the support, g_j = dO·v_j and δ = Σ u g / Σ u:
dz_j = u_j (g_j - δ), dq = scale Σ_j dz_j k_j.

The dq kernel runs before the dk/dv kernel (dkdv.py), which reads its δ. It
makes one sweep over its query block's tiles: with δ̂ = dO·o from the forward's
output it accumulates A = Σ u (g - δ̂) k, B = Σ u k and the sums Σ u, Σ u g; at
the end δ = Σ u g / Σ u and dq = scale (A - (δ - δ̂) B). A per-head α's gradient
takes the same one sweep on heads with α >= dalpha_one_sweep_alpha (its sums
expanded around δ, which the sweep learns only at its end), and two sweeps below
it (δ, Σp and Σu first, then dq and dα as centred sums: near α = 1 the expanded
form cancels). Computing δ here instead of storing a second forward output (Σ u
v, as AdaSplash does) keeps the forward lean and saves a (B, H, N, D) buffer.

The kernel works relative to the row maximum m (x - m, τ - m: tiles.row_max)
and visits only the tiles where some row group's tile-map entry exceeds the
group's τ_min (tiles.visited_tiles).
"""

import triton
import triton.language as tl

from .tiles import (
    dalpha_probs, dropout_keep, fold_sum, grad_terms, head_alpha, load_cols, load_rows, query_block, query_program,
    row_offset, score_tile, visited_tiles,
)


@triton.jit
def dq_tile(q, do, k_base, v_base, start_m, start_n, offs_m, offs_d, Lq, Lk, skn, svn, qk_scale, m, kpm_row, am_row,
            sam_q, sam_k, wl, wr, tau, inv_a, is_soft, SEED, bh, NQd, NKd, drop_thresh, drop_scale, D: tl.constexpr,
            BLOCK_M: tl.constexpr, TN: tl.constexpr, KIND: tl.constexpr, CAUSAL: tl.constexpr,
            HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr, PREC: tl.constexpr,
            ALPHA_GRAD: tl.constexpr, DROPOUT: tl.constexpr):
    """One TN-key tile of a dq sweep: (kᵀ, y, p, u, g, ln p). With ALPHA_GRAD p, u and ln p come from
    dalpha_probs (y = x - τ); without it from grad_terms, and y, ln p are returned as the scores x (the caller
    reads them only with ALPHA_GRAD). DROPOUT: g = dL/dp = keep · drop_scale · dO·vᵀ."""
    offs_n = start_n + tl.arange(0, TN)
    kT, x = score_tile(q, k_base, start_m, start_n, offs_m, offs_n, offs_d, Lq, Lk, skn, qk_scale, m, kpm_row, am_row,
                       sam_q, sam_k, wl, wr, D, BLOCK_M, TN, CAUSAL, HAS_KPM, HAS_MASK, WINDOW, PREC)
    vT = load_cols(v_base, offs_n, offs_d, Lk, svn, D)
    if ALPHA_GRAD:
        y, p, u, lp = dalpha_probs(x, tau, inv_a, is_soft)
        g = tl.dot(do, vT, input_precision=PREC)
    else:
        p, u, g = grad_terms(x, do, vT, tau, inv_a, is_soft, KIND, PREC)
        y = x
        lp = x
    if DROPOUT:
        keep = dropout_keep(SEED, bh, offs_m[:, None], offs_n[None, :], NQd, NKd, drop_thresh)
        g = tl.where(keep, g * drop_scale, 0.0)
    return kT, y, p, u, g, lp


@triton.jit
def dq_kernel(
    Q, K, V, KPM, AM, CU_Q, CU_K, ALPHA, TAU, M, TMAX, TAUMIN, LISTS, DO, DELTA, TABS, DQ, DALPHA, O, SEED,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sgb, sgh, sgn, sob, soh, son, skpm,
    sam_b, sam_h, sam_q, sam_k, wl, wr, smb, smh,
    H, G, Nq, Nk, n_qblk, n_kblk, scale, drop_thresh, drop_scale, NQd, NKd, da_inv_max,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, RG: tl.constexpr, ALPHA_GRAD: tl.constexpr, KCHUNK: tl.constexpr,
    SPLIT: tl.constexpr, FULL_TILES: tl.constexpr, WRITE_TABS: tl.constexpr, DROPOUT: tl.constexpr,
):
    """dq (and δ, dα) of one query block. One sweep: A = Σ u (g - δ̂) k and B = Σ u k with δ̂ = dO·o (the
    forward's output o: a weighted mean of the same g, so u (g - δ̂) has the magnitude of u (g - δ) and its bf16
    rounding no cancellation), then dq = scale (A - (δ - δ̂) B) once δ is known at the end. ALPHA_GRAD (a per-head
    α's gradient): the same sweep with dα's sums for softmax heads and heads with 1 / (α - 1) <= da_inv_max
    (KernelOptions.dalpha_one_sweep_alpha); for the others two sweeps, δ first, then dq = scale Σ u (g - δ) k
    and dα.
    SPLIT > 1: a program owns BLOCK_M // SPLIT rows of a tile-map block (its own row groups' tile list), so that
    the kernel can run as smaller programs (one warpgroup each) of the same per-thread work."""
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
        do = load_rows(DO + row_offset(b, h, qs, sdb, sdh, sdn), offs_m, offs_d, Lq, sdn, D)
        tau, m, tlist, count = visited_tiles(TAU, M, TMAX, TAUMIN, LISTS, stat_off, offs_m, rmask, pid_bh, pid_m,
                                             n_qblk, n_kblk, hi, BLOCK_M, BLOCK_N, RG, KCHUNK, SPLIT, sub)
        o = load_rows(O + row_offset(b, h, qs, sob, soh, son), offs_m, offs_d, Lq, son, D)
        dhat = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
        acc_a = tl.zeros([BM, BLOCK_D], tl.float32)
        acc_b = tl.zeros([BM, BLOCK_D], tl.float32)
        # sweep 1: δ = Σ u g / Σ u (and the sums for dα)
        su = tl.zeros([BM], tl.float32)
        sug = tl.zeros([BM], tl.float32)
        # Σu and Σug in quarter tiles, reduced once after the loop (fold_sum), where registers allow
        FOLD: tl.constexpr = BLOCK_D <= 64
        # the one sweep visits each key tile as two halves unless FULL_TILES (KernelOptions.dq_full_tiles: the
        # 64-row split programs of the bf16/fp16 records take whole tiles): halves keep the score-sized live tiles
        # (registers) of a 128-row program down; both sweeps of a per-head α's gradient always take halves (its
        # extra per-score terms spilled on whole tiles)
        TN: tl.constexpr = BLOCK_N // 2 if ALPHA_GRAD or not FULL_TILES else BLOCK_N
        su_h = tl.zeros([BM, TN // 4], tl.float32)
        sug_h = tl.zeros([BM, TN // 4], tl.float32)
        if ALPHA_GRAD:
            # a per-head α is always the general kind (launch.alpha_kind). one: this head takes dq and dα in one
            # sweep (the kernel docstring); the others need δ, Σp and Σu before their own sums (sweep 2)
            tl.static_assert(KIND == 3)
            one = is_soft | (inv_a <= da_inv_max)
            sp = tl.zeros([BM], tl.float32)
            dg = tl.zeros([BM], tl.float32)
            h2 = tl.zeros([BM], tl.float32)
            g2 = tl.zeros([BM], tl.float32)
            nsup = tl.zeros([BM], tl.float32)
            spl = tl.zeros([BM], tl.float32)
            spgl = tl.zeros([BM], tl.float32)
        for i in range(0, count):
            start_t = tl.load(tlist + i) * BLOCK_N
            for hh in tl.static_range(BLOCK_N // TN):
                kT, y, p, u, g, lp = dq_tile(q, do, k_base, v_base, start_m, start_t + hh * TN, offs_m, offs_d, Lq,
                                             Lk, skn, svn, qk_scale, m, kpm_row, am_row, sam_q, sam_k, wl, wr, tau,
                                             inv_a, is_soft, SEED, pid_bh, NQd, NKd, drop_thresh, drop_scale, D, BM,
                                             TN, KIND, CAUSAL, HAS_KPM, HAS_MASK, WINDOW, PREC, ALPHA_GRAD, DROPOUT)
                if FOLD:
                    su_h += fold_sum(u, BM, TN)
                    sug_h += fold_sum(u * g, BM, TN)
                else:
                    su += tl.sum(u, 1)
                    sug += tl.sum(u * g, 1)
                if ALPHA_GRAD:
                    pl = p * lp
                    pll = pl * lp
                    sp += tl.sum(p, 1)
                    dg += tl.sum(p * g, 1)
                    h2 += tl.sum(pll, 1)
                    g2 += tl.sum(g * pll, 1)
                    nsup += tl.sum(tl.where(p > 0, 1.0, 0.0), 1)
                    # the one-sweep sums and dots run for every head (a two-sweep head discards them), not under
                    # `if one:`: with dots under a runtime branch in this software-pipelined loop (and the second
                    # sweep under one), a float32 masked per-head test failed on an H100 that passes under the
                    # interpreter (docs/performance.md)
                    spl += tl.sum(pl, 1)
                    spgl += tl.sum(pl * g, 1)
                acc_a += tl.dot((u * (g - dhat[:, None])).to(kT.dtype), tl.trans(kT), input_precision=PREC)
                acc_b += tl.dot(u.to(kT.dtype), tl.trans(kT), input_precision=PREC)
        if FOLD:
            su = tl.sum(su_h, 1)
            sug = tl.sum(sug_h, 1)
        delta = tl.where(su > 0, sug / tl.where(su > 0, su, 1.0), 0.0)
        tl.store(DELTA + stat_off + offs_m, delta, mask=rmask)
        if WRITE_TABS:
            # τ in score units for the dk/dv kernel without dkdv_relative (module docstring): τ - m plus m
            tl.store(TABS + stat_off + offs_m, tau + m, mask=rmask)
        dq = acc_a - (delta - dhat)[:, None] * acc_b
        if ALPHA_GRAD:
            # dα per row (entmax.entmax_grad_alpha), a = α - 1, p̂ = p / Σp, ũ = u / Σu, δ = Σ ũ g:
            #   dα = Σ (p̂ - ũ) g / a² - Σ p̂ ln p̂ (g - δ) / a.
            # p̂ and ũ are close when a is small (p̂ - ũ is O(a)), so Σ (p̂ - ũ) g from separately rounded p̂
            # and ũ loses their ~1e-7 relative rounding times |g|, amplified by 1/a² (α = 1.02, two to five
            # keys: 3-10x the float32 reference's error on the H200 and under the CPU interpreter).
            # Since p = u y (y = x - τ), p̂ - ũ = ũ (y - ȳ) / ȳ with ȳ = Σp / Σu, and Σ ũ (y - ȳ) = Σ ũ (g - δ)
            # = 0, so Σ (p̂ - ũ) g = Σ u (y - ȳ) (g - δ) / Σp: both factors are differences of directly computed
            # values, and the errors of ȳ and δ multiply sums that vanish. Likewise
            # Σ p̂ ln p̂ (g - δ) = (Σ p ln p (g - δ) - ln Σp · Σ p (g - δ)) / Σp. Neither Σp = 1 nor δ from the
            # same sweep is assumed (p sums to 1 only within the τ root's rounding, amplified by 1/a³ in
            # Σ p g - δ). A row with one key in its support has p = 1 whatever α: dα = 0, set exactly (nsup)
            # rather than left to rounding. p, u and ln p come from log2_fine in both sweeps: an absolute error of
            # log2 near y = 1 would reach dα through ln p / a and p's own relative error (1/a times it) at 1/a²
            # (1e-3 at α = 1.02 under a model of lg2.approx's error). On sm_90 tl.log2 lowers to libdevice's
            # log2f, not lg2.approx, so log2_fine guards other lowerings and the interpreter.
            #   The one-sweep heads expand the same sums around δ: Σ u (y - ȳ) (g - δ) = Σ p g - δ Σp (u y = p,
            # Σ u g = δ Σ u) and Σ p ln p (g - δ) = Σ p g ln p - δ Σ p ln p. Their difference of two rounded terms
            # costs 1/(α-1)² times float32 rounding: on float64-referenced rows (CPU model of these sums) the
            # relative error of dα was the centred form's at α >= 1.5, 1.2-1.7x it at α = 1.3-1.4, and 7-100x at
            # α = 1.02-1.1 (docs/performance.md), hence KernelOptions.dalpha_one_sweep_alpha.
            sp = tl.where(sp > 0, sp, 1.0)
            ybar = sp / tl.where(su > 0, su, 1.0)
            lim = 0.5 * (dg * h2 - g2)  # the softmax rows' limit, formed here so that its sums die before sweep 2
            # sweep 2 (the two-sweep heads): dq = scale Σ u (g - δ) k and the centred sums of dα. A one-sweep head
            # runs it for no tiles, and the results are chosen by `one` afterwards, rather than under a runtime
            # branch around the loop (the dots' note above)
            dq2 = tl.zeros([BM, BLOCK_D], tl.float32)
            c1 = tl.zeros([BM], tl.float32)
            c2 = tl.zeros([BM], tl.float32)
            c3 = tl.zeros([BM], tl.float32)
            for i in range(0, tl.where(one, 0, count)):
                start_t = tl.load(tlist + i) * BLOCK_N
                for hh in tl.static_range(BLOCK_N // TN):
                    kT, y, p, u, g, lp = dq_tile(q, do, k_base, v_base, start_m, start_t + hh * TN, offs_m, offs_d,
                                                 Lq, Lk, skn, svn, qk_scale, m, kpm_row, am_row, sam_q, sam_k, wl, wr,
                                                 tau, inv_a, is_soft, SEED, pid_bh, NQd, NKd, drop_thresh, drop_scale,
                                                 D, BM, TN, KIND, CAUSAL, HAS_KPM, HAS_MASK, WINDOW, PREC, ALPHA_GRAD,
                                                 DROPOUT)
                    gd = g - delta[:, None]
                    dq2 += tl.dot((u * gd).to(kT.dtype), tl.trans(kT), input_precision=PREC)
                    pg = p * gd
                    c1 += tl.sum(tl.where(u > 0, u * (y - ybar[:, None]), 0.0) * gd, 1)
                    c2 += tl.sum(pg * lp, 1)
                    c3 += tl.sum(pg, 1)
            e1 = tl.where(one, dg - delta * sp, c1)
            e2 = tl.where(one, spgl - delta * spl, c2)
            e3 = tl.where(one, e1, c3)
            dq = tl.where(one, dq, dq2)
        if ALPHA_GRAD:
            a = 1.0 / inv_a
            gen = (e1 / (a * a) - (e2 - tl.log(sp) * e3) / a) / sp
            gen = tl.where(nsup > 1.0, gen, 0.0)
            da = tl.where(is_soft, lim, gen)
            tl.store(DALPHA + stat_off + offs_m, da, mask=rmask)
        dq = dq * scale
        dq_base = DQ + row_offset(b, h, qs, sgb, sgh, sgn)
        tl.store(dq_base + offs_m[:, None].to(tl.int64) * sgn + offs_d[None, :], dq.to(DQ.dtype.element_ty),
                 mask=rmask[:, None] & (offs_d[None, :] < D))
