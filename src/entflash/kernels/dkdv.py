"""The backward's dk/dv pass, per key tile. Deterministic: no atomics.

dk_j = scale Σ_i dz_ij q_i and dv_j = Σ_i p_ij dO_i (dz as in dq.py, with the δ
the dq kernel stored). The program of a key tile loops over the query heads of
its GQA group itself, so no two programs write the same rows.

Scores: with KernelOptions.dkdv_relative the kernel works relative to the row
maxima, (x - m) - (τ - m), exact to the ulps of x - m, as the dq kernel does.
Without it (the bfloat16 / float16 default) it reads τ in score units (TABS,
written by the dq kernel as fl(τ - m + m)): one per-row value instead of two
(the column-vector layout of its transposed tiles makes each cost registers)
and one FADD per score less, measured +5..12% dk/dv time for the relative form.
But τ in score units is off by up to half an ulp of |τ|, which p = y^(1/(α-1))
turns into a relative error of up to (1/(α-1)) ulp(|τ|) / (2y) in every p of
the row: at scores ~8000 that put 8e-4 into dv, where the float32 reference's
error is ~1e-7. So the relative form is on for float32 inputs, whose tolerance
sees it; bfloat16 / float16 errors stay below their own rounding
(docs/design.md, "Precision").
"""

import triton
import triton.language as tl

from .tiles import (
    dropout_keep, grad_weights_y, head_alpha, load_rows, mask_scores_b, needs_mask, probs_y, program_ids, row_max,
    row_offset, tile_list,
)


@triton.jit
def dkdv_kernel(
    Q, K, V, KPM, AM, CU_Q, CU_K, ALPHA, TABS, M, TMAX, TAUMIN, LISTS, DO, DELTA, DK, DV, SEED,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sgb, sgh, sgn, skpm,
    sam_b, sam_h, sam_q, sam_k, wl, wr, smb, smh,
    Hkv, G, Nq, Nk, n_qblk, n_kblk, scale, drop_thresh, drop_scale, NQd, NKd,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, RG: tl.constexpr, KCHUNK: tl.constexpr, QC: tl.constexpr,
    RELATIVE: tl.constexpr, DROPOUT: tl.constexpr,
):
    """dk, dv of one key tile (BLOCK_N keys) per program, computed transposed (sᵀ = k·qᵀ, keys as rows) so that
    pᵀ and dzᵀ feed the dv and dk dots from registers; the key dimension fills the MMA's rows. A query block is
    visited when the tile map admits it for the program's key tile, in chunks of QC rows (chunks past the causal
    bound contribute zeros). RELATIVE: scores relative to the row maxima M, TABS the forward's τ - m; else TABS is
    τ in score units, written by the dq kernel (module docstring). DROPOUT: dv takes p · keep · drop_scale and dz
    takes g = keep · drop_scale · v·dOᵀ (tiles.dropout_keep)."""
    pid_n = tl.program_id(0)
    pid_bhk = tl.program_id(1)
    b, hk, _, qs, Lq, ks, Lk = program_ids(pid_bhk, Hkv, 1, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    H = Hkv * G
    NK: tl.constexpr = BLOCK_N
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
        no_thr = tl.zeros([NG], tl.float32)  # tile_list's per-group thresholds: not read, they are per entry here
        qlist = LISTS + (pid_bhk.to(tl.int64) * n_kblk + pid_n) * n_qblk
        for g_i in range(0, G):
            h = hk * G + g_i
            qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
            bh = (b * H + h).to(tl.int64)
            am_row = AM + b.to(tl.int64) * sam_b + h.to(tl.int64) * sam_h
            q_base = Q + row_offset(b, h, qs, sqb, sqh, sqn)
            do_base = DO + row_offset(b, h, qs, sdb, sdh, sdn)
            stat_off = row_offset(b, h, qs, smb, smh, 1)
            # query blocks qb with TMAX[bh, qb·NG + g, pid_n] > TAUMIN[bh, qb·NG + g] for some row group g
            count = tile_list(TMAX + bh * n_qblk * NG * n_kblk + pid_n, NG * n_kblk, n_kblk, TAUMIN + bh * n_qblk * NG,
                              NG, 1, no_thr, n_qseq, qlist, False, KCHUNK, NG, True)
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
                if needs_mask(start_c, start_n, Lq, Lk, wl, wr, QC, NK, CAUSAL, HAS_KPM, HAS_MASK, WINDOW):
                    yT = mask_scores_b(yT, offs_m[None, :], offs_n[:, None], Lq, Lk, kpm_row, am_row, sam_q, sam_k, wl,
                                       wr, CAUSAL, HAS_KPM, HAS_MASK, WINDOW)
                pT = probs_y(yT, inv_a, is_soft, KIND)
                uT = grad_weights_y(pT, yT, inv_a, is_soft, KIND)
                gT = tl.dot(vb, tl.trans(do), input_precision=PREC)
                if DROPOUT:
                    keep = dropout_keep(SEED, bh, offs_m[None, :], offs_n[:, None], NQd, NKd, drop_thresh)
                    gT = tl.where(keep, gT * drop_scale, 0.0)
                    pT = tl.where(keep, pT * drop_scale, 0.0)  # after u: u comes from the undropped p
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
