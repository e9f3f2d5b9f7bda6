"""Sparse backward: dq per query block, dk/dv per key block. Deterministic, no atomics.

With u = p^(2-α) on the support, g_j = dO·v_j and δ = Σ u g / Σ u (= dO·O2):
dz_j = u_j (g_j - δ), dq = scale Σ_j dz_j k_j, dk_j = scale Σ_i dz_ij q_i,
dv_j = Σ_i p_ij dO_i. Both kernels visit only tiles whose maximum exceeds the
block's τ_min (the forward's tile map). The dk/dv program of a key block loops
over the query heads of its GQA group itself, so no two programs write the
same rows.

With ALPHA_GRAD the dq kernel also accumulates, per row, Σ p ln p, Σ g p ln p,
Σ p ln²p and Σ g p ln²p, from which the host gets dα (entmax.entmax_grad_alpha).
"""

import triton
import triton.language as tl

from .common import causal_hi, grad_weights, head_alpha, load_cols, load_rows, mask_scores, probs, seq_bounds


@triton.jit
def dq_kernel(
    Q, K, V, KPM, CU_Q, CU_K, ALPHA, TAU, TMAX, TAUMIN, DO, DELTA, DQ, ASUMS,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sgb, sgh, sgn, skpm, smb, smh, s_asum,
    H, G, Nq, Nk, n_qblk, n_kblk, scale,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, ALPHA_GRAD: tl.constexpr,
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
        do_base = DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh + qs.to(tl.int64) * sdn
        k_base = K + b.to(tl.int64) * skb + hk.to(tl.int64) * skh + ks.to(tl.int64) * skn
        v_base = V + b.to(tl.int64) * svb + hk.to(tl.int64) * svh + ks.to(tl.int64) * svn
        kpm_row = KPM + b.to(tl.int64) * skpm
        stat_off = b.to(tl.int64) * smb + h.to(tl.int64) * smh + qs.to(tl.int64)
        rmask = offs_m < Lq
        tau = tl.load(TAU + stat_off + offs_m, mask=rmask, other=float("inf"))
        delta = tl.load(DELTA + stat_off + offs_m, mask=rmask, other=0.0)
        thr = tl.load(TAUMIN + pid_bh.to(tl.int64) * n_qblk + pid_m)
        q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
        do = load_rows(do_base, offs_m, offs_d, Lq, sdn, D)
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        if ALPHA_GRAD:
            h1 = tl.zeros([BLOCK_M], tl.float32)
            g1 = tl.zeros([BLOCK_M], tl.float32)
            h2 = tl.zeros([BLOCK_M], tl.float32)
            g2 = tl.zeros([BLOCK_M], tl.float32)
        hi = causal_hi(start_m, Lq, Lk, BLOCK_M, CAUSAL)
        tmax_row = TMAX + (pid_bh.to(tl.int64) * n_qblk + pid_m) * n_kblk
        for start_n in range(0, hi, BLOCK_N):
            tm = tl.load(tmax_row + start_n // BLOCK_N)
            if tm > thr:
                offs_n = start_n + offs_n0
                kT = load_cols(k_base, offs_n, offs_d, Lk, skn, D)
                s = tl.dot(q, kT, input_precision=PREC) * qk_scale
                x = mask_scores(s, offs_m, offs_n, Lq, Lk, kpm_row, CAUSAL, HAS_KPM)
                p = probs(x, tau, inv_a, is_soft, KIND)
                u = grad_weights(p, x, tau, inv_a, is_soft, KIND)
                vT = load_cols(v_base, offs_n, offs_d, Lk, svn, D)
                g = tl.dot(do, vT, input_precision=PREC)
                dz = u * (g - delta[:, None])
                dq += tl.dot(dz.to(kT.dtype), tl.trans(kT), input_precision=PREC)
                if ALPHA_GRAD:
                    lp = tl.where(p > 0, tl.log(tl.where(p > 0, p, 1.0)), 0.0)
                    pl = p * lp
                    pll = pl * lp
                    h1 += tl.sum(pl, 1)
                    g1 += tl.sum(g * pl, 1)
                    h2 += tl.sum(pll, 1)
                    g2 += tl.sum(g * pll, 1)
        dq = dq * scale
        dq_base = DQ + b.to(tl.int64) * sgb + h.to(tl.int64) * sgh + qs.to(tl.int64) * sgn
        tl.store(dq_base + offs_m[:, None].to(tl.int64) * sgn + offs_d[None, :], dq.to(DQ.dtype.element_ty),
                 mask=rmask[:, None] & (offs_d[None, :] < D))
        if ALPHA_GRAD:
            a_ptr = ASUMS + stat_off + offs_m
            tl.store(a_ptr, h1, mask=rmask)
            tl.store(a_ptr + s_asum, g1, mask=rmask)
            tl.store(a_ptr + 2 * s_asum, h2, mask=rmask)
            tl.store(a_ptr + 3 * s_asum, g2, mask=rmask)


@triton.jit
def dkdv_kernel(
    Q, K, V, KPM, CU_Q, CU_K, ALPHA, TAU, TMAX, TAUMIN, DO, DELTA, DK, DV,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sgb, sgh, sgn, skpm, smb, smh,
    Hkv, G, Nq, Nk, n_qblk, n_kblk, scale,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bhk = tl.program_id(1)
    b = pid_bhk // Hkv
    hk = pid_bhk % Hkv
    H = Hkv * G
    qs, Lq, ks, Lk = seq_bounds(b, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    start_n = pid_n * BLOCK_N
    if start_n < Lk:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_m0 = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        k_base = K + b.to(tl.int64) * skb + hk.to(tl.int64) * skh + ks.to(tl.int64) * skn
        v_base = V + b.to(tl.int64) * svb + hk.to(tl.int64) * svh + ks.to(tl.int64) * svn
        kpm_row = KPM + b.to(tl.int64) * skpm
        kT = load_cols(k_base, offs_n, offs_d, Lk, skn, D)
        vT = load_cols(v_base, offs_n, offs_d, Lk, svn, D)
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        n_qseq = tl.cdiv(Lq, BLOCK_M)
        if CAUSAL:
            # rows i >= start_n - (Lk - Lq) can see this key block
            first = tl.maximum(start_n - (Lk - Lq), 0) // BLOCK_M
        else:
            first = 0
        for g_i in range(0, G):
            h = hk * G + g_i
            qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
            bh = b * H + h
            q_base = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh + qs.to(tl.int64) * sqn
            do_base = DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh + qs.to(tl.int64) * sdn
            stat_off = b.to(tl.int64) * smb + h.to(tl.int64) * smh + qs.to(tl.int64)
            for qb in range(first, n_qseq):
                tm = tl.load(TMAX + (bh.to(tl.int64) * n_qblk + qb) * n_kblk + pid_n)
                thr = tl.load(TAUMIN + bh.to(tl.int64) * n_qblk + qb)
                if tm > thr:
                    offs_m = qb * BLOCK_M + offs_m0
                    rmask = offs_m < Lq
                    q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
                    do = load_rows(do_base, offs_m, offs_d, Lq, sdn, D)
                    tau = tl.load(TAU + stat_off + offs_m, mask=rmask, other=float("inf"))
                    delta = tl.load(DELTA + stat_off + offs_m, mask=rmask, other=0.0)
                    s = tl.dot(q, kT, input_precision=PREC) * qk_scale
                    x = mask_scores(s, offs_m, offs_n, Lq, Lk, kpm_row, CAUSAL, HAS_KPM)
                    p = probs(x, tau, inv_a, is_soft, KIND)
                    u = grad_weights(p, x, tau, inv_a, is_soft, KIND)
                    g = tl.dot(do, vT, input_precision=PREC)
                    dz = u * (g - delta[:, None])
                    dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PREC)
                    dk += tl.dot(tl.trans(dz).to(q.dtype), q, input_precision=PREC)
        dk = dk * scale
        kmask = (offs_n[:, None] < Lk) & (offs_d[None, :] < D)
        # DK and DV are allocated alike (strides sgb, sgh, sgn)
        dk_base = DK + b.to(tl.int64) * sgb + hk.to(tl.int64) * sgh + ks.to(tl.int64) * sgn
        dv_base = DV + b.to(tl.int64) * sgb + hk.to(tl.int64) * sgh + ks.to(tl.int64) * sgn
        tl.store(dk_base + offs_n[:, None].to(tl.int64) * sgn + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=kmask)
        tl.store(dv_base + offs_n[:, None].to(tl.int64) * sgn + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kmask)
