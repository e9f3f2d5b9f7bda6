"""Sparse backward: dq per query block, dk/dv per key block. Deterministic, no atomics.

With u = p^(2-α) on the support, g_j = dO·v_j and δ = Σ u g / Σ u:
dz_j = u_j (g_j - δ), dq = scale Σ_j dz_j k_j, dk_j = scale Σ_i dz_ij q_i,
dv_j = Σ_i p_ij dO_i.

The dq kernel runs first and makes one sweep over its query block's tiles
(config.DQ_ONE_SWEEP): with δ̂ = dO·o from the forward's output it accumulates
A = Σ u (g - δ̂) k, B = Σ u k and the sums Σ u, Σ u g; at the end δ = Σ u g / Σ u
(stored for the dk/dv kernel) and dq = scale (A - (δ - δ̂) B). With the flag off,
and always for a per-head α's gradient (ALPHA_GRAD: its sums need δ, Σp and Σu
first), it sweeps twice (δ, then dq and dα).
Computing δ here instead of storing a second forward output (Σ u v, as
AdaSplash does) keeps the forward lean and saves a (B, H, N, D) buffer.
The dk/dv program of a key block loops over the query heads of its GQA group
itself, so no two programs write the same rows.

The dq kernel works relative to the row maximum m (x - m, τ - m: common.row_max).
The dk/dv kernel reads τ in score units (TABS,
written by the dq kernel, fl(τ - m + m)), one per-row value instead of two (the
column-vector layout of its transposed tiles makes each cost registers: run 36,
the 8-warp kernel, 254 registers and 12% more time on random inputs). But τ in
score units is off by up to half an ulp of |τ|, which p = y^(1/(α-1)) turns into
a relative error of up to (1/(α-1)) ulp(|τ|) / (2y) in every p of the row:
scores ~8000 put 8e-4 into dv (test_dkdv_scores_relative_to_row_max), where the
float32 reference's error is ~1e-7. Relative to m the same
subtraction is exact to the ulps of x - m, at one more per-row vector and one
FADD per score (+5..12% dk/dv, run 69): config.Launch.dkdv_relative, on for
float32 inputs; bfloat16 / float16 keep TABS.
Both kernels visit only tiles where some row group's maximum (tile map) exceeds the group's τ_min.
"""

import triton
import triton.language as tl

from .common import (
    block_part, dalpha_probs,
    fold_sum, grad_terms, grad_weights_y, head_alpha, load_cols, load_rows, mask_scores_b, needs_mask,
    probs_y,
    program_ids, query_block, row_max, row_offset, score_tile, tile_list, visited_tiles,
)


@triton.jit
def dq_tile(q, do, k_base, v_base, start_m, start_n, offs_m, offs_d, Lq, Lk, skn, svn, qk_scale, m, kpm_row, tau, inv_a,
            is_soft, D: tl.constexpr, BLOCK_M: tl.constexpr, TN: tl.constexpr, KIND: tl.constexpr,
            CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, PREC: tl.constexpr, ALPHA_GRAD: tl.constexpr):
    """One TN-key tile of a dq sweep: (kᵀ, y, p, u, g, ln p). With ALPHA_GRAD p, u and ln p come from
    dalpha_probs (y = x - τ); without it from grad_terms, and y, ln p are the scores x (unused: dead code)."""
    offs_n = start_n + tl.arange(0, TN)
    kT, x = score_tile(q, k_base, start_m, start_n, offs_m, offs_n, offs_d, Lq, Lk, skn, qk_scale, m, kpm_row, D,
                       BLOCK_M, TN, CAUSAL, HAS_KPM, PREC)
    vT = load_cols(v_base, offs_n, offs_d, Lk, svn, D)
    if ALPHA_GRAD:
        y, p, u, lp = dalpha_probs(x, tau, inv_a, is_soft)
        g = tl.dot(do, vT, input_precision=PREC)
    else:
        p, u, g = grad_terms(x, do, vT, tau, inv_a, is_soft, KIND, PREC)
        y = x
        lp = x
    return kT, y, p, u, g, lp


@triton.jit
def dq_kernel(
    Q, K, V, KPM, CU_Q, CU_K, ALPHA, TAU, M, TMAX, TAUMIN, LISTS, DO, DELTA, TABS, DQ, DALPHA, O,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sgb, sgh, sgn, sob, soh, son, skpm, smb, smh,
    H, G, Nq, Nk, n_qblk, n_kblk, scale,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, RG: tl.constexpr, ALPHA_GRAD: tl.constexpr, KCHUNK: tl.constexpr, ONE_SWEEP: tl.constexpr,
    SPLIT: tl.constexpr = 1, FULL_TILES: tl.constexpr = False, WRITE_TABS: tl.constexpr = True,
):
    """dq (and δ, dα) of one query block. Two sweeps (δ first, then dq = scale Σ u (g - δ) k), or with ONE_SWEEP
    one: A = Σ u (g - δ̂) k and B = Σ u k with δ̂ = dO·o (the forward's output o: a weighted mean of the same g,
    so u (g - δ̂) has the magnitude of u (g - δ) and its bf16 rounding no cancellation), then
    dq = scale (A - (δ - δ̂) B) once δ is known at the end.
    SPLIT > 1: a program owns BLOCK_M // SPLIT rows of a tile-map block (its own row groups' tile list), so that
    the kernel can run as smaller programs (one warpgroup each) of the same per-thread work."""
    pid, pid_m, sub = block_part(n_qblk, SPLIT, CAUSAL)
    BM: tl.constexpr = BLOCK_M // SPLIT
    pid_bh = tl.program_id(1)
    b, h, hk, qs, Lq, ks, Lk = program_ids(pid_bh, H, G, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    start_m = pid * BM
    if start_m < Lq:
        qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
        offs_m, offs_n0, offs_d, q_base, k_base, kpm_row, hi = query_block(
            Q, K, KPM, b, h, hk, qs, ks, start_m, Lq, Lk, sqb, sqh, sqn, skb, skh, skn, skpm, BM, BLOCK_N,
            BLOCK_D, CAUSAL)
        v_base = V + row_offset(b, hk, ks, svb, svh, svn)
        stat_off = row_offset(b, h, qs, smb, smh, 1)
        rmask = offs_m < Lq
        q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
        do = load_rows(DO + row_offset(b, h, qs, sdb, sdh, sdn), offs_m, offs_d, Lq, sdn, D)
        tau, m, tlist, count = visited_tiles(TAU, M, TMAX, TAUMIN, LISTS, stat_off, offs_m, rmask, pid_bh, pid_m,
                                             n_qblk, n_kblk, hi, BLOCK_M, BLOCK_N, RG, KCHUNK, SPLIT, sub)
        if ONE_SWEEP:
            o = load_rows(O + row_offset(b, h, qs, sob, soh, son), offs_m, offs_d, Lq, son, D)
            dhat = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
            acc_a = tl.zeros([BM, BLOCK_D], tl.float32)
            acc_b = tl.zeros([BM, BLOCK_D], tl.float32)
        # sweep 1: δ = Σ u g / Σ u (and the sums for dα)
        su = tl.zeros([BM], tl.float32)
        sug = tl.zeros([BM], tl.float32)
        # Σu and Σug in quarter tiles, reduced once after the loop (fold_sum), where registers allow
        FOLD: tl.constexpr = BLOCK_D <= 64
        # ONE_SWEEP visits each key tile as two halves unless FULL_TILES (config.Launch.dq_full_tiles: the 64-row
        # split programs of the bf16/fp16 launch take whole tiles, run 60): halves keep the score-sized live tiles
        # (registers) of a 128-row program down; both sweeps of a per-head α's gradient always take halves (its
        # extra per-score terms spilled on whole tiles)
        TN: tl.constexpr = BLOCK_N // 2 if ALPHA_GRAD or (ONE_SWEEP and not FULL_TILES) else BLOCK_N
        su_h = tl.zeros([BM, TN // 4], tl.float32)
        sug_h = tl.zeros([BM, TN // 4], tl.float32)
        if ALPHA_GRAD:
            # dα needs δ, Σp and Σu before its own sums (sweep 2): the host turns ONE_SWEEP off for it; a
            # per-head α is always the general kind (api.alpha_kind)
            tl.static_assert(not ONE_SWEEP)
            tl.static_assert(KIND == 3)
            sp = tl.zeros([BM], tl.float32)
            dg = tl.zeros([BM], tl.float32)
            h2 = tl.zeros([BM], tl.float32)
            g2 = tl.zeros([BM], tl.float32)
        for i in range(0, count):
            start_t = tl.load(tlist + i) * BLOCK_N
            for hh in tl.static_range(BLOCK_N // TN):
                kT, y, p, u, g, lp = dq_tile(q, do, k_base, v_base, start_m, start_t + hh * TN, offs_m, offs_d, Lq,
                                             Lk, skn, svn, qk_scale, m, kpm_row, tau, inv_a, is_soft, D, BM, TN,
                                             KIND, CAUSAL, HAS_KPM, PREC, ALPHA_GRAD)
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
                if ONE_SWEEP:
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
        if ALPHA_GRAD:
            # dα per row (entmax.entmax_grad_alpha), a = α - 1, p̂ = p / Σp, ũ = u / Σu, δ = Σ ũ g:
            #   dα = Σ (p̂ - ũ) g / a² - Σ p̂ ln p̂ (g - δ) / a.
            # p̂ and ũ are close when a is small (p̂ - ũ is O(a)), so Σ (p̂ - ũ) g from separately rounded p̂
            # and ũ loses their ~1e-7 relative rounding times |g|, amplified by 1/a² (α = 1.02, two to five
            # keys: 3-10x the float32 reference's error on the H200 and under the CPU interpreter, run 43).
            # Since p = u y (y = x - τ), p̂ - ũ = ũ (y - ȳ) / ȳ with ȳ = Σp / Σu, and Σ ũ (y - ȳ) = Σ ũ (g - δ)
            # = 0, so Σ (p̂ - ũ) g = Σ u (y - ȳ) (g - δ) / Σp: both factors are differences of directly computed
            # values, and the errors of ȳ and δ multiply sums that vanish. Likewise
            # Σ p̂ ln p̂ (g - δ) = (Σ p ln p (g - δ) - ln Σp · Σ p (g - δ)) / Σp. Neither Σp = 1 nor δ from the
            # same sweep is assumed (p sums to 1 only within the τ root's rounding, amplified by 1/a³ in
            # Σ p g - δ: the form before session 9). A row with one key in its support has p = 1 whatever α:
            # dα = 0, set exactly (nsup) rather than left to rounding. p, u and ln p come from log2_fine in both
            # sweeps: an absolute error of log2 near y = 1 would reach dα through ln p / a and p's own relative
            # error (1/a times it) at 1/a² (under benchmarks/mufu_emulation.py's lg2.approx model: 1e-3 at
            # α = 1.02). On sm_90 tl.log2 turned out to be libdevice's log2f, not lg2.approx (NOTES session
            # 10): log2_fine may be unnecessary there; kept until a GPU run shows it.
            sp = tl.where(sp > 0, sp, 1.0)
            ybar = sp / tl.where(su > 0, su, 1.0)
            lim = 0.5 * (dg * h2 - g2)  # the softmax rows' limit, formed here so that its sums die before sweep 2
            e1 = tl.zeros([BM], tl.float32)
            e2 = tl.zeros([BM], tl.float32)
            e3 = tl.zeros([BM], tl.float32)
            nsup = tl.zeros([BM], tl.float32)
        # sweep 2: dq = scale Σ u (g - δ) k
        if ONE_SWEEP:
            dq = acc_a - (delta - dhat)[:, None] * acc_b
        else:
            dq = tl.zeros([BM, BLOCK_D], tl.float32)
            TN2: tl.constexpr = TN if ALPHA_GRAD else BLOCK_N
            for i in range(0, count):
                start_t = tl.load(tlist + i) * BLOCK_N
                for hh in tl.static_range(BLOCK_N // TN2):
                    kT, y, p, u, g, lp = dq_tile(q, do, k_base, v_base, start_m, start_t + hh * TN2, offs_m, offs_d,
                                                 Lq, Lk, skn, svn, qk_scale, m, kpm_row, tau, inv_a, is_soft, D,
                                                 BM, TN2, KIND, CAUSAL, HAS_KPM, PREC, ALPHA_GRAD)
                    dz = u * (g - delta[:, None])
                    dq += tl.dot(dz.to(kT.dtype), tl.trans(kT), input_precision=PREC)
                    if ALPHA_GRAD:
                        gd = g - delta[:, None]
                        pg = p * gd
                        e1 += tl.sum(tl.where(u > 0, u * (y - ybar[:, None]), 0.0) * gd, 1)
                        e2 += tl.sum(pg * lp, 1)
                        e3 += tl.sum(pg, 1)
                        nsup += tl.sum(tl.where(p > 0, 1.0, 0.0), 1)
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


@triton.jit
def dkdv_kernel(
    Q, K, V, KPM, CU_Q, CU_K, ALPHA, TABS, M, TMAX, TAUMIN, LISTS, DO, DELTA, DK, DV,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sgb, sgh, sgn, skpm, smb, smh,
    Hkv, G, Nq, Nk, n_qblk, n_kblk, scale,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, RG: tl.constexpr, KCHUNK: tl.constexpr, KPP: tl.constexpr, QC: tl.constexpr,
    RELATIVE: tl.constexpr = False,
):
    """dk, dv of KPP consecutive key tiles (KPP·BLOCK_N keys) per program, computed transposed (sᵀ = k·qᵀ, keys
    as rows) so that pᵀ and dzᵀ feed the dv and dk dots from registers; the key dimension fills the MMA's
    rows. A query block is visited when the tile map admits it for any of the program's key tiles, in
    chunks of QC rows (chunks past the causal bound are skipped). RELATIVE: scores relative to the row maxima M,
    TABS the forward's τ - m; else TABS is τ in score units, written by the dq kernel (module docstring)."""
    pid_n = tl.program_id(0)
    pid_bhk = tl.program_id(1)
    b, hk, _, qs, Lq, ks, Lk = program_ids(pid_bhk, Hkv, 1, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    H = Hkv * G
    NK: tl.constexpr = KPP * BLOCK_N
    start_n = pid_n * NK
    if start_n < Lk:
        offs_n = start_n + tl.arange(0, NK)
        offs_c = tl.arange(0, QC)
        offs_d = tl.arange(0, BLOCK_D)
        k_base = K + row_offset(b, hk, ks, skb, skh, skn)
        v_base = V + row_offset(b, hk, ks, svb, svh, svn)
        kpm_row = KPM + b.to(tl.int64) * skpm
        kb = load_rows(k_base, offs_n, offs_d, Lk, skn, D)
        vb = load_rows(v_base, offs_n, offs_d, Lk, svn, D)
        dk = tl.zeros([NK, BLOCK_D], tl.float32)
        dv = tl.zeros([NK, BLOCK_D], tl.float32)
        n_qseq = tl.cdiv(Lq, BLOCK_M)
        NG: tl.constexpr = BLOCK_M // RG
        no_thr = tl.zeros([NG], tl.float32)  # unused: the thresholds are per entry
        col0 = pid_n * KPP
        qlist = LISTS + (pid_bhk.to(tl.int64) * n_kblk + pid_n) * n_qblk
        for g_i in range(0, G):
            h = hk * G + g_i
            qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
            bh = (b * H + h).to(tl.int64)
            q_base = Q + row_offset(b, h, qs, sqb, sqh, sqn)
            do_base = DO + row_offset(b, h, qs, sdb, sdh, sdn)
            stat_off = row_offset(b, h, qs, smb, smh, 1)
            # query blocks qb with max over the program's columns c of TMAX[bh, qb·NG + g, c] > TAUMIN[bh, qb·NG + g]
            # for some row group g
            count = tile_list(TMAX + bh * n_qblk * NG * n_kblk + col0, NG * n_kblk, n_kblk, TAUMIN + bh * n_qblk * NG,
                              NG, 1, no_thr, n_qseq, qlist, False, KCHUNK, NG, True, KPP, n_kblk - col0)
            # one flat loop over (query block, chunk) pairs, without a branch around the body, so that Triton's
            # software pipeliner prefetches the next chunk's q, dO, τ, δ (cp.async) while this one computes; a
            # nested chunk loop with a skip test loaded them synchronously (one program per SM: nothing hid the
            # latency). Chunks with no visible entry (rows past Lq: τ = inf; causal chunks above the diagonal:
            # masked) contribute zeros.
            NCH: tl.constexpr = BLOCK_M // QC
            for j in range(0, count * NCH):
                start_c = tl.load(qlist + j // NCH) * BLOCK_M + (j % NCH) * QC
                offs_m = start_c + offs_c
                rmask = offs_m < Lq
                q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
                do = load_rows(do_base, offs_m, offs_d, Lq, sdn, D)
                tau = tl.load(TABS + stat_off + offs_m, mask=rmask, other=float("inf"))
                delta = tl.load(DELTA + stat_off + offs_m, mask=rmask, other=0.0)
                # y = x - τ, masked after (-inf - τ and -inf agree: the mask test no longer sits between the scale
                # and the subtraction, which cost an FMUL and an FADD). RELATIVE: (x - m) - (τ - m), x - m in one
                # fused multiply-add (exact to its own ulps, as in the dq kernel); else one FMA with τ in score units
                if RELATIVE:
                    m = row_max(M, stat_off + offs_m, rmask)
                    yT = (tl.dot(kb, tl.trans(q), input_precision=PREC) * qk_scale - m[None, :]) - tau[None, :]
                else:
                    yT = tl.dot(kb, tl.trans(q), input_precision=PREC) * qk_scale - tau[None, :]
                if needs_mask(start_c, start_n, Lq, Lk, QC, NK, CAUSAL, HAS_KPM):
                    yT = mask_scores_b(yT, offs_m[None, :], offs_n[:, None], Lq, Lk, kpm_row, CAUSAL, HAS_KPM)
                pT = probs_y(yT, inv_a, is_soft, KIND)
                uT = grad_weights_y(pT, yT, inv_a, is_soft, KIND)
                gT = tl.dot(vb, tl.trans(do), input_precision=PREC)
                dzT = uT * (gT - delta[None, :])
                dv += tl.dot(pT.to(do.dtype), do, input_precision=PREC)
                dk += tl.dot(dzT.to(q.dtype), q, input_precision=PREC)
        dk = dk * scale
        kmask = (offs_n[:, None] < Lk) & (offs_d[None, :] < D)
        # DK and DV are allocated alike (strides sgb, sgh, sgn)
        dk_base = DK + row_offset(b, hk, ks, sgb, sgh, sgn)
        dv_base = DV + row_offset(b, hk, ks, sgb, sgh, sgn)
        tl.store(dk_base + offs_n[:, None].to(tl.int64) * sgn + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=kmask)
        tl.store(dv_base + offs_n[:, None].to(tl.int64) * sgn + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kmask)
